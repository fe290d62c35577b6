"""Progress on stderr (rich), so stdout stays free for `--json`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        self.events: list[dict] = []

    def log(self, message: str) -> None:
        self.events.append({"t": round(time.time(), 3), "message": message})
        self.console.print(message, highlight=False)

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator:
        """Yields advance(n=1, note=None); the bar disappears when the work ends."""
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[note]}"),
                   TimeElapsedColumn()]
        with RichProgress(*columns, console=self.console, transient=True) as bar:
            tid = bar.add_task(description, total=total, note="")

            def advance(n: float = 1, note: str | None = None) -> None:
                bar.update(tid, advance=n, note=note or "")

            yield advance

    def keras_callback(self, description: str, epochs: int):
        import keras

        progress = self

        class _EpochProgress(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self._cm = progress.task(description, total=epochs)
                self._advance = self._cm.__enter__()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                note = " ".join(f"{k}={v:.4f}" for k, v in logs.items()
                                if k in ("loss", "accuracy", "val_accuracy"))
                self._advance(1, f"epoch {epoch + 1}/{epochs} {note}")
                progress.events.append({"t": round(time.time(), 3),
                                        "message": f"{description} epoch {epoch + 1}: {note}"})

            def on_train_end(self, logs=None):
                self._cm.__exit__(None, None, None)

        return _EpochProgress()
