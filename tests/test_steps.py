"""Each step on a tiny real model: real TensorFlow, tf2onnx and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from optimizer.cache import Cache
from optimizer.data.dataset import prepared
from optimizer.errors import StepFailed
from optimizer.inference.onnx import run_batch, session
from optimizer.model import ModelRef
from optimizer.progress import Progress
from optimizer.recipe.load import load_recipe
from optimizer.steps import STEPS
from optimizer.steps.base import StepContext
from optimizer.steps.quantize import QuantizeConfig, isa_choice
from tests.conftest import digits_16, tiny_recipe


@pytest.fixture(scope="module")
def env(tiny_keras, tmp_path_factory):
    from optimizer.sources import SOURCES

    folder = tmp_path_factory.mktemp("steps")
    recipe = load_recipe(tiny_recipe(folder, tiny_keras))
    ds, _, _, _ = digits_16()
    source = SOURCES["keras"].load(recipe.source, ds, None)
    return recipe, ds, source, folder


def _run(env, kind: str, model: ModelRef, **cfg) -> ModelRef:
    recipe, ds, _, folder = env
    spec = STEPS[kind]
    out = folder / f"{kind}-{len(list(folder.iterdir()))}"
    out.mkdir()
    cache = Cache(folder / "cache")
    ctx = StepContext(out_dir=out, target=recipe.target.name, dataset=ds,
                      progress=Progress(quiet=True),
                      checkpoints=folder / "checkpoints",
                      cached=cache.ensure_parts)
    return spec.run(model, spec.config(step=kind, **cfg), ctx)


@pytest.fixture(scope="module")
def fp32(env) -> ModelRef:
    return _run(env, "export_onnx", env[2])


def _accuracy(env, model: ModelRef) -> float:
    _, ds, _, _ = env
    x = prepared(ds, "test", model.preprocess)
    return float(np.mean(run_batch(session(model.path), x).argmax(1) == ds.labels_of("test")))


def test_export_matches_source_within_tolerance(env, fp32):
    assert fp32.kind == "onnx" and fp32.path.is_file()
    onnx.checker.check_model(str(fp32.path))
    assert fp32.info["parity_max_abs_diff"] <= 1e-4
    assert fp32.info["parity_top1_agreement"] == 1.0
    assert _accuracy(env, fp32) > 0.85


def test_export_refuses_when_outputs_differ(env):
    with pytest.raises(StepFailed, match="differs from the source"):
        _run(env, "export_onnx", env[2], atol=1e-12)


def test_optimize_graph_records_node_counts(env, fp32):
    opt = _run(env, "optimize_graph", fp32)
    assert opt.info["nodes_before"] >= opt.info["nodes_after"] > 0
    assert [p["pass"] for p in opt.info["passes"]] == ["onnxslim", "onnxruntime-basic"]
    assert all(p["kept"] for p in opt.info["passes"])
    assert abs(_accuracy(env, opt) - _accuracy(env, fp32)) < 1e-9


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_static_quantization_is_int8_and_accurate(env, fp32, fmt):
    q = _run(env, "quantize", fp32, format=fmt, calibration_samples=64)
    ops = q.info["ops"]
    if fmt == "qdq":
        assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    else:
        assert ops.get("QLinearConv", 0) > 0
    assert q.info["reduce_range"] is True  # x86_64 target: AVX2 without VNNI
    assert q.path.stat().st_size < fp32.path.stat().st_size
    assert _accuracy(env, fp32) - _accuracy(env, q) < 0.05


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration(env, fp32, method):
    q = _run(env, "quantize", fp32, calibration=method, calibration_samples=32)
    assert q.info["calibration"] == method
    assert _accuracy(env, fp32) - _accuracy(env, q) < 0.1


def test_dynamic_quantization_runs(env, fp32):
    q = _run(env, "quantize", fp32, mode="dynamic")
    dynamic_ops = ("ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
    assert any(op in q.info["ops"] for op in dynamic_ops)
    assert _accuracy(env, q) > 0.8


def test_fp16_keeps_float32_io(env, fp32):
    half = _run(env, "fp16", fp32)
    model = onnx.load(str(half.path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert abs(_accuracy(env, half) - _accuracy(env, fp32)) < 0.02


@pytest.mark.parametrize(
    ("target", "reduce_range"), [("x86_64", True), ("x86_64-avx512", False), ("arm64", False)]
)
def test_quantization_choice_follows_target_isa(target, reduce_range):
    choice = isa_choice(QuantizeConfig(), target)
    assert choice["reduce_range"] is reduce_range
    assert (choice["activation_type"], choice["weight_type"]) == ("uint8", "int8")
    assert any("reduce_range" in why for why in choice["why"])
    forced = isa_choice(QuantizeConfig(reduce_range=False), "x86_64")
    assert forced["reduce_range"] is False


def test_every_step_kind_is_registered_once():
    from optimizer import codekey

    for kind, spec in STEPS.items():
        assert spec.config.model_fields["step"].default == kind
        # its cache key covers its own module and what that imports
        assert spec.run.__module__ in codekey.closure([spec.run.__module__])
        assert codekey.code_of(spec.run)
    assert len({id(s.run) for s in STEPS.values()}) == len(STEPS) - 1  # swap, distill share


def test_quantize_upgrades_an_old_opset_so_the_result_loads(env, tmp_path):
    """Models from older converters (PaddleOCR's classifier is opset 11) quantized per
    channel used to give a DequantizeLinear with `axis` that nothing could load."""
    from onnx import TensorProto, helper, numpy_helper

    from optimizer.preprocess_spec import Preprocess

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.normal(0, 0.3, (8, 10)).astype(np.float32), "fc")
    graph = helper.make_graph([
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["y"], axis=1)], "old",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], [w, b, fc])
    path = tmp_path / "old.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)],
                                ir_version=7), str(path))
    old = ModelRef("onnx", path, Preprocess(size=(16, 16), layout="NCHW", scale=1 / 255),
                   [str(i) for i in range(10)])
    q = _run(env, "quantize", old, calibration_samples=32)
    assert "opset upgraded from 11 to 13 for per-channel QDQ" in q.info["why"]
    x = prepared(env[1], "test", old.preprocess)[:16]
    got, want = run_batch(session(q.path), x), run_batch(session(path), x)
    assert np.abs(got - want).max() < 0.05
