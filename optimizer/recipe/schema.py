"""Recipes: what to build. A static pydantic tree, loaded from YAML with file:line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from optimizer import targets
from optimizer.errors import BadInput
from optimizer.preprocess_spec import Preprocess
from optimizer.recipe_paths import ExistingDir, ExistingFile, ExistingPath
from optimizer.steps import STEPS, AnyStep
from optimizer.train.config import Architecture, StudentSpec, TrainConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- sources -------------------------------------------------------------------------

LabelsFile = Annotated[ExistingFile | None, Field(
    description="the model's label names in output order: one per line, or a JSON list; "
    "checked against the dataset's classes")]


class KerasSource(Strict):
    produces: ClassVar[str] = "tf"
    kind: Literal["keras"]
    path: ExistingFile = Field(description=".keras or .h5 file, loaded with safe mode on")
    labels: LabelsFile = None
    preprocess: Preprocess = Field(default_factory=Preprocess)

    @field_validator("path")
    @classmethod
    def _suffix(cls, v: Path) -> Path:
        if v.suffix not in (".keras", ".h5"):
            raise ValueError(f"expected a .keras or .h5 file, got {v.name}")
        return v


class SavedModelSource(Strict):
    produces: ClassVar[str] = "tf"
    kind: Literal["savedmodel"]
    path: ExistingDir
    signature: str = "serving_default"
    labels: LabelsFile = None
    preprocess: Preprocess = Field(default_factory=Preprocess)

    @field_validator("path")
    @classmethod
    def _saved_model(cls, v: Path) -> Path:
        if not (v / "saved_model.pb").is_file():
            raise ValueError(f"{v} has no saved_model.pb")
        return v


class OnnxSource(Strict):
    produces: ClassVar[str] = "onnx"
    kind: Literal["onnx"]
    path: ExistingFile
    labels: LabelsFile = None
    preprocess: Preprocess = Field(default_factory=Preprocess)


class ArchitectureSource(StudentSpec):
    """A Keras application trained here on the recipe's data: nothing can be downloaded."""

    produces: ClassVar[str] = "tf"
    kind: Literal["architecture"]
    architecture: Architecture
    channels: Literal[1, 3] = Field(default=3, description="1 trains on grey images")
    train: TrainConfig = Field(default_factory=TrainConfig)

    def input_files(self) -> list[Path]:
        return [self.weights] if self.weights else []


class Parity(Strict):
    """How closely the ONNX model must reproduce MXNet on the dataset's test images."""

    max_rel_diff: float = Field(
        default=1e-4, gt=0, description="max |MXNet - ONNX| over the outputs' size, "
        "max(1, max |MXNet output|): float error grows with the values, so unnormalised "
        "inputs' large outputs do not fail a sound conversion")
    max_abs_diff: float | None = Field(default=None, gt=0, description="an absolute bound "
                                       "over every output value too, if set")
    min_top1_agreement: float = Field(default=1.0, ge=0, le=1)
    samples: int = Field(default=512, ge=1, description="test images compared (at most)")


class HandlerCheck(Strict):
    """The archive's handler run on the encoded test images and compared with the converted
    model: the old endpoint's answers are what "right" means, with labels or without."""

    min_agreement: float = Field(
        default=99.0, ge=0, le=100, description="top-1 agreement with the handler, percent; "
        "below it the build stops before any step, naming the preprocessing that agrees")
    samples: int = Field(default=200, ge=1, description="test images sent (at most)")
    image_format: Literal["png", "jpeg"] = Field(
        default="png", description="how the images are encoded, as the endpoint got them")


class _MxnetCommon(Strict):
    produces: ClassVar[str] = "onnx"
    input_shape: list[int] | None = Field(
        default=None, min_length=4, max_length=4,
        description="NCHW, batch first (e.g. [1, 3, 224, 224]); an archive's signature.json "
        "gives it otherwise")
    input_name: str | None = Field(default=None, description="default: the symbol's one data "
                                   "input, or the signature's")
    preprocess: Preprocess = Field(
        default_factory=Preprocess, description="fields set here win over the archive's "
        "signature; MMS fed raw 0..255 RGB pixels, resized, so that is the default")
    parity: Parity = Field(default_factory=Parity)
    labels: ExistingFile | None = Field(
        default=None, description="label names in output order (one per line, or a JSON "
        "list); an archive's synset.txt is read otherwise")

    @field_validator("input_shape")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (v[0] < 0 or min(v[1:]) < 1 or v[1] not in (1, 3)):
            raise ValueError(f"expected [batch, 1 or 3 channels, height, width], got {v}")
        return v


class MxnetSource(_MxnetCommon):
    """A symbol JSON and params file: a Module checkpoint or a HybridBlock.export()."""

    kind: Literal["mxnet"]
    symbol: ExistingFile = Field(description="<prefix>-symbol.json")
    params: ExistingFile = Field(description="<prefix>-0000.params")

    def input_files(self) -> list[Path]:
        return [self.symbol, self.params]


class MmsArchiveSource(_MxnetCommon):
    """An MXNet Model Server archive: .mar (model-archiver 1.x), .model (MMS 0.x), tar.gz."""

    kind: Literal["mms-archive"]
    path: ExistingPath = Field(description="archive file, or a no-archive folder")
    handler: HandlerCheck = Field(default_factory=HandlerCheck)

    def input_files(self) -> list[Path]:
        return [self.path]


Source = Annotated[
    KerasSource | SavedModelSource | OnnxSource | ArchitectureSource | MxnetSource
    | MmsArchiveSource, Field(discriminator="kind")
]

# --- datasets ------------------------------------------------------------------------


class Split(Strict):
    test: float = Field(default=0.2, gt=0, lt=0.9)
    val: float = Field(default=0.1, ge=0, lt=0.9)
    seed: int = 0

    @model_validator(mode="after")
    def _sum(self) -> Split:
        if self.test + self.val >= 0.95:
            raise ValueError("test + val leaves too little to train on")
        return self


ClassNames = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=2)]
_CLASSES_DOC = ("the label names in the model's output order; the answers the function "
                "gives. Without it: " )


class _Labelled(Strict):
    classes: ClassNames | None = None

    def _check_classes(self, own: list[str], numbered: bool) -> None:
        """At load time, so a wrong list is a recipe error with its line."""
        from optimizer.data.classes import order_classes

        try:
            order_classes(own, self.classes, numbered, "dataset.classes")
        except BadInput as exc:
            raise Wiring(("dataset", "classes"), str(exc).split(": ", 1)[1]) from None


class DigitsDataset(_Labelled):
    kind: Literal["sklearn-digits"]
    classes: ClassNames | None = Field(default=None, description=_CLASSES_DOC + "'0'..'9' "
                                       "in digit order; a reorder of those, or ten new names")
    split: Split = Field(default_factory=Split)

    @model_validator(mode="after")
    def _order(self) -> DigitsDataset:
        from optimizer.data.digits import CLASSES

        self._check_classes(CLASSES, numbered=True)
        return self


class FolderDataset(_Labelled):
    kind: Literal["folder"]
    path: ExistingDir
    labels: Literal["folders", "none"] = Field(
        default="folders", description="folders: one subfolder per class (a folder of images "
        "without subfolders has no labels); none: every image under path, without labels")
    classes: ClassNames | None = Field(
        default=None, description=_CLASSES_DOC + "the subfolder names, sorted; with labels: "
        "none, the model's own labels or its output numbers")
    split: Split = Field(default_factory=Split)

    @model_validator(mode="after")
    def _folders(self) -> FolderDataset:
        from optimizer.data import folder

        if self.classes is None or self.labels == "none" or not self.path.is_dir():
            return self
        folders = folder.class_folders(self.path)
        if not folders:
            return self  # images without subfolders: the list names the model's outputs
        dup = sorted({c for c in self.classes if self.classes.count(c) > 1})
        missing = [c for c in self.classes if c not in folders]
        extra = [f for f in folders if f not in self.classes]
        problems = ([f"listed more than once: {dup}"] if dup else []) + (
            [f"no folder for {missing}"] if missing else []) + (
            [f"folder(s) {extra} not in the list"] if extra else [])
        if problems:
            raise Wiring(("dataset", "classes"), f"must name the class folders under "
                          f"{self.path}; " + "; ".join(problems))
        return self


class NpzDataset(_Labelled):
    kind: Literal["npz"]
    path: ExistingFile
    labels: Literal["y", "none"] = Field(default="y", description="y: the labels in the file's "
                                         "'y' array (a file without one has no labels)")
    classes: ClassNames | None = Field(
        default=None, description=_CLASSES_DOC + "'0'..'K-1' for the values in y; a reorder "
        "of those, or new names for them")
    split: Split = Field(default_factory=Split)


class FashionMnistDataset(_Labelled):
    """Debian's dataset-fashion-mnist; the canonical 10,000-image test set by default."""

    kind: Literal["fashion-mnist"]
    path: ExistingDir = Path("/usr/share/datasets/fashion-mnist")
    classes: ClassNames | None = Field(default=None, description=_CLASSES_DOC + "the dataset's "
                                       "ten names in its own order; a reorder of those")
    canonical_test: bool = Field(default=True, description="test on t10k, not a pooled split")
    train_limit: int | None = Field(default=None, ge=10, description="class-balanced subset")
    test_limit: int | None = Field(default=None, ge=10, description="class-balanced subset")
    split: Split = Field(default_factory=Split)

    @model_validator(mode="after")
    def _order(self) -> FashionMnistDataset:
        from optimizer.data.fashion_mnist import CLASSES

        self._check_classes(CLASSES, numbered=False)
        return self


DatasetConfig = Annotated[
    DigitsDataset | FolderDataset | NpzDataset | FashionMnistDataset,
    Field(discriminator="kind"),
]

# --- target, gates, package ----------------------------------------------------------


def _one_of(table: dict, what: str) -> AfterValidator:
    def check(v: str) -> str:
        if v not in table:
            raise ValueError(f"unknown {what} '{v}'; choose one of {sorted(table)}")
        return v

    return AfterValidator(check)


class TargetConfig(Strict):
    name: Annotated[str, _one_of(targets.TARGETS, "target")] = targets.DEFAULT_TARGET
    runtime: Annotated[str, _one_of(targets.RUNTIMES, "runtime")] = targets.DEFAULT_RUNTIME
    memory_mb: int = targets.DEFAULT_MEMORY_MB

    @field_validator("memory_mb")
    @classmethod
    def _memory(cls, v: int) -> int:
        lo, hi = targets.LIMITS.memory_min_mb, targets.LIMITS.memory_max_mb
        if not lo <= v <= hi:
            raise ValueError(f"memory_mb must be within Lambda's {lo}..{hi} MB, got {v}")
        return v

    @property
    def threads(self) -> int:
        return targets.threads_for(self.memory_mb)


_EngineName = Annotated[str, _one_of(targets.ENGINES, "inference engine")]
_TargetName = Annotated[str, _one_of(targets.TARGETS, "target")]


class EnginesConfig(Strict):
    """Inference engines to compare (the recipe's `runtimes:`), and the targets to compare
    them on.

    Every artifact that passes the gates is tried with every listed engine that runs its
    format; the fastest that fits the package type ships on the recipe's own target.
    """

    candidates: list[_EngineName] = Field(
        default_factory=lambda: list(targets.ENGINES), min_length=1)
    targets: list[_TargetName] = Field(
        default_factory=list, description="targets compared besides the recipe's own")
    emulated_runs: int = Field(default=20, ge=1, le=10_000,
                               description="timed runs per model under qemu (foreign targets)")


class LatencyConfig(Strict):
    warmup: int = Field(default=10, ge=0, le=10_000)
    runs: int = Field(default=100, ge=5, le=100_000)


class Gates(Strict):
    max_accuracy_drop: float = Field(
        default=1.0, ge=0, le=100, description="percentage points below the source model"
    )
    min_accuracy: float | None = Field(default=None, ge=0, le=100, description="percent")
    min_source_accuracy: float | None = Field(
        default=None, ge=0, le=100, description="percent; below it (or near chance) the build "
        "stops before any step runs")
    min_agreement: float | None = Field(
        default=None, ge=0, le=100, description="top-1 agreement with the source, percent "
        f"[default: {targets.UNLABELED_GATES['min_agreement']:g} without labels, not gated "
        "with]")
    max_mean_kl: float | None = Field(
        default=None, gt=0, description="mean KL divergence from the source's probabilities, "
        f"nats [default: {targets.UNLABELED_GATES['max_mean_kl']:g} without labels, not gated "
        "with]")
    max_class_drop: float | None = Field(
        default=None, ge=0, le=100, description="largest per-class drop in points: accuracy "
        "against the source's, or (no labels) agreement below 100%")
    max_latency_ms: float | None = Field(default=None, gt=0, description="batch-1 p50")
    max_model_mb: float | None = Field(default=None, gt=0)
    test_samples: int | None = Field(default=None, ge=1, description="cap on the test split")
    prefer: Literal["speed", "size"] = Field(
        default="speed", description="among artifacts that pass: the fastest (p50) or the "
        "smallest; `optimizer build --prefer` overrides")
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
    require_proof: bool = Field(
        default=False, description="fail the build (exit 1) when a package could not be run "
        "on the target's CPU or a compared target could not be timed (qemu-user or "
        "debootstrap missing); `optimizer build --require-proof` sets it too")
    require_handler_parity: bool = Field(
        default=False, description="fail the build (exit 1) when an MMS archive's handler "
        "cannot be run here to compare the converted model with")
    cold_starts_per_1000: float = Field(
        default=targets.DEFAULT_COLD_STARTS_PER_1000, ge=0, le=1000,
        description="cold starts per 1,000 requests the cost per million assumes (each bills "
        "its Init Duration)")
    baselines: list[str] = Field(
        default_factory=list, description="server setups to compare cost with, from "
        f"`optimizer targets` ({', '.join(targets.BASELINES)})")

    @field_validator("baselines")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [b for b in v if b not in targets.BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from "
                             f"{list(targets.BASELINES)}")
        return v


class ZipConfig(Strict):
    layers: int = Field(default=1, ge=0, le=targets.LIMITS.max_layers,
                        description="dependency layer zips; 0 puts everything in the function zip")


class ImageConfig(Strict):
    template: Literal["lambda", "debian"] = Field(
        default="lambda",
        description="dockerfiles/<template>.Dockerfile: the AWS Lambda Python base image, or a "
        "plain Debian/Python base with awslambdaric as the entry point")
    base: str | None = Field(
        default=None, description="base image reference [default: the template's, for the "
        "recipe's runtime]")
    base_tarball: ExistingFile | None = Field(
        default=None, description="`docker save` or OCI layout tarball of the base, for the "
        "daemonless writer when no engine holds the base")
    python: str | None = Field(default=None, pattern=r"^3\.\d+$",
                               description="the base image's Python [default: the runtime's]")
    glibc: str | None = Field(default=None, pattern=r"^2\.\d+$",
                              description="the base image's glibc [default: the runtime's]")
    engine: bool = Field(default=True, description="build through the Docker Engine")
    tarball: bool = Field(default=True, description="also write a daemonless image tarball")
    tag: str | None = Field(default=None, description="image name [default: optimizer/NAME]")


class TuneConfig(Strict):
    """Runs the built package as Lambda would at each memory size (see `optimizer tune`)."""

    memory: list[int] = Field(default_factory=lambda: [512, 1024, 1536, 1769, 3008],
                              min_length=1)
    invocations: int = Field(default=10, ge=1, le=10_000)
    strategy: Literal["cost", "speed", "balanced"] = "balanced"
    timeout_s: float = Field(default=30.0, gt=0, le=targets.LIMITS.max_timeout_s)
    batch: list[Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: [1], min_length=1, description="images per invocation; more "
        "than [1] sweeps SQS events of each size too and recommends memory and batch together "
        "(`optimizer tune --batch`)")

    @field_validator("memory")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        lo, hi = targets.LIMITS.memory_min_mb, targets.LIMITS.memory_max_mb
        bad = [m for m in v if not lo <= m <= hi]
        if bad:
            raise ValueError(f"memory sizes must be within {lo}..{hi} MB, got {bad}")
        return v


class SqsEvents(Strict):
    """A queue feeding the function, with a dead-letter queue behind it."""

    batch_size: int = Field(default=10, ge=1, le=10_000, description="messages an invocation "
                            "takes at most (optimizer tune --batch measures the trade)")
    maximum_batching_window_s: int = Field(
        default=0, ge=0, le=300, description="how long Lambda gathers messages before it "
        "invokes; at least 1 for a batch_size over 10 (Lambda's rule)")
    max_receive_count: int = Field(default=5, ge=1, le=1000, description="deliveries of a "
                                   "message before it goes to the dead-letter queue")

    @model_validator(mode="after")
    def _window(self) -> SqsEvents:
        if self.batch_size > 10 and self.maximum_batching_window_s < 1:
            raise ValueError(f"batch_size {self.batch_size} is over 10: Lambda then needs "
                             "maximum_batching_window_s of at least 1")
        return self


class S3Location(Strict):
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
                        description="bucket name (3 to 63 lowercase letters, digits, . and -)")
    prefix: str = Field(default="", max_length=1024, description="key prefix")


class EventsConfig(Strict):
    """Where the images come from besides direct and HTTP calls: a queue, objects landing in
    a bucket, or both (the bucket notifies the queue)."""

    sqs: SqsEvents | None = None
    s3: S3Location | None = None


class DeployConfig(Strict):
    """What template.yaml (AWS SAM) sets besides what the build decides."""

    events: EventsConfig = Field(default_factory=EventsConfig)
    output: S3Location | None = Field(default=None, description="where each input object's "
                                      "result is written (one JSON object per input)")

    @model_validator(mode="after")
    def _no_loop(self) -> DeployConfig:
        s3, out = self.events.s3, self.output
        if s3 and out and s3.bucket == out.bucket and out.prefix.startswith(s3.prefix):
            raise ValueError(f"output s3://{out.bucket}/{out.prefix} is inside the input "
                             f"s3://{s3.bucket}/{s3.prefix}: every result would invoke the "
                             "function again; give the output another bucket or prefix")
        return self

    timeout_s: int = Field(default=30, ge=1, le=int(targets.LIMITS.max_timeout_s))
    function_url: Literal["AWS_IAM", "NONE"] | None = Field(
        default="AWS_IAM", description="a Function URL with this auth type (NONE = public); "
        "null = no URL")
    snap_start: bool = Field(default=True, description="SnapStart on published versions, "
                             "where Lambda allows it (zip, Python 3.12+)")


class PackageConfig(Strict):
    """Empty means no package; `zip` and `image` may both be given."""

    model: str = Field(default="ship", description="artifact to package: 'ship' (the one the "
                       "gates chose), 'source', or a step name")
    zip: ZipConfig | None = None
    image: ImageConfig | None = None
    top_k: int = Field(default=5, ge=1, le=1000)
    response: Literal["handler", "optimizer"] = Field(
        default="handler", description="an MMS archive's function answers as its handler did "
        "(its top-k list of {label, score}, with its key names), so the old endpoint's "
        "clients need no change; `optimizer`: {\"predictions\": ...} as for other sources")
    max_images: int = Field(default=16, ge=1, le=1024,
                            description="images per request before a 413 error")
    tune: TuneConfig | None = Field(default=None, description="memory sweep of the zip (or "
                                    "else the image) as part of validation")
    deploy: DeployConfig = Field(default_factory=DeployConfig)


# --- the recipe ----------------------------------------------------------------------


class Recipe(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="output folder name")
    description: str = ""
    source: Source
    dataset: DatasetConfig
    target: TargetConfig = Field(default_factory=TargetConfig)
    steps: list[AnyStep] = Field(min_length=1)
    gates: Gates = Field(default_factory=Gates, alias="validate")
    package: PackageConfig = Field(default_factory=PackageConfig)
    # inference engines; `runtimes:` in recipes since before the word was kept for Lambda's
    engines: EnginesConfig | None = Field(default=None, alias="runtimes")

    def uses_tensorflow(self) -> bool:
        """Whether the build will load TensorFlow (a TF source, or a step that reads one)."""
        return self.source.produces == "tf" or any(
            STEPS[s.step].consumes == "tf" or STEPS[s.step].produces == "tf"
            for s in self.steps)

    def compared_targets(self) -> list[str]:
        """The recipe's own target first, then any others its runtimes section lists."""
        extra = self.engines.targets if self.engines else []
        return list(dict.fromkeys([self.target.name, *extra]))

    @model_validator(mode="after")
    def _wire_steps(self) -> Recipe:
        """Fill default names and inputs, and check each step gets the model kind it needs."""
        produced: dict[str, str] = {"source": self.source.produces}
        previous = "source"
        for i, step in enumerate(self.steps):
            spec = STEPS[step.step]
            step.name = step.name or step.step
            step.input = step.input or previous
            if step.name in produced:
                raise Wiring(("steps", i, "name"), f"step name '{step.name}' is used twice")
            if step.input not in produced:
                raise Wiring(
                    ("steps", i, "input"), f"'{step.input}' is not an earlier step; earlier: "
                    f"{', '.join(produced)}"
                )
            have = produced[step.input]
            if spec.consumes not in ("any", have):
                hint = " (add an export_onnx step first)" if spec.consumes == "onnx" else ""
                raise Wiring(
                    ("steps", i, "step"), f"{step.step} needs a {spec.consumes} model but "
                    f"'{step.input}' gives {have}{hint}"
                )
            produced[step.name] = spec.produces
            previous = step.name
        if self.package.model not in ("ship", *produced):
            raise Wiring(("package", "model"), f"'{self.package.model}' is not an artifact; "
                          f"choose ship, {', '.join(produced)}")
        return self

    def digest(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)


class Wiring(ValueError):
    """Carries the key path so the error points at the right line."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(message)
        self.loc = loc


