"""Which inference engine to ship, per target: measured latency, package size, ISA cap.

Every artifact is paired with each engine the recipe lists that runs its format (ONNX
Runtime or OpenVINO for ONNX, LiteRT for TFLite, TensorFlow builds for Keras). Per target
the package size comes from resolving that engine's wheels for the target's platform and
Python; the latency is this host's where the host has the target's ISA (timed with the
cap the engine allows), and qemu emulating the target's CPU where it does not. qemu's
translation is no cycle model, so emulated times rank code paths by the work they do, not
by Graviton's speed; the report says so. The winner is the fastest pairing that passed the
gates and fits the recipe's package type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimizer import hostinfo, targets, wheels
from optimizer.errors import PackageFailed
from optimizer.package import layers as layers_split

# timing under qemu needs the target's Python from Debian, which has no 3.12; the recipe's
# own version is used for sizes whatever it is
EMULATION_PYTHON = "3.13"


@dataclass(frozen=True)
class Pair:
    """An artifact run by one engine; `key` names it in measurements."""

    artifact: str
    engine: str
    default: bool

    @property
    def key(self) -> str:
        return self.artifact if self.default else f"{self.artifact} [{self.engine}]"


def installed(engine: str) -> str | None:
    """The engine's version in this environment, or None: what is not here is not timed."""
    return wheels.installed_version(targets.ENGINES[engine].requirements[0])


def pairs(kinds: dict[str, str], candidates: list[str]) -> list[Pair]:
    """{artifact: model kind} -> every (artifact, engine) the candidates can run."""
    out = []
    for name, kind in kinds.items():
        for e in candidates:
            engine = targets.ENGINES[e]
            if kind in engine.formats:
                out.append(Pair(name, e, kind in engine.default_for))
    return out


def native(target: str) -> bool:
    """This host can time the target: same architecture and every flag the target uses."""
    vs = hostinfo.versus_target(target)
    return vs["same_arch"] and not vs["target_flags_missing_on_host"]


def fits(size: int, layers: int | None, unzipped: dict[str, int], zipped: dict[str, int],
         function_zipped: int) -> str:
    """"" when it fits, else why. `layers` None: a container image. Distributions go to
    layers as package.layers splits them (largest unpacked first, to the smallest layer),
    so the zipped check matches what the zip writer will make."""
    lim = targets.LIMITS
    if layers is None:
        return "" if size <= lim.image_bytes else f"{size:,} B is over an image's 10 GiB"
    if size > lim.unzipped_bytes:
        return (f"{size / 2**20:,.1f} MiB unzipped is over Lambda's "
                f"{lim.unzipped_bytes / 2**20:,.0f} MiB for a function and its layers")
    packed = [sum(zipped.get(d, 0) for d in group)
              for group in layers_split.assign(unzipped, max(1, layers))] or [0]
    if layers == 0:
        packed[0] += function_zipped
    worst = max(packed)
    if worst > lim.zip_upload_bytes:
        biggest = max(zipped, key=lambda d: zipped[d])
        return (f"a {'function' if layers == 0 else 'layer'} zip would be "
                f"{worst / 2**20:,.1f} MiB zipped, over the {lim.zip_upload_bytes / 2**20:.0f}"
                f" MiB upload limit with {layers} layer(s) ({biggest} alone is "
                f"{zipped[biggest] / 2**20:,.1f} MiB zipped)")
    return ""


def choose(rows: list[dict[str, Any]], prefer: str) -> dict[str, Any] | None:
    """The fastest (or smallest package) row that passed, fits and was timed."""
    ok = [r for r in rows if r.get("passed") and r.get("fits") and r.get("p50_ms") is not None]

    def cost(r: dict) -> tuple:
        return ((r["package_bytes"], r["p50_ms"], r["key"]) if prefer == "size"
                else (r["p50_ms"], r["package_bytes"], r["key"]))
    return min(ok, key=cost, default=None)


def best_per_engine(rows: list[dict[str, Any]], prefer: str) -> list[dict[str, Any]]:
    """One row per engine for the report: its winner, or its closest row and why not.
    Rows are report.json's, where the engine's key is `runtime`."""
    out = []
    for rt in dict.fromkeys(r["runtime"] for r in rows):
        mine = [r for r in rows if r["runtime"] == rt]
        best = choose(mine, prefer)
        if best is None:  # say why: the first reason in order unavailable, gates, fit, time
            best = sorted(mine, key=lambda r: (not r.get("available", False),
                                               not r.get("passed"), not r.get("fits"),
                                               r.get("p50_ms") or 1e18,
                                               r.get("host_p50_ms") or 1e18))[0]
        out.append(best)
    return out


def why_not(row: dict[str, Any]) -> str:
    if not row.get("available"):
        return row.get("reason", "unavailable")
    if not row.get("passed"):
        return "failed the gates: " + ", ".join(row.get("failed_gates", []))
    if not row.get("fits"):
        return row.get("fit_note", "does not fit")
    if row.get("p50_ms") is None:
        return row.get("latency_note", "not timed")
    return ""


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    if isinstance(exc, PackageFailed) and "\n" in text:  # pip's last line says the most
        return "pip: " + text.splitlines()[-1].strip()
    return text.splitlines()[0] if text else type(exc).__name__
