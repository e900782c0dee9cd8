"""Offline calibration: the tables.json artifact device and edge share (paper III-B)."""
