"""Errors the CLI turns into one line and an exit code, never a traceback."""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE = 1
EXIT_BAD_INPUT = 2


class OptimizerError(Exception):
    exit_code = EXIT_BAD_INPUT

    @property
    def lines(self) -> list[str]:
        """What the CLI prints, a line each (with `error: ` before it)."""
        return [str(self)]


class BadInput(OptimizerError):
    """The user's recipe, model or data is wrong; the message says what and where."""

    exit_code = EXIT_BAD_INPUT


class RecipeError(BadInput):
    """One line per problem, `FILE:LINE: key.path: message`; `also` holds the others found
    in the same pass, so a user fixes them all at once."""

    def __init__(self, file: str, line: int | None, path: str, message: str,
                 also: list[RecipeError] | None = None) -> None:
        self.file, self.line, self.path, self.message = file, line, path, message
        self.also = also or []
        where = f"{file}:{line}" if line else file
        self.first = f"{where}: {path}: {message}" if path else f"{where}: {message}"
        super().__init__("\n".join([self.first, *(e.first for e in self.also)]))

    @property
    def lines(self) -> list[str]:
        return [self.first, *(e.first for e in self.also)]


class StepFailed(BadInput):
    """A step could not transform this model (unsupported op, parity check failed...)."""

    def __init__(self, step: str, message: str) -> None:
        self.step, self.detail = step, message
        super().__init__(f"step '{step}': {message}")


class GateFailed(OptimizerError):
    """Artifacts were built but none passed validation; the report still gets written."""

    exit_code = EXIT_GATE


class SourceRejected(OptimizerError):
    """The source model fails on its own data (near chance, under a floor, classes out of
    order): nothing is built from it, and the message says what to change."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, record: dict) -> None:
        super().__init__(message)
        self.record = record


class PackageFailed(StepFailed):
    """A package could not be assembled or proved (no wheel, wrong glibc, handler failed)."""

    def __init__(self, message: str) -> None:
        super().__init__("package", message)


class PackageTooLarge(GateFailed):
    """A package was assembled but does not fit Lambda's limits."""
