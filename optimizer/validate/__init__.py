"""Measuring artifacts: accuracy against labels and the source, latency, size, load time."""
