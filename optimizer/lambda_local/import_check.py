"""The handler of a proof run: the package's own handler, and after each invocation a check
that no module came from anywhere but the package, the runtime client or the standard
library, so a slimming rule that removed something, or a dependency missing from the
package, fails the proof instead of working here by borrowing from this machine.

Copied beside the package as `optimizer_import_check.py`; it imports only the standard
library. Importing it as part of optimizer does nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import sysconfig
from collections.abc import Callable
from typing import Any

MODULE = "optimizer_import_check"


def _roots() -> list[str]:
    paths = sysconfig.get_paths()
    return [*json.loads(os.environ["OPTIMIZER_PROOF_ROOTS"]), os.path.dirname(__file__),
            paths["stdlib"], paths["platstdlib"]]


def _load() -> Callable[[Any, Any], Any]:
    module, _, name = os.environ["OPTIMIZER_PROOF_HANDLER"].rpartition(".")
    handler = getattr(importlib.import_module(module), name)
    print("OPTIMIZER_PROOF " + json.dumps({"python": sys.version.split()[0]}), flush=True)
    return handler


def foreign(roots: list[str]) -> list[str]:
    return sorted({m.__file__ for m in list(sys.modules.values())
                   if getattr(m, "__file__", None)
                   and not any(m.__file__.startswith(r) for r in roots)})


def handle(event: Any, context: Any) -> Any:
    out = _HANDLER(event, context)
    if found := foreign(_ROOTS):
        raise ImportError("the packaged handler imported modules from outside the package: "
                          + ", ".join(found[:5]))
    return out


if __name__ == MODULE:  # the function's init, as the runtime client imports it
    _ROOTS, _HANDLER = _roots(), _load()
