"""Native libraries' start-up lines, kept out of the build log.

Importing TensorFlow writes absl and oneDNN notices straight to file descriptor 2 ("All log
messages before absl::InitializeLog() ...", "oneDNN custom operations are on ...") before
any of its logging settings apply, and LiteRT prints "Created TensorFlow Lite XNNPACK
delegate" for every interpreter. The only way to keep them off a user's console is to point
descriptor 2 elsewhere while that code runs. What was written is replayed if it fails, so a
broken installation still says why.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def native_stderr_captured() -> Iterator[None]:
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): leave it
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def import_tensorflow() -> None:
    """Import tensorflow and keras quietly; their Python loggers to errors only (tf2onnx
    calls deprecated freezing APIs that warn on every export)."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_stderr_captured():
        import keras  # noqa: F401
        import tensorflow as tf
    tf.get_logger().setLevel(logging.ERROR)
