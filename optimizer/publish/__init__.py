"""The output folder, written all at once, and the manifest that lets a later job verify it."""
