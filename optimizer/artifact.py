"""The records the stages hand on: artifacts, what was measured about them, gate results.

A leaf: nothing of the stages is imported here, so every stage, the gates and the report
read the same typed fields. `report()` gives each record's part of report.json, whose keys
are a published contract (keys are only ever added).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from optimizer.model import ModelRef

STUDENT_STEPS = ("swap", "distill")  # steps that train a new network
FILE_SUFFIX = {"onnx": ".onnx", "keras": ".keras", "savedmodel": "", "tflite": ".tflite"}


@dataclass(frozen=True)
class Accuracy:
    """Top-1 on the test split (None without labels), and the answers themselves."""

    samples: int
    accuracy: float | None
    finite: bool
    top1: tuple[int, ...] = field(default=(), repr=False)  # not in report.json

    @classmethod
    def of(cls, doc: dict[str, Any]) -> Accuracy:
        return cls(doc["samples"], doc["accuracy"], doc["finite"], tuple(doc["top1"]))

    def report(self) -> dict[str, Any]:
        return {"samples": self.samples, "accuracy": self.accuracy, "finite": self.finite}


@dataclass(frozen=True)
class Agreement:
    """Against the source's answers on the same images: top-1 agreement (%), the mean KL
    divergence of the probabilities (nats) and the largest change of any probability."""

    agreement: float
    mean_kl: float
    max_prob_diff: float


@dataclass(frozen=True)
class PerClass:
    """Accuracy per true class, or (no labels) agreement per class the source answered."""

    basis: str
    n: tuple[int, ...]
    score: tuple[float | None, ...]

    @property
    def by_agreement(self) -> bool:
        return self.basis.startswith("agreement")


@dataclass(frozen=True)
class ClassDrop:
    max_class_drop: float
    worst_class: str | None


@dataclass(frozen=True)
class Latency:
    """Batch-1 timing in one process, alternating rounds with every other model."""

    load_ms: float
    first_ms: float
    threads: int
    warmup: int
    rounds: int
    runs: int
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    process_peak_rss_mb: float
    isa_cap: str = ""  # how (or whether) the timing was held to the target's ISA


@dataclass(frozen=True)
class OrtFormat:
    """The .ort file beside an ONNX artifact and how long each file takes to load."""

    bytes: int
    operators: int
    optimization: str
    load_ms_onnx: float
    load_ms_ort: float


@dataclass(frozen=True)
class Measured:
    """What one way of running an artifact measured: its own engine, or a second one."""

    accuracy: Accuracy | None = None
    agreement: Agreement | None = None
    per_class: PerClass | None = None
    class_drop: ClassDrop | None = None
    latency: Latency | None = None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.accuracy is not None:
            out.update(self.accuracy.report())
        for part in (self.agreement, self.class_drop):
            if part is not None:
                out.update(asdict(part))
        if self.latency is not None:
            out["latency"] = asdict(self.latency)
        return out


@dataclass(frozen=True)
class Gate:
    """One gate's verdict on one artifact; `by` is how far the value is from the limit."""

    gate: str
    value: float
    limit: float
    unit: str
    passed: bool
    by: float
    why: str | None = None  # for gates that are not a number against a limit

    def report(self) -> dict[str, Any]:
        out = asdict(self)
        if self.why is None:
            del out["why"]
        return out


@dataclass(frozen=True)
class Artifact:
    """A model the build made (or the source), where it came from, and what it measured."""

    name: str
    step: str
    model: ModelRef
    cached: bool
    seconds: float
    parent: str | None = None  # the artifact this one was made from
    variant: str = ""  # the candidate (student) it descends from, if the recipe lists several
    step_name: str = "source"  # the recipe step that made it
    measured: Measured = field(default_factory=Measured)  # with the model kind's own engine
    engines: dict[str, Measured] = field(default_factory=dict)  # with the recipe's others
    ort: OrtFormat | None = None
    ort_files: tuple[Path, ...] = ()  # .ort model and its operator config, for ONNX ones
    size_bytes: int = 0
    gates: tuple[Gate, ...] = ()

    @property
    def candidate(self) -> bool:
        """Deployable without TensorFlow: what the build ships unless told otherwise."""
        return self.model.kind in ("onnx", "tflite")

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    @property
    def file_name(self) -> str:
        """Its name in the output folder."""
        return f"{self.name}{FILE_SUFFIX[self.model.kind]}"

    @property
    def published(self) -> bool:
        """Copied into the output folder: what can ship, and the networks the tool trained
        (a user's own Keras or SavedModel source stays where it is)."""
        return self.candidate or self.step in ("architecture", *STUDENT_STEPS)

    @property
    def accuracy(self) -> float | None:
        return None if self.measured.accuracy is None else self.measured.accuracy.accuracy

    @property
    def p50_ms(self) -> float:
        assert self.measured.latency is not None, f"{self.name} was not timed"
        return self.measured.latency.p50_ms

    def run_by(self, engine: str | None) -> Artifact:
        """This artifact as `engine` ran it: that engine's measurements in place of its own
        (the file and its size stay), so the same gates judge every pairing."""
        if engine is None:
            return self
        return replace(self, measured=self.engines[engine], engines={})

    def validation(self) -> dict[str, Any]:
        """report.json's `validation` of this artifact."""
        out = self.measured.report()
        if self.ort is not None:
            out["ort_format"] = asdict(self.ort)
        out["size_bytes"] = self.size_bytes
        if self.engines:
            out["runtimes"] = {e: m.report() for e, m in self.engines.items()}
        return out


@dataclass(frozen=True)
class Selection:
    """What the select stage decided: every artifact with its gates, what ships, and with
    which engine (None: its model kind's own)."""

    artifacts: list[Artifact]
    ship: Artifact | None
    engine: str | None = None
    # every (artifact, engine) pairing per target, when the recipe compares engines
    compared: dict[str, Any] | None = None


@dataclass
class BuildResult:
    report: dict[str, Any]
    out_dir: Path
    exit_code: int
