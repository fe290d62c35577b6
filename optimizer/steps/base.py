"""What every step config shares, and what a step gets to work with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from optimizer.data.dataset import Dataset
    from optimizer.progress import Progress

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class StepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="artifact name; defaults to the step kind",
    )
    input: str | None = Field(
        default=None, description="name of an earlier step (or 'source'); defaults to the previous"
    )

    def input_files(self) -> list[Path]:
        """Files the config points at, whose contents enter the cache key."""
        return []

    def variants(self) -> list[tuple[str, StepConfig]]:
        """(label, config) per artifact this step makes from one input; "" when only one."""
        return [("", self)]


def in_process(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    """StepContext.offload where there is no cluster: the work runs right here."""
    return fn(*args)


@dataclass
class StepContext:
    """Everything a step may read; it writes only under `out_dir` (and `checkpoints`)."""

    out_dir: Path
    target: str  # the recipe's target name (steps tune some choices per ISA)
    dataset: Dataset
    progress: Progress
    # survives a crash of this step, so a rerun resumes; removed once the step's entry lands
    checkpoints: Path
    # cached(key parts, label, produce(folder)) -> folder: shared intermediate results
    cached: Callable[[dict[str, Any], str, Callable[[Path], None]], Path]
    # offload(what, fn, *args) -> fn(*args), here or on a Ray worker: heavy pure work
    offload: Callable[..., Any] = in_process
    # called with the checkpoint folder after each epoch's checkpoint is complete
    on_checkpoint: Callable[[Path], None] | None = None
