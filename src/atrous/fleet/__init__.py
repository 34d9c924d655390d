"""Tune (and benchmark) a fleet of machines on Ray: `atrous tune --cluster ADDRESS`.

- ``cluster``: connecting to Ray, one worker per CPU node or per GPU, pinned to its node;
- ``queue``: workers grouped by fingerprint, work handed out, lost workers' items re-queued;
- ``driver``: the dispatch loop and the only writer of the tuning database;
- ``results``: workers' answers checked as data, then stored;
- ``local``: the one adapter to atrous's tuning and benchmarking (what a worker runs);
- ``progress``: bars per machine type and the final tables.

The commands (`atrous tune --cluster`, `atrous bench --cluster`, `atrous report --fleet`)
are in ``atrous.cli.fleet``.

Ray is optional: ``pip install 'atrous[cluster]'``. Importing this package does not import it.
"""

from __future__ import annotations

from atrous.fleet.cluster import INSTALL_HINT, ClusterError, require_ray

__all__ = ["INSTALL_HINT", "ClusterError", "require_ray"]
