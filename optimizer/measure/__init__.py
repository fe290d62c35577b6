"""Measurements of artifacts: accuracy, agreement, latency, load time, the source check.

They only measure: what passes and what ships is decided in `select`.
"""
