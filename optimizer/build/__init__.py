"""The engine: a linear run over the stages, the counted cache, and where work runs."""
