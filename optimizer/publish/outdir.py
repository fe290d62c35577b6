"""Publishing a build's output folder all at once.

Everything is written to a sibling temporary folder and swapped in under a lock, so readers
see the old complete output or the new complete output, never a mix, and a killed build
leaves the previous output untouched.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from optimizer.artifact import Artifact
from optimizer.cache import pid_alive
from optimizer.errors import BadInput
from optimizer.publish import manifest


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _copy_model(art: Artifact, dest: Path) -> None:
    if art.model.path.is_dir():
        shutil.copytree(art.model.path, dest)
    else:
        shutil.copy2(art.model.path, dest)


def check_replaceable(out: Path) -> None:
    """Only an earlier build's output (or an empty folder) may be replaced as a whole."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BadInput(f"{out}: output path exists and is not a folder")
    if any(out.iterdir()) and not (out / "report.json").is_file():
        raise BadInput(f"{out}: output folder is not empty and holds no report.json from an "
                       "earlier build; refusing to replace it")


def _ort_suffix(f: Path) -> str:
    return ".ort" if f.suffix == ".ort" else f".{f.name}"


def sweep_staging(out: Path) -> None:
    """Staging and swap folders of builds killed before they could clean up.

    A build killed between its two renames leaves the previous output only as `.old-<pid>`:
    that is put back, so a kill never loses a published build. Staging folders go.
    """
    orphans = {"tmp": [], "old": []}
    for p in sorted(out.parent.glob(f".{out.name}.*")):
        parts = p.name[len(out.name) + 2:].split("-")  # tmp-<pid>-<random>, old-<pid>
        if (len(parts) >= 2 and parts[0] in orphans and parts[1].isdigit()
                and not pid_alive(int(parts[1]))):
            orphans[parts[0]].append(p)
    for old in orphans["old"]:
        if not out.exists():
            os.rename(old, out)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in orphans["tmp"]:
        shutil.rmtree(tmp, ignore_errors=True)


def recover(out: Path) -> None:
    """sweep_staging under the output's lock, so a build still publishing is not disturbed."""
    out = out.absolute()
    if not any(out.parent.glob(f".{out.name}.tmp-*")) and not any(
            out.parent.glob(f".{out.name}.old-*")):
        return  # the common case writes nothing, not even the lock file
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sweep_staging(out)


def publish(out: Path, artifacts: list[Artifact], report: dict, rendered: dict[str, str],
            package_files: list[Path] = ()) -> None:
    """Models, .ort files, packages, the shipped model's contract, the report and what was
    rendered from it (`rendered`: file name -> text), and last the manifest over all of
    them, swapped in for the previous output at once."""
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide the output from other users
    try:
        for art in artifacts:
            if art.published:
                _copy_model(art, tmp / art.file_name)
            for f in art.ort_files:  # int8.ort, int8.required_operators.config
                shutil.copyfile(f, tmp / f"{Path(art.file_name).stem}{_ort_suffix(f)}")
        if package_files:
            (tmp / "package").mkdir()
            for f in package_files:
                shutil.copyfile(f, tmp / "package" / f.name)
        # the contract of what ships (a student has its own input size)
        shipped = next((a for a in artifacts if a.name == report.get("ship")), artifacts[0])
        _write_json(tmp / "preprocess.json", shipped.model.preprocess.model_dump(mode="json"))
        _write_json(tmp / "labels.json", shipped.model.classes)
        _write_json(tmp / "report.json", report)
        for name, text in rendered.items():
            (tmp / name).write_text(text)
        manifest.write(tmp, report)  # last: it covers every file above
        with open(out.parent / f".{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sweep_staging(out)
            check_replaceable(out)
            old = None
            if out.exists():
                old = out.parent / f".{out.name}.old-{os.getpid()}"
                os.rename(out, old)
            os.rename(tmp, out)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
