"""Reading the Dockerfile templates in dockerfiles/, for the daemonless image writer.

Only the instructions the templates use are understood (ARG, FROM, ENV, COPY, WORKDIR,
ENTRYPOINT, CMD); anything else, RUN above all, needs a real builder and is refused.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from optimizer.errors import BadInput

DOCKERFILES = Path(__file__).resolve().parents[2] / "dockerfiles"


@dataclass
class Template:
    path: Path
    args: dict[str, str] = field(default_factory=dict)
    base: str = ""
    env: list[tuple[str, str]] = field(default_factory=list)
    copies: list[tuple[str, str]] = field(default_factory=list)
    workdir: str | None = None
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None


def template_path(name: str) -> Path:
    path = DOCKERFILES / f"{name}.Dockerfile"
    if not path.is_file():
        raise BadInput(f"{path}: no such Dockerfile template")
    return path


def _subst(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], ""), text)


def _exec_form(text: str, where: str) -> list[str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise BadInput(f"{where}: use the JSON (exec) form") from None
    return [str(v) for v in value]


def parse(path: Path, build_args: dict[str, str]) -> Template:
    t = Template(path)
    for n, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest, where = word.upper(), rest.strip(), f"{path}:{n}"
        if word == "ARG":
            name, _, default = rest.partition("=")
            t.args[name] = build_args.get(name, default)
        elif word == "FROM":
            t.base = _subst(rest, t.args)
        elif word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                t.env.append((key, _subst(value, dict(t.args) | dict(t.env))))
        elif word == "COPY":
            src, dest = rest.split()
            t.copies.append((src.rstrip("/"), _subst(dest, dict(t.env))))
        elif word == "WORKDIR":
            t.workdir = rest
        elif word == "ENTRYPOINT":
            t.entrypoint, t.cmd = _exec_form(rest, where), None  # as Docker: resets CMD
        elif word == "CMD":
            t.cmd = _exec_form(rest, where)
        else:
            raise BadInput(f"{where}: {word} needs a real image builder; the daemonless "
                           "writer understands ARG FROM ENV COPY WORKDIR ENTRYPOINT CMD")
    if not t.base:
        raise BadInput(f"{path}: no FROM line")
    return t
