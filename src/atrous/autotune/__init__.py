"""Tuning machinery: config spaces, search strategies, the timing protocol, hardware
fingerprints, the tuning database and the call-time lookup.

``atrous tune`` drives :mod:`atrous.jobs.tune`; every op call consults
:mod:`atrous.autotune.lookup`.
"""
