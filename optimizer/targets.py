"""Lambda facts as versioned data: limits, memory-to-vCPU table, CPU features, prices.

Every other module reads these numbers from here so a change in AWS's published limits is
one edit. Sources: AWS Lambda quotas and pricing pages as of TARGETS_VERSION.
"""

from __future__ import annotations

import math
from datetime import date

from pydantic import BaseModel, ConfigDict

from optimizer.handler.engines import threads_for_memory

TARGETS_VERSION = "2026-11"


class Limits(BaseModel):
    model_config = ConfigDict(frozen=True)

    zip_upload_bytes: int
    unzipped_bytes: int
    max_layers: int
    image_bytes: int
    image_config_bytes: int
    payload_bytes: int
    init_timeout_s: float
    max_timeout_s: float
    memory_min_mb: int
    memory_max_mb: int
    tmp_min_mb: int
    tmp_max_mb: int


class Runtime(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    python: str
    os: str
    glibc: str
    # SnapStart for Python began with 3.12, for zip functions only
    snap_start: bool = False
    # AWS's schedule (runtime-support-policy): deprecated (no more security patches), then
    # no new functions (create_block), then no updates of existing ones (update_block)
    deprecated: str | None = None
    create_block: str | None = None
    update_block: str | None = None


def runtime_lifecycle_note(runtime: str, today: date) -> str | None:
    """What AWS's schedule means for a function on `runtime` deployed today, if anything."""
    r = RUNTIMES[runtime]
    if not (r.deprecated and r.create_block and r.update_block):
        return None
    dep, create, update = r.deprecated, r.create_block, r.update_block
    now = today.isoformat()
    if now >= update:
        state = f"since {update} Lambda neither creates nor updates functions on it"
    elif now >= create:
        state = (f"since {create} Lambda creates no new functions on it, and from {update} "
                 "it updates none")
    else:
        state = (f"Lambda creates no new functions on it from {create} and updates none "
                 f"from {update}")
    verb = "was" if now >= dep else "is"
    return f"{runtime} {verb} deprecated on {dep}: {state}; choose a newer target.runtime"


class Target(BaseModel):
    """An instruction-set level the artifact may rely on, and what it costs to run there."""

    model_config = ConfigDict(frozen=True)

    name: str
    arch: str
    isa: str
    cpu: str
    # /proc/cpuinfo flag names the artifact may use; anything else on the build host is extra.
    flags: tuple[str, ...]
    price_gb_s: float
    # fp16 arithmetic in hardware; F16C and AVX-512 before FP16 only convert to fp32
    fp16_native: bool = False
    opt_in: bool = False
    note: str = ""
    # the custom resource a Ray node with this CPU declares, so latency is timed there
    ray_resource: str = ""


LIMITS = Limits(
    zip_upload_bytes=52_428_800,
    unzipped_bytes=262_144_000,
    max_layers=5,
    image_bytes=10 * 1024**3,
    image_config_bytes=16 * 1024,
    payload_bytes=6 * 1024 * 1024,
    init_timeout_s=10.0,
    max_timeout_s=900.0,
    memory_min_mb=128,
    memory_max_mb=10_240,
    tmp_min_mb=512,
    tmp_max_mb=10_240,
)

# Upper memory bound (MB, inclusive) for each whole vCPU count; below 1,769 MB the share is
# proportional.
MB_PER_VCPU = 1769
VCPU_STEPS: tuple[tuple[int, int], ...] = (
    (1769, 1),
    (3008, 2),
    (5307, 3),
    (7076, 4),
    (8845, 5),
    (10240, 6),
)

PRICE_PER_REQUEST = 0.20 / 1_000_000
HOURS_PER_MONTH = 730  # AWS's pricing month
# cold starts assumed per 1,000 requests where the recipe or `tune` does not say: 1%, a
# cautious figure for steady traffic (bursty or rare traffic has far more)
DEFAULT_COLD_STARTS_PER_1000 = 10.0
BILLING_GRANULARITY_MS = 1

RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(name="python3.11", python="3.11", os="Amazon Linux 2", glibc="2.26",
                deprecated="2027-06-30", create_block="2027-07-31",
                update_block="2027-08-31"),
        Runtime(name="python3.12", python="3.12", os="Amazon Linux 2023", glibc="2.34",
                snap_start=True),
        Runtime(name="python3.13", python="3.13", os="Amazon Linux 2023", glibc="2.34",
                snap_start=True),
        # wheels checked 2026-12: onnxruntime, ai-edge-litert, numpy and pillow for both
        # architectures, openvino for x86_64 (as for 3.13); none of tensorflow 2.21
        Runtime(name="python3.14", python="3.14", os="Amazon Linux 2023", glibc="2.34",
                snap_start=True),
    )
}

_AVX2 = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2", "popcnt")
_AVX512 = (*_AVX2, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx512_vnni")

TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="x86_64",
            arch="x86_64",
            isa="avx2",
            cpu="Haswell",
            flags=_AVX2,
            price_gb_s=0.0000166667,
            ray_resource="target_x86_64_avx2",
            note="Lambda documents AVX2 only; no VNNI, so int8 matmuls may saturate",
        ),
        Target(
            name="x86_64-avx512",
            arch="x86_64",
            isa="avx512_vnni",
            cpu="Cascadelake-Server",
            flags=_AVX512,
            price_gb_s=0.0000166667,
            opt_in=True,
            ray_resource="target_x86_64_avx512",
            note="not promised by Lambda; only for hosts you control",
        ),
        Target(
            name="arm64",
            arch="aarch64",
            isa="neoverse-n1",
            cpu="neoverse-n1",
            flags=("asimd", "asimddp", "fphp", "asimdhp"),
            price_gb_s=0.0000133334,
            fp16_native=True,
            ray_resource="target_arm64",
            note="Graviton2: dotprod and fp16 arithmetic",
        ),
    )
}



class Engine(BaseModel):
    """A library the packaged handler can run a model with, as PyPI ships it."""

    model_config = ConfigDict(frozen=True)

    name: str
    formats: tuple[str, ...]  # model kinds it runs
    # what the function installs; the first is the engine's own distribution
    requirements: tuple[str, ...]
    default_for: tuple[str, ...] = ()  # model kinds it runs unless the recipe says otherwise
    arches: tuple[str, ...] = ("x86_64", "aarch64")
    # how its kernels can be held to the target's ISA on a host that has more
    isa_cap: str = "cannot be capped: picks kernels by CPUID at run time"
    note: str = ""


ENGINES: dict[str, Engine] = {
    r.name: r
    for r in (
        Engine(name="onnxruntime", formats=("onnx",), default_for=("onnx",),
                         requirements=("onnxruntime", "numpy", "pillow"),
                         isa_cap="cannot be capped: MLAS picks kernels by CPUID"),
        Engine(name="litert", formats=("tflite",), default_for=("tflite",),
                         requirements=("ai-edge-litert", "numpy", "pillow"),
                         isa_cap="cannot be capped: XNNPACK picks kernels by CPUID",
                         note="LiteRT (TFLite) with XNNPACK"),
        Engine(name="openvino", formats=("onnx",),
                         requirements=("openvino", "numpy", "pillow"),
                         isa_cap="partial: ONEDNN_MAX_CPU_ISA caps oneDNN's kernels; "
                         "OpenVINO's own JIT kernels have no cap in release wheels",
                         note="f32 inference precision forced (no bf16 on AMX hosts)"),
        Engine(name="tensorflow", formats=("keras", "savedmodel"),
                         default_for=("keras", "savedmodel"),
                         requirements=("tensorflow-cpu", "keras", "numpy", "pillow"),
                         isa_cap="ONEDNN_MAX_CPU_ISA"),
        Engine(name="intel-tensorflow", formats=("keras", "savedmodel"),
                         requirements=("intel-tensorflow>=2", "keras", "numpy", "pillow"),
                         arches=("x86_64",), isa_cap="ONEDNN_MAX_CPU_ISA",
                         note="Intel's oneDNN build of TensorFlow"),
    )
}

# the environment variable that holds oneDNN to a target's ISA, by target ISA
ONEDNN_CAP = {"avx2": "AVX2", "avx512_vnni": "AVX512_CORE_VNNI"}


def default_engine(kind: str) -> str:
    """The library a model of this kind runs with unless the recipe compares others."""
    return next(r.name for r in ENGINES.values() if kind in r.default_for)


class Baseline(BaseModel):
    """An always-on server setup a migration is compared with, as it was sized and priced."""

    model_config = ConfigDict(frozen=True)

    name: str
    hardware: str
    usd_per_hour: float
    images_per_second: float
    latency_ms: float | None = None
    workload: str
    source: str

    @property
    def usd_per_million_images(self) -> float:
        """At full load, around the clock: the best case for a server."""
        return self.usd_per_hour / (self.images_per_second * 3600) * 1_000_000


_EI_WORKLOAD = "ResNet-152, 224x224, MXNet Model Server, batch 1"
_EI_SOURCE = ("AWS's Elastic Inference sizing figures; us-east-1 on-demand Linux prices "
              "(c5.xlarge $0.17/h, m5.large $0.096/h, eia1.medium $0.13/h; EI is end of life)")
BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline(name="c5.xlarge", hardware="c5.xlarge, 4 vCPU, CPU only", usd_per_hour=0.17,
                 images_per_second=9.95, workload=_EI_WORKLOAD, source=_EI_SOURCE),
        Baseline(name="m5.large+eia1.medium", hardware="m5.large with an eia1.medium "
                 "accelerator", usd_per_hour=0.096 + 0.13, images_per_second=19.08,
                 latency_ms=52.0, workload=_EI_WORKLOAD, source=_EI_SOURCE),
        # priced as Curalate's migration post (AWS ML blog, 2019) priced it, per month; EI
        # throughput is the accelerator's, so the eia1.medium figure above stands for it
        Baseline(name="c5.xlarge+eia1.medium", hardware="c5.xlarge with an eia1.medium "
                 "accelerator", usd_per_hour=round(220.82 / HOURS_PER_MONTH, 5),
                 images_per_second=19.08, latency_ms=52.0, workload=_EI_WORKLOAD,
                 source="Curalate's Elastic Inference post on the AWS ML blog ($220.82 a "
                 "month); throughput is the eia1.medium's from AWS's sizing (the accelerator, "
                 "not the host, bounds it); EI is end of life"),
    )
}

# budgets that stand in for the accuracy drop when a dataset has no labels: agreement with
# the source's top-1 (percent) and mean KL(source || artifact) in nats
UNLABELED_GATES = {"min_agreement": 99.0, "max_mean_kl": 0.05}

DEFAULT_TARGET = "x86_64"
DEFAULT_RUNTIME = "python3.12"
DEFAULT_MEMORY_MB = 1769


def vcpus(memory_mb: int) -> float:
    """CPU share Lambda gives a function of this memory size."""
    if not LIMITS.memory_min_mb <= memory_mb <= LIMITS.memory_max_mb:
        raise ValueError(
            f"memory {memory_mb} MB is outside Lambda's "
            f"{LIMITS.memory_min_mb}..{LIMITS.memory_max_mb} MB"
        )
    if memory_mb < MB_PER_VCPU:
        return memory_mb / MB_PER_VCPU
    for bound, count in VCPU_STEPS:
        if memory_mb <= bound:
            return float(count)
    raise AssertionError("unreachable: VCPU_STEPS covers the memory range")


def threads_for(memory_mb: int) -> int:
    """Intra-op threads worth using at a memory size: a fractional vCPU still runs one.

    The shipped handler makes the same choice from the table in its manifest.
    """
    vcpus(memory_mb)  # range check
    return threads_for_memory(memory_mb, VCPU_STEPS, MB_PER_VCPU)


def billed_ms(ms: float) -> int:
    """A duration as Lambda bills it: rounded up to the granularity, at least one unit."""
    g = BILLING_GRANULARITY_MS
    return max(g, math.ceil(ms / g) * g)


def cost_per_million(duration_ms: float, memory_mb: int, target: str,
                     cold_ms: float | None = None, cold_starts_per_1000: float = 0.0) -> float:
    """USD per 1M requests: each billed per ms, plus the request fee. Of every 1,000 requests
    `cold_starts_per_1000` are cold and billed `cold_ms` (Init Duration plus that request's
    duration): since 1 August 2025 Lambda bills the INIT phase of zip functions on managed
    runtimes too. One formula for the build's report and for `optimizer tune`."""
    def gb_s(ms: float) -> float:
        return billed_ms(ms) / 1000.0 * memory_mb / 1024.0

    share = cold_starts_per_1000 / 1000.0 if cold_ms is not None else 0.0
    per_request = (1 - share) * gb_s(duration_ms) + share * gb_s(cold_ms or 0.0)
    return 1_000_000 * (per_request * TARGETS[target].price_gb_s + PRICE_PER_REQUEST)


def as_dict() -> dict:
    """Everything above as one JSON-able document (for `optimizer targets --json`)."""
    return {
        "version": TARGETS_VERSION,
        "limits": LIMITS.model_dump(),
        "memory_to_vcpu": {
            "mb_per_vcpu": MB_PER_VCPU,
            "steps": [{"max_memory_mb": b, "vcpus": c} for b, c in VCPU_STEPS],
        },
        "price_per_request": PRICE_PER_REQUEST,
        "billing_granularity_ms": BILLING_GRANULARITY_MS,
        "runtimes": {k: v.model_dump() for k, v in RUNTIMES.items()},
        "targets": {k: v.model_dump() for k, v in TARGETS.items()},
        "inference_runtimes": {k: v.model_dump() for k, v in ENGINES.items()},  # engines
        "baselines": {k: {**v.model_dump(), "usd_per_million_images":
                          round(v.usd_per_million_images, 4)} for k, v in BASELINES.items()},
    }


def lambda_architecture(arch: str) -> str:
    """Lambda's name for a machine architecture (its API says arm64, not aarch64)."""
    return "arm64" if arch == "aarch64" else "x86_64"
