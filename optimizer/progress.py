"""Progress on stderr (rich), so stdout stays free for `--json`."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

# the one markup a log line may carry: a coloured word at its start ("[cyan]run[/] ...")
_TAG = re.compile(r"^\[(?:cyan|green|yellow|red|bold)\][^\[\]]*\[/\]")


def safe(message: str) -> str:
    """Everything after the leading tag escaped: names like `int8 [openvino]` or a user's
    file path are text, not style tags that rich would swallow."""
    m = _TAG.match(message)
    head = m.group(0) if m else ""
    return head + escape(message[len(head):])


class Progress:
    def __init__(self, quiet: bool = False) -> None:
        self.console = Console(stderr=True, quiet=quiet)
        if not self.console.is_terminal:  # logs and CI: 80 columns would truncate the tables
            self.console.width = max(self.console.width, 160)
        self.events: list[dict] = []

    def log(self, message: str) -> None:
        self.events.append({"t": round(time.time(), 3), "message": message})
        self.console.print(safe(message), highlight=False)

    def step_log(self, message: str) -> None:
        """A line per unit of long work: kept in the events, printed where no bar is drawn."""
        self.events.append({"t": round(time.time(), 3), "message": message})
        if not self.console.is_terminal:
            self.console.print(safe(message), highlight=False)

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
