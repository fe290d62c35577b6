"""What slimming removes, as data: (glob relative to the dependency root, reason).

Every rule is proved on each build: after slimming, the handler is imported and run on a
sample event in a Python of the runtime's version, so a rule that breaks an import fails
the build instead of the deployment. A shared library that a kept library needs
(DT_NEEDED) is never removed, whatever the rules say.
"""

from __future__ import annotations

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
)
