"""The cache: atomic entries, corruption detected, concurrent writers both succeed."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from optimizer.cache import Cache, make_key


def test_put_then_get_roundtrip(tmp_path):
    cache = Cache(tmp_path)
    key = make_key({"a": 1})
    assert cache.get_dir(key) is None
    with cache.put_dir(key) as d:
        (d / "model.onnx").write_bytes(b"abc")
    hit = cache.get_dir(key)
    assert hit is not None and (hit / "model.onnx").read_bytes() == b"abc"
    cache.put_json(make_key({"b": 2}), {"x": [1, 2]})
    assert cache.get_json(make_key({"b": 2})) == {"x": [1, 2]}


def test_keys_depend_on_every_part():
    base = {"step": "quantize", "config": {"mode": "static"}, "input": "d1"}
    assert make_key(base) == make_key(dict(reversed(base.items())))
    assert make_key(base) != make_key({**base, "input": "d2"})
    assert make_key(base) != make_key({**base, "config": {"mode": "dynamic"}})


def test_failed_block_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)
    key = make_key({"fail": True})
    with pytest.raises(RuntimeError), cache.put_dir(key) as d:
        (d / "half.onnx").write_bytes(b"partial")
        raise RuntimeError("step crashed")
    assert cache.get_dir(key) is None
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_corrupted_entry_is_a_miss_and_can_be_rewritten(tmp_path):
    cache = Cache(tmp_path)
    key = make_key({"c": 1})
    with cache.put_dir(key) as d:
        (d / "model.onnx").write_bytes(b"good")
    hit = cache.get_dir(key)
    (hit / "model.onnx").write_bytes(b"evil")
    assert cache.get_dir(key) is None
    with cache.put_dir(key) as d:
        (d / "model.onnx").write_bytes(b"good")
    assert (cache.get_dir(key) / "model.onnx").read_bytes() == b"good"


def _writer(root: str, key: str, payload: bytes, barrier) -> None:
    cache = Cache(Path(root))
    barrier.wait()
    for _ in range(20):
        with cache.put_dir(key) as d:
            (d / "model.onnx").write_bytes(payload)


def test_concurrent_writers_of_one_key(tmp_path):
    key = make_key({"race": 1})
    barrier = mp.get_context("fork").Barrier(2)
    procs = [mp.get_context("fork").Process(target=_writer, args=(str(tmp_path), key, b"same",
                                                                   barrier)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    hit = Cache(tmp_path).get_dir(key)
    assert hit is not None and (hit / "model.onnx").read_bytes() == b"same"
    leftovers = [p for p in hit.parent.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_sweep_removes_only_orphans_of_dead_builds(tmp_path):
    import os
    import subprocess
    import sys

    cache = Cache(tmp_path)
    key = make_key({"kept": 1})
    with cache.put_dir(key) as d:
        (d / "model.onnx").write_bytes(b"ok")
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    old = tmp_path / "objects" / "ab" / f".tmp-abc-{dead_pid}-x1"
    young = tmp_path / "objects" / "ab" / f".tmp-abc-{os.getpid()}-x2"
    for folder in (old, young):
        folder.mkdir(parents=True)
        (folder / "half.onnx").write_bytes(b"partial")
    assert cache.sweep_orphans() == 1
    assert not old.exists() and young.exists()
    assert cache.get_dir(key) is not None
