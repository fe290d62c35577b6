"""Running zips as Lambda does: the real runtime client against the local Runtime API, in a
capped process, with Lambda's answers to timeouts, import errors and memory overruns."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from optimizer import targets
from optimizer.archive import zip_tree
from optimizer.emulation.interpreters import find_python
from optimizer.lambda_local.caps import ProcessCaps
from optimizer.lambda_local.deployable import open_deployable
from optimizer.lambda_local.session import Session

pytestmark = pytest.mark.skipif(find_python("3.12") is None,
                                reason="needs a Python 3.12 (pyenv) to run python3.12 zips")

FUNCTION = """
    import os, pathlib, time
    if pathlib.Path(os.environ["LAMBDA_TASK_ROOT"], "broken").exists():
        raise ImportError("this module breaks at import while the flag file exists")

    def ok(event, context):
        return {"echo": event, "remaining_ms": context.get_remaining_time_in_millis()}

    def sleepy(event, context):
        time.sleep(event.get("sleep", 0))
        return {"slept": event.get("sleep", 0)}

    def fails(event, context):
        raise ValueError("bad input, said the handler")

    STATE = {"hooks": []}
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        pass
    else:
        @register_before_snapshot
        def _snap():
            STATE["hooks"].append("before_snapshot")

        @register_after_restore
        def _restore():
            if pathlib.Path(os.environ["LAMBDA_TASK_ROOT"], "no-restore").exists():
                raise RuntimeError("cannot refresh after restore")
            STATE["hooks"].append("after_restore")

    def hooks(event, context):
        return STATE["hooks"]

    def hog(event, context):
        block = bytearray(event["mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block)
"""


@pytest.fixture(scope="module")
def function_zip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fn")
    (root / "src").mkdir()
    (root / "src" / "fn.py").write_text(textwrap.dedent(FUNCTION))
    zip_tree(root / "function.zip", root / "src")
    return root / "function.zip"


def session(function_zip, tmp_path, handler, memory_mb=1769, timeout_s=5.0,
            snap_start=False) -> Session:
    dep = open_deployable(str(function_zip), tmp_path / handler, "python3.12", f"fn.{handler}")
    return Session(dep.make(memory_mb, targets.vcpus(memory_mb), timeout_s), memory_mb,
                   timeout_s, snap_start=snap_start)


def test_cold_then_warm_with_a_report_line(function_zip, tmp_path):
    s = session(function_zip, tmp_path, "ok")
    try:
        first, second = s.invoke({"n": 1}), s.invoke({"n": 2})
    finally:
        s.close()
    assert first.status == second.status == "ok"
    assert first.response["echo"] == {"n": 1} and 0 < first.response["remaining_ms"] <= 5000
    assert first.init_ms is not None and second.init_ms is None
    line = first.line()
    for part in ("Duration:", "Billed Duration:", "Max Memory Used:", "Init Duration:"):
        assert part in line
    assert first.billed_ms >= first.duration_ms and first.max_memory_mb > 5
    assert not any(Path("/sys/fs/cgroup").glob(f"*/{s.instance.caps.name}"))  # removed
    assert "cgroup" in s.instance.cap_method or "rlimit" in s.instance.cap_method


def test_timeout_is_reported_and_the_next_call_starts_cold(function_zip, tmp_path):
    s = session(function_zip, tmp_path, "sleepy", timeout_s=1.0)
    try:
        late = s.invoke({"sleep": 3})
        after = s.invoke({"sleep": 0})
    finally:
        s.close()
    assert late.status == "timeout" and late.error == "Task timed out after 1.00 seconds"
    assert after.status == "ok" and after.init_ms is not None and s.cold_starts == 2


def test_handler_exception_keeps_the_instance_warm(function_zip, tmp_path):
    s = session(function_zip, tmp_path, "fails")
    try:
        a, b = s.invoke({}), s.invoke({})
    finally:
        s.close()
    assert a.status == b.status == "error" and "ValueError" in a.error
    assert s.cold_starts == 1 and b.init_ms is None


def test_import_error_is_an_init_error_and_a_fixed_module_serves(function_zip, tmp_path):
    s = session(function_zip, tmp_path, "ok")
    flag = Path(tmp_path / "ok" / "task" / "broken")
    flag.write_text("")
    try:
        broken = s.invoke({})
        flag.unlink()
        fixed = s.invoke({"after": True})
    finally:
        s.close()
    assert broken.status == "init_error" and "ImportModuleError" in broken.error
    assert fixed.status == "ok" and fixed.response["echo"] == {"after": True}


def test_memory_over_the_size_is_killed_and_the_next_call_serves(function_zip, tmp_path):
    probe = ProcessCaps(128, 1)
    probe.close()
    if not probe.method.startswith("cgroup"):
        pytest.skip("no cgroup can be made here; RLIMIT_AS fails allocations instead")
    s = session(function_zip, tmp_path, "hog", memory_mb=128, timeout_s=20)
    try:
        over = s.invoke({"mb": 300})
        fine = s.invoke({"mb": 8})
    finally:
        s.close()
    assert over.status == "killed" and "Runtime.OutOfMemory" in over.error
    assert fine.status == "ok" and fine.response == 8 * 1024 * 1024


def test_snap_start_runs_the_hooks_around_a_restore(function_zip, tmp_path):
    """Init, the before-snapshot hooks, /restore/next, the after-restore hooks, then events;
    an after-restore hook that raises is reported as the runtime reports it."""
    s = session(function_zip, tmp_path, "hooks", snap_start=True)
    try:
        first, second = s.invoke({}), s.invoke({})
    finally:
        s.close()
    assert first.status == "ok" and first.response == ["before_snapshot", "after_restore"]
    assert first.restore_ms is not None and first.restore_ms >= 0 and first.init_ms > 0
    assert "Restore Duration:" in first.line() and "Init Duration" not in first.line()
    assert second.restore_ms is None and second.response == first.response
    plain = session(function_zip, tmp_path / "plain", "hooks")  # on demand: no hook runs
    try:
        assert plain.invoke({}).response == []
    finally:
        plain.close()
    s = session(function_zip, tmp_path / "failing", "hooks", snap_start=True)
    (tmp_path / "failing" / "hooks" / "task" / "no-restore").write_text("")
    try:
        failed = s.invoke({})
    finally:
        s.close()
    assert failed.status == "init_error" and "cannot refresh after restore" in failed.error
