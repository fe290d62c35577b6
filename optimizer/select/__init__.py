"""Deciding from measurements: gates per artifact, the ship, and the engine per target."""
