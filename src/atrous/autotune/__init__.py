"""Tuning machinery: config spaces (and, later, search, timing, hardware and the database)."""
