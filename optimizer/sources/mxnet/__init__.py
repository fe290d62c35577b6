"""MXNet in, ONNX out: an isolated environment, a worker script, and MMS archive handling."""
