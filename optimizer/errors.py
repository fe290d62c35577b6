"""Errors the CLI turns into one line and an exit code, never a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_BAD_INPUT = 2


class OptimizerError(Exception):
    exit_code = EXIT_BAD_INPUT


class BadInput(OptimizerError):
    """The user's recipe, model or data is wrong; the message says what and where."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(BadInput):
    def __init__(self, file: str, line: int | None, path: str, message: str) -> None:
        self.file, self.line, self.path, self.message = file, line, path, message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class StepFailed(BadInput):
    """A step could not transform this model (unsupported op, parity check failed...)."""

    def __init__(self, step: str, message: str) -> None:
        self.step = step
        super().__init__(f"step '{step}': {message}")


class GateFailed(OptimizerError):
    """Artifacts were built but none passed validation; the report still gets written."""

    exit_code = EXIT_GATE


class PackageFailed(StepFailed):
    """A package could not be assembled or proved (no wheel, wrong glibc, handler failed)."""

    def __init__(self, message: str) -> None:
        super().__init__("package", message)


class PackageTooLarge(GateFailed):
    """A package was assembled but does not fit Lambda's limits."""
