"""The function code shipped inside every package.

It imports only numpy, Pillow and the model's inference engine (ONNX Runtime, LiteRT,
OpenVINO or TensorFlow), never the rest of `optimizer`, so the package stays small and the
build tool's own dependencies cannot leak into the function. Relative imports let it run as
`optimizer.handler` in the build and as the top-level `handler` package on Lambda.
"""
