"""What slimming removes, as data: (glob relative to the dependency root, reason).

Every rule is proved on each build: after slimming, the handler is imported and run on a
sample event in a Python of the runtime's version, so a rule that breaks an import fails
the build instead of the deployment. A shared library that a kept library needs
(DT_NEEDED) is never removed, whatever the rules say.
"""

from __future__ import annotations

# Vendored libraries (auditwheel's `*.libs` folders) are loaded only through DT_NEEDED, so
# one that no kept ELF file needs after the rules ran is removed too (see slim.orphans).

RULES: tuple[tuple[str, str], ...] = (
    ("**/__pycache__", "bytecode caches; Lambda writes none to a read-only /var/task"),
    ("**/*.pyc", "bytecode caches"),
    ("**/tests", "test suites are never imported at run time"),
    ("**/testing/_private", "test helpers"),
    ("**/*.pyi", "type stubs"),
    ("**/py.typed", "type-checker marker"),
    ("**/*.h", "C headers"),
    ("**/*.c", "C sources"),
    ("**/*.pxd", "Cython declarations"),
    ("**/*.pyx", "Cython sources"),
    ("numpy/_core/include", "numpy C headers"),
    ("numpy/f2py", "Fortran wrapper generator; lazily imported, unused at inference"),
    ("numpy/_pyinstaller", "PyInstaller hooks"),
    ("bin", "console scripts"),
    ("onnxruntime/capi/libonnxruntime.so*", "C API library; the Python module does not load it"),
    ("onnxruntime/transformers", "model-optimisation tools, not inference"),
    ("onnxruntime/quantization", "quantization tools, not inference"),
    ("onnxruntime/tools", "conversion tools, not inference"),
    ("onnxruntime/datasets", "sample models"),
    ("tensorflow/include", "TensorFlow C++ headers"),
    ("tensorflow/**/*_test.py", "test files"),
    ("numpy/_core/_simd.*", "numpy's SIMD test module; imported by its tests only"),
    # loaded by `import numpy` only on first use (numpy.__getattr__); the handler uses none
    ("numpy/random", "random generators; lazily imported, unused at inference"),
    ("numpy/fft", "FFTs; lazily imported, unused at inference"),
    ("numpy/polynomial", "polynomials; lazily imported, unused at inference"),
    # Pillow: the handler decodes and resizes; it draws no text and applies no ICC profile
    ("PIL/_avif.*", "AVIF codec (libavif); phones send JPEG, PNG, WebP or HEIC, not AVIF"),
    ("PIL/AvifImagePlugin.py", "AVIF plugin; Image.open skips a plugin that cannot import"),
    ("PIL/_imagingft.*", "font rendering (FreeType, HarfBuzz); the handler draws no text"),
    ("PIL/_imagingcms.*", "colour management (LittleCMS); decode converts modes without ICC"),
    ("PIL/_imagingtk.*", "Tk bridge"),
)

# Per inference runtime: what its wheels carry that the packaged handler never loads.
ENGINE_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "litert": (
        ("ai_edge_litert/libLiteRtWebGpuAccelerator.so", "GPU accelerator; Lambda has no GPU"),
        ("ai_edge_litert/libLiteRt.so", "the CompiledModel API's runtime; the Interpreter "
         "the handler uses lives in libpywrap_litert_common.so"),
        ("ai_edge_litert/tools", "model tools (apply_plugin_main, benchmarks)"),
        ("ai_edge_litert/vendors", "NPU compiler plugins; Lambda has no NPU"),
        ("ai_edge_litert/aot", "ahead-of-time compilation for NPUs"),
        # declared by ai-edge-litert, never imported by ai_edge_litert.interpreter
        ("ml_dtypes", "extra dtypes for the converter; the Interpreter does not import it"),
        ("ml_dtypes-*.dist-info", "its metadata"),
        ("tqdm", "progress bars for the AOT tools"),
        ("tqdm-*.dist-info", "its metadata"),
        ("google/protobuf", "protobuf, for the CompiledModel options; not the Interpreter"),
        ("protobuf-*.dist-info", "its metadata"),
        ("flatbuffers", "flatbuffers, for the schema tools; not the Interpreter"),
        ("flatbuffers-*.dist-info", "its metadata"),
        ("backports", "backports.strenum for the AOT tools"),
        ("backports_strenum-*.dist-info", "its metadata"),
        ("typing_extensions.py", "typing backports; nothing imported at inference needs it"),
        ("typing_extensions-*.dist-info", "its metadata"),
    ),
    "onnxruntime": (
        ("google/protobuf", "protobuf: only onnxruntime.backend (not InferenceSession) needs "
         "onnx's protos"),
        ("protobuf-*.dist-info", "its metadata"),
        ("flatbuffers", "flatbuffers, for ORT-format tools; not InferenceSession"),
        ("flatbuffers-*.dist-info", "its metadata"),
        ("onnxruntime/backend", "the ONNX backend-test API; not InferenceSession"),
        ("packaging", "version parsing, imported only by onnxruntime.backend"),
        ("packaging-*.dist-info", "its metadata"),
    ),
}
