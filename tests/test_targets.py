"""Lambda facts: the memory-to-vCPU table and the cost arithmetic."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from optimizer import targets
from optimizer.cli import app


@pytest.mark.parametrize(
    ("mb", "vcpus"),
    [(128, 128 / 1769), (1024, 1024 / 1769), (1769, 1), (1770, 2), (3008, 2), (3009, 3),
     (5307, 3), (7076, 4), (8845, 5), (10240, 6)],
)
def test_vcpus(mb, vcpus):
    assert targets.vcpus(mb) == pytest.approx(vcpus)
    assert targets.threads_for(mb) == max(1, -(-vcpus // 1))


@pytest.mark.parametrize("mb", [127, 10241, 0])
def test_memory_outside_lambda_range(mb):
    with pytest.raises(ValueError, match="outside Lambda"):
        targets.vcpus(mb)


def test_cost_per_million_bills_whole_milliseconds():
    # 100.2 ms bills as 101 ms; 1 GB; x86 price; plus $0.20 of requests
    expected = 1e6 * (0.101 * 1.0 * 0.0000166667) + 0.20
    assert targets.cost_per_million(100.2, 1024, "x86_64") == pytest.approx(expected)
    assert targets.cost_per_million(100, 1024, "arm64") < targets.cost_per_million(
        100, 1024, "x86_64")


def test_cold_starts_bill_their_init_in_the_stated_share():
    warm = targets.cost_per_million(100, 1024, "x86_64")
    # 10 in 1,000 requests also bill 400 ms of init: 0.99 * 100 ms + 0.01 * 500 ms
    expected = 1e6 * ((0.99 * 0.1 + 0.01 * 0.5) * 0.0000166667) + 0.20
    assert targets.cost_per_million(100, 1024, "x86_64", cold_ms=500,
                                    cold_starts_per_1000=10) == pytest.approx(expected)
    assert targets.cost_per_million(100, 1024, "x86_64", cold_ms=500) == warm  # share 0
    assert targets.billed_ms(0.2) == 1 and targets.billed_ms(100.2) == 101


def test_limits_are_the_published_numbers():
    assert targets.LIMITS.zip_upload_bytes == 50 * 1024 * 1024
    assert targets.LIMITS.unzipped_bytes == 250 * 1024 * 1024
    assert targets.LIMITS.image_bytes == 10 * 1024**3
    assert "avx512f" not in targets.TARGETS["x86_64"].flags


def test_targets_command_json_and_table():
    runner = CliRunner()
    doc = json.loads(runner.invoke(app, ["targets", "--json"]).output)
    assert doc["limits"]["zip_upload_bytes"] == 52_428_800
    assert set(doc["targets"]) == {"x86_64", "x86_64-avx512", "arm64"}
    text = runner.invoke(app, ["targets"]).output
    assert "1769" in text and "python3.12" in text
