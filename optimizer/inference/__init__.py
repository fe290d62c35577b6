"""Running a model with any inference engine (ONNX Runtime, LiteRT, OpenVINO, TensorFlow).

Shared by the steps (parity checks, calibration), the measurements and the packager; the
function itself loads models with `handler.engines`, which this builds on.
"""
