"""Deployable packages: Lambda zips with layers, container images, and size checks."""
