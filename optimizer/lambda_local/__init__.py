"""Running packages as Lambda would, on this machine."""
