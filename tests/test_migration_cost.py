"""The Elastic Inference comparison: the always-on setups against Lambda's bill, with the
crossover in images a month at one image per invocation and at the recommended batch."""

from __future__ import annotations

import pytest

from optimizer import targets
from optimizer.report import migration


def _report(cost_batch_1: float, recommended: dict | None) -> dict:
    row = {"memory_mb": 1769, "vcpus": 1.0, "p50_ms": 40.0, "init_ms": 300.0,
           "cost_per_million_usd": cost_batch_1}
    tune = {"rows": [row], "recommended_memory_mb": 1769}
    if recommended:
        tune["recommended"] = recommended
    return {"artifacts": [{"info": {}}], "tune": tune}


def test_the_crossover_is_stated_at_batch_1_and_at_the_recommended_batch():
    r = _report(2.0, {"memory_mb": 1769, "batch": 100, "cost_per_million_images_usd": 0.05})
    [c5] = migration.section(r, ["c5.xlarge"])["cost"]["baselines"]
    monthly = targets.BASELINES["c5.xlarge"].usd_per_hour * targets.HOURS_PER_MONTH
    assert c5["usd_per_month"] == pytest.approx(monthly, abs=0.01)
    # an instance costs the same whatever it does; Lambda per image: equal bills where
    # images x Lambda's price per image = the instance's month
    assert c5["instance_cheaper_above_images_per_month_by_batch"] == {
        "1": round(monthly / 2.0 * 1e6), "100": round(monthly / 0.05 * 1e6)}
    assert c5["capacity_images_per_month"] == round(9.95 * 3600 * targets.HOURS_PER_MONTH)
    text = "\n".join(migration.markdown(migration.section(r, ["c5.xlarge"])))
    assert "at batch 100 (more than it serves)" in text


def test_an_expensive_lambda_crosses_within_what_the_instance_serves():
    """ResNet-152-like cost per image: the instance wins above a volume it can serve."""
    r = _report(30.0, None)
    [m5] = migration.section(r, ["m5.large+eia1.medium"])["cost"]["baselines"]
    [(batch, above)] = m5["instance_cheaper_above_images_per_month_by_batch"].items()
    assert batch == "1" and above < m5["capacity_images_per_month"]
    text = "\n".join(migration.markdown(migration.section(r, ["m5.large+eia1.medium"])))
    assert f"{above:,} at batch 1 |" in text


def test_the_blogs_own_crossover_comes_back_from_its_numbers():
    """Curalate's post: c5.xlarge + eia.medium at $220.82 a month crossed ResNet-152 on
    Lambda at about 7.5 million images a month, i.e. Lambda at ~$29.44 per 1M images."""
    names = ["c5.xlarge", "c5.xlarge+eia1.medium"]
    section = migration.section(_report(29.44, None), names)
    [_, ei] = section["cost"]["baselines"]
    assert ei["usd_per_month"] == 220.82
    above = ei["instance_cheaper_above_images_per_month_by_batch"]["1"]
    assert above == pytest.approx(7_500_000, rel=0.001)
    # each baseline's source is named, not only the first one's
    assert all(targets.BASELINES[n].source in section["cost"]["source"] for n in names)
