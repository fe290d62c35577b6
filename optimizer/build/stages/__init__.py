"""The build's stages in the data's order: source, steps, measure, select, package, report.

Each takes the values the one before it made and returns its own; the cache (through the
ledger) and where work runs (through the workers) come in as collaborators.
"""
