"""``python -m atrous.cli``: the command line (see :mod:`atrous.cli`)."""

import sys

from atrous.cli import main

sys.exit(main())
