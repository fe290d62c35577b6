"""The same ResNet served by the real MXNet Model Server and by the Lambda packages, at one CPU.

    python benchmarks/mms_vs_lambda.py [--requests 300] [--warmup 30] [--memory 1769]

MMS 1.1.11 (Java frontend, Python worker, from PyPI into optimizer's isolated MXNet env)
serves recipes/models/resnet18q-digits.mar with one worker, inside a cgroup with a CFS quota
of one CPU. The Lambda side is the resnet-eia-migration build: its shipped int8 zip, plus
the fp32 ONNX model packaged the same way, each run by optimizer's local Lambda (Runtime API
emulator, the CPU quota of the memory size: 1769 MB = 1 vCPU). Every side gets the same PNG
(the package's sample event) and must give the same top label. Builds what it needs (cached
after the first run). Writes benchmarks/results/mms_vs_lambda.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

from optimizer import hostinfo, targets
from optimizer.handler.events import images_from_event
from optimizer.lambda_local.caps import ProcessCaps
from optimizer.lambda_local.deployable import open_deployable
from optimizer.lambda_local.tune import concurrent, one_size, percentile
from optimizer.package.proof import sample_event
from optimizer.sources.mxnet import env as envs

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes/resnet-eia-migration.yaml"
ARCHIVE = ROOT / "recipes/models/resnet18q-digits.mar"
OUT = ROOT / "benchmarks/results/mms_vs_lambda.json"
MODEL = "rn"


def _port() -> int:
    """A free port below 32768: MMS 1.1 refuses higher ones ("Invalid port number")."""
    for port in random.sample(range(20000, 32000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def build(work: Path) -> dict[str, Path]:
    """The recipe's own build (ships int8), and the same recipe packaging fp32-opt."""
    doc = yaml.safe_load(RECIPE.read_text())
    doc["source"]["path"] = str(ARCHIVE)
    doc["package"] = {"model": "fp32-opt", "zip": {"layers": 1}}
    fp32 = work / "fp32.yaml"
    fp32.write_text(yaml.safe_dump(doc))
    outs = {"int8": ROOT / "artifacts/resnet-eia-migration", "fp32": work / "fp32-out"}
    for recipe, out in ((RECIPE, outs["int8"]), (fp32, outs["fp32"])):
        subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                        str(out)], check=True)
    return outs


class Mms:
    """multi-model-server in the foreground, in its own process group and CPU cgroup."""

    def __init__(self, work: Path, cpus: float, memory_mb: int) -> None:
        self.env = envs.ensure(envs.MXNET, ("mms",))
        self.work = work
        store = work / "store"
        store.mkdir()
        (store / ARCHIVE.name).symlink_to(ARCHIVE)
        self.port, mport = _port(), _port()
        (work / "config.properties").write_text("\n".join([
            f"inference_address=http://127.0.0.1:{self.port}",
            f"management_address=http://127.0.0.1:{mport}",
            "default_workers_per_model=1", "number_of_netty_threads=1",
            "netty_client_threads=1", f"model_store={store}",
            f"load_models={MODEL}={ARCHIVE.name}", ""]))
        self.caps = ProcessCaps(memory_mb, cpus)
        environ = {**self.env.environ(("mms",)), "OMP_NUM_THREADS": "1",
                   "MXNET_CPU_WORKER_NTHREADS": "1", "LOG_LOCATION": str(work / "logs"),
                   "METRICS_LOCATION": str(work / "logs"),
                   # its pid file lives in the temp dir: one per run, never a stale one
                   "TMPDIR": str(work)}
        self.log = (work / "mms.out").open("w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(self.env.python), "-m", "mms.model_server", "--start", "--foreground",
             "--mms-config", str(work / "config.properties"), "--model-store", str(store)],
            cwd=work, env=environ, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=self.caps.enter)

    def predict(self, png: bytes) -> tuple[float, list[dict]]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/predictions/{MODEL}",
                                     data=png, headers={"Content-Type": "image/png"})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
        return (time.perf_counter() - t) * 1000, json.loads(body)

    def wait_ready(self, png: bytes, limit_s: float = 120) -> float:
        """Seconds from launch to the first answer: MMS's cold start, model load included."""
        while time.perf_counter() - self.t0 < limit_s:
            if self.proc.poll() is not None:
                self.log.flush()
                tail = (self.work / "mms.out").read_text().splitlines()[-15:]
                raise RuntimeError(f"MMS exited {self.proc.returncode}:\n" + "\n".join(tail))
            try:
                self.predict(png)
                return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"MMS gave no answer within {limit_s} s; see {self.work}/mms.out")

    def prediction_times(self) -> list[float]:
        """The worker's own handler time per request (MMS's PredictionTime metric)."""
        log = self.work / "logs" / "model_metrics.log"
        text = log.read_text() if log.exists() else ""
        return [float(m) for m in re.findall(r"PredictionTime\.Milliseconds:([\d.]+)", text)]

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(20)
                break
            except ProcessLookupError:
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()
        self.caps.close()


def mms_side(png: bytes, requests: int, warmup: int, cpus: float, clients: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="mms-bench-") as tmp:
        server = Mms(Path(tmp), cpus, memory_mb=4096)
        try:
            ready_s = server.wait_ready(png)
            _, answer = server.predict(png)
            for _ in range(warmup):
                server.predict(png)
            skip = len(server.prediction_times())
            seq = [server.predict(png)[0] for _ in range(requests)]
            handler = server.prediction_times()[skip:]
            lat: list[float] = []
            lock = threading.Lock()

            def client(n: int) -> None:
                for _ in range(n):
                    ms = server.predict(png)[0]
                    with lock:
                        lat.append(ms)

            t = time.perf_counter()
            threads = [threading.Thread(target=client, args=(requests // clients,))
                       for _ in range(clients)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
        finally:
            server.close()
        return {
            "server": "multi-model-server 1.1.11 (MXNet 1.9.1, Java "
                      f"{_java_version()}), 1 worker", "cap": server.caps.method,
            "cold_start_s": round(ready_s, 3), "top": answer[0],
            "sequential": {"requests": requests, "p50_ms": round(statistics.median(seq), 3),
                           "p95_ms": round(percentile(seq, 0.95), 3),
                           "mean_ms": round(statistics.fmean(seq), 3),
                           "throughput_rps": round(1000 / statistics.fmean(seq), 2)},
            "handler_ms_p50": round(statistics.median(handler), 3) if handler else None,
            "concurrent": {"clients": clients, "requests": len(lat),
                           "throughput_rps": round(len(lat) / wall, 2),
                           "p50_ms": round(statistics.median(lat), 3)},
        }


def _java_version() -> str:
    out = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "([^"]+)"', out)
    return m.group(1) if m else "?"


def lambda_side(folder: Path, event: dict, memory_mb: int, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="lambda-bench-") as tmp:
        dep = open_deployable(str(folder), Path(tmp))
        row = one_size(dep, event, memory_mb, requests, 60)
        load = concurrent(dep, event, memory_mb, 1, requests, 60)
        top = json.loads(_answer(dep, event, memory_mb))
    report = json.loads((folder / "report.json").read_text())
    model = report["packages"][0]["model"]
    return {"package": f"{folder.name}/package ({model})", "cap": row["cap_method"],
            "init_ms": row["init_ms"], "duration_p50_ms": row["p50_ms"],
            "duration_p95_ms": row["p95_ms"], "errors": row["errors"],
            # one instance kept busy by one client, through the local Runtime API
            "throughput_rps": load["throughput_rps"], "throughput_run_p50_ms": load["p50_ms"],
            "cost_per_million_usd": row["cost_per_million_usd"],
            "top": top}


def _answer(dep, event: dict, memory_mb: int) -> str:
    from optimizer.lambda_local.session import Session

    s = Session(dep.make(memory_mb, targets.vcpus(memory_mb), 60), memory_mb, 60)
    try:
        out = s.invoke(event)
    finally:
        s.close()
    response = out.response if isinstance(out.response, dict) else json.loads(out.response)
    from optimizer.package.proof import first_answers

    return json.dumps(first_answers(json.loads(response["body"]))[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--memory", type=int, default=targets.MB_PER_VCPU)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    cpus = targets.vcpus(args.memory)
    with tempfile.TemporaryDirectory() as work:
        outs = build(Path(work))
        sample = json.loads((outs["int8"] / "package/sample-event.json").read_text())
        png = images_from_event(sample, 1 << 30, 1 << 20)[0]  # one image: batch 1 for both
        event = sample_event([png])
        mms = mms_side(png, args.requests, args.warmup, cpus, args.clients)
        lam = {k: lambda_side(v, event, args.memory, args.requests) for k, v in outs.items()}
    labels = {mms["top"]["label"], *(x["top"]["label"] for x in lam.values())}
    doc = {"host": hostinfo.cpu(), "memory_mb": args.memory, "cpus": round(cpus, 3),
           "archive": str(ARCHIVE.relative_to(ROOT)), "mms": mms, "lambda": lam,
           "same_top_label": len(labels) == 1,
           "note": "MMS latency is an HTTP round trip on loopback (its handler_ms is MMS's own "
                   "PredictionTime); Lambda latency is the Duration Lambda bills, from the "
                   "Runtime API handing over the event to the response; img/s is one MMS "
                   "worker or one Lambda instance kept busy, all under a 1-CPU CFS quota"}
    OUT.write_text(json.dumps(doc, indent=1))
    m = mms["sequential"]
    rows = [("MMS (MXNet fp32), 1 CPU", m["p50_ms"], m["p95_ms"], m["throughput_rps"],
             mms["cold_start_s"], "HTTP round trip"),
            ("  its handler alone", mms["handler_ms_p50"], "", "", "", "PredictionTime"),
            (f"MMS, {args.clients} clients", mms["concurrent"]["p50_ms"], "",
             mms["concurrent"]["throughput_rps"], "", "HTTP round trip")]
    rows += [(f"Lambda {k} ONNX, {args.memory} MB", x["duration_p50_ms"], x["duration_p95_ms"],
              x["throughput_rps"], round((x["init_ms"] or 0) / 1000, 3), "Lambda Duration")
             for k, x in lam.items()]
    print(f"{'side':<30} {'p50 ms':>8} {'p95 ms':>8} {'img/s':>7} {'cold s':>7}  p50 is")
    for name, p50, p95, rps, cold, what in rows:
        print(f"{name:<30} {p50!s:>8} {p95!s:>8} {rps!s:>7} {cold!s:>7}  {what}")
    print(f"same top label everywhere: {doc['same_top_label']} ({sorted(labels)}); "
          f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
