"""Recipes: what to build, as a static pydantic tree loaded from YAML with file:line errors."""
