"""Path fields that resolve against the recipe's folder and must exist when it is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, ValidationInfo


def _resolve(value: Path, info: ValidationInfo, must: str) -> Path:
    """Relative paths are relative to the recipe file; the file must exist now, not mid-build."""
    base = (info.context or {}).get("base")
    path = value if value.is_absolute() or base is None else Path(base) / value
    if must == "file" and not path.is_file():
        raise ValueError(f"file not found: {path}")
    if must == "dir" and not path.is_dir():
        raise ValueError(f"folder not found: {path}")
    if must == "any" and not path.exists():
        raise ValueError(f"file or folder not found: {path}")
    return path


ExistingFile = Annotated[Path, AfterValidator(lambda v, info: _resolve(v, info, "file"))]
ExistingDir = Annotated[Path, AfterValidator(lambda v, info: _resolve(v, info, "dir"))]
ExistingPath = Annotated[Path, AfterValidator(lambda v, info: _resolve(v, info, "any"))]
