"""The build's parallel work as Ray tasks; the driver keeps the cache and the output folder.

Tasks get their inputs as values through the object store (a model's packed folder, put
once per digest; the dataset, put once per build, and only when a task needs it), and
return values that the driver writes into its cache. A store actor pinned to the driver's
node answers workers' questions about cache entries and keeps each training's latest
checkpoint in the driver's cache folder, so a task retried on another node after its worker
died resumes from its last epoch. A task no live node can hold is an error, not a wait.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimizer import HASH_SEED, targets
from optimizer.build.ray import work
from optimizer.build.ray.address import check_reachable, resolve
from optimizer.build.ray.portable import pack, ship, unpack, without_memo
from optimizer.data.dataset import Dataset
from optimizer.errors import BadInput, OptimizerError
from optimizer.model import ModelRef

RETRIES = 3  # a task whose worker or node dies runs again, up to this many times
RECHECK_S = 10.0  # how often a waiting task's placement is checked against live nodes


class Store:
    """Ray actor on the driver's node: read access to the driver's cache, and checkpoints."""

    def __init__(self, cache_root: str) -> None:
        from optimizer.cache import Cache

        self.cache = Cache(Path(cache_root))
        self.checkpoints = Path(cache_root) / "checkpoints"
        self.notes: dict[str, int] = {}

    def entry(self, key: str) -> bytes | None:
        folder = self.cache.get_dir(key)
        return pack(folder) if folder else None

    def checkpoint(self, key: str) -> bytes | None:
        folder = self.checkpoints / key
        return pack(folder, set()) if (folder / "current").is_file() else None

    def save_checkpoint(self, key: str, blob: bytes) -> None:
        """Unpacked beside the old one, then swapped in: a reader never sees half of one."""
        final = self.checkpoints / key
        incoming, old = final.with_name(f".{key}.incoming"), final.with_name(f".{key}.old")
        for p in (incoming, old):
            shutil.rmtree(p, ignore_errors=True)
        unpack(blob, incoming)
        if final.exists():
            final.rename(old)
        incoming.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        self.notes[key] = self.notes.get(key, 0) + 1

    def saves(self) -> dict[str, int]:
        return dict(self.notes)


def _requirement(cpus: float, gpus: float, resources: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in {"CPU": cpus, "GPU": gpus, **resources}.items() if v}


class RayExecutor:
    kind = "ray"

    def __init__(self, address: str, cache_root: Path, log: Callable[[str], None],
                 cpus_per_task: int = 1) -> None:
        self.address = resolve(address)
        check_reachable(self.address)
        import ray

        from optimizer.quiet import native_stderr_captured

        try:
            with native_stderr_captured():  # Ray's C++ start-up notices
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False,
                         configure_logging=True)
        except Exception as exc:
            raise BadInput(f"--ray {self.address}: could not join the cluster: "
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                           ) from None
        self.ray = ray
        self.cache_root, self.log, self.cpus_per_task = cache_root, log, cpus_per_task
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._store = None
        self._puts: dict[Any, Any] = {}  # model digest or dataset id -> ObjectRef
        self._remote = ray.remote(work.timed)
        # a new process per call: TensorFlow's thread pools are fixed at its first use
        self._fresh = ray.remote(max_calls=1)(work.timed)
        nodes = self.nodes()
        log(f"ray    {self.address}: {len(nodes)} node(s), "
            + ", ".join(f"{n['NodeManagerAddress']} ({self._describe(n)})" for n in nodes))

    # --- the cluster ------------------------------------------------------------------

    def nodes(self) -> list[dict[str, Any]]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    @staticmethod
    def _describe(node: dict[str, Any]) -> str:
        res = node.get("Resources", {})
        shown = [f"{res[k]:g} {k}" for k in ("CPU", "GPU") if res.get(k)]
        shown += [k for k in res if k.startswith("target_")]
        return ", ".join(shown) or "no CPUs"

    def gpus(self) -> float:
        return max((n.get("Resources", {}).get("GPU", 0) for n in self.nodes()), default=0)

    def target_node(self, target: str) -> dict[str, Any] | None:
        """A live node declaring the target's resource, if the cluster has one."""
        resource = targets.TARGETS[target].ray_resource
        for n in self.nodes():
            if resource and n.get("Resources", {}).get(resource, 0) >= 1:
                return {"node_id": n["NodeID"], "ip": n["NodeManagerAddress"],
                        "resource": resource}
        return None

    def check_placeable(self, what: str, need: dict[str, float]) -> None:
        nodes = self.nodes()
        if any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in need.items())
               for n in nodes):
            return
        wanted = ", ".join(f"{v:g} {k}" for k, v in need.items())
        have = "; ".join(f"{n['NodeManagerAddress']}: {self._describe(n)}" for n in nodes)
        raise BadInput(f"Ray cannot place {what}: it needs {wanted} on one node, and no live "
                       f"node of {self.address} has that ({have or 'no live nodes'}); add "
                       "such a node or lower --ray-cpus")

    # --- values in the object store ---------------------------------------------------

    def _put_once(self, key: Any, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._puts:
                self._puts[key] = self.ray.put(make())
            return self._puts[key]

    def model(self, ref: ModelRef) -> Any:
        return self._put_once(("model", ref.digest), lambda: ship(ref))

    def dataset(self, dataset) -> Any:
        return self._put_once(("dataset", dataset.digest, id(dataset)),
                              lambda: without_memo(dataset))

    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                self._store = self.ray.remote(Store).options(
                    num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                        self.driver_node, soft=False)).remote(str(self.cache_root))
            return self._store

    def _args(self, value: Any) -> Any:
        """Models become shipped values (nested ones by value, top-level ones by ref)."""
        if isinstance(value, ModelRef):
            return ship(value)
        if isinstance(value, list | tuple):
            return type(value)(self._args(v) for v in value)
        if isinstance(value, dict):
            return {k: self._args(v) for k, v in value.items()}
        return value

    # --- running ----------------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., Any], *args: Any, cpus: float | None = None,
             gpus: float = 0, node: dict[str, Any] | None = None,
             fresh: bool = False) -> tuple[Any, dict[str, Any]]:
        """(fn(*args), the node it ran on), as a task; blocks this thread until it is back.
        Models travel packed, a dataset from the object store (put once), and `node` (from
        target_node) pins the task to that node through its resource."""
        cpus = self.cpus_per_task if cpus is None else cpus
        # the whole unit: one latency worker at a time on the target's node
        resources = {node["resource"]: 1.0} if node else {}
        need = _requirement(cpus, gpus, resources)
        self.check_placeable(what, need)
        shipped = [self.model(a) if isinstance(a, ModelRef) else
                   self.dataset(a) if isinstance(a, Dataset) else self._args(a) for a in args]
        options: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus, "resources": resources,
                                   "max_retries": RETRIES, "name": what[:60]}
        # workers start under the build's hash seed (exports are repeatable); a fresh task
        # gets a pool of its own (another runtime env), so its process has not run
        # TensorFlow for another task before, and max_calls=1 ends it afterwards
        env = {"PYTHONHASHSEED": HASH_SEED}
        if fresh:
            env["OPTIMIZER_TASK_CPUS"] = f"{cpus:g}"
        options["runtime_env"] = {"env_vars": env}
        submitted = time.time()
        ref = (self._fresh if fresh else self._remote).options(**options).remote(fn, *shipped)
        try:
            while not self.ray.wait([ref], timeout=RECHECK_S)[0]:
                self.check_placeable(what, need)  # a node it needed may have gone
            out = self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, OptimizerError):
                raise cause from None
            raise BadInput(f"{what} failed on the Ray cluster: "
                           f"{type(cause).__name__ if cause else 'error'}: {cause}") from None
        except (self.ray.exceptions.WorkerCrashedError,
                self.ray.exceptions.NodeDiedError) as exc:
            raise BadInput(f"{what}: its Ray worker died {RETRIES + 1} times "
                           f"({type(exc).__name__}); see `ray logs` on the cluster") from None
        received = time.time()
        run = out["ended"] - out["started"]
        n = out["node"]
        record = {"what": what, "node_ip": n["ip"], "node_id": n["node_id"],
                  "cpus": cpus, "gpus": gpus, "resource": node["resource"] if node else None,
                  "run_s": round(run, 3), "wall_s": round(received - submitted, 3),
                  "overhead_s": round(received - submitted - run, 3),
                  # clock times, to tell waiting for a free CPU from Ray's own cost
                  "submitted_at": round(submitted, 3), "started_at": round(out["started"], 3),
                  "ended_at": round(out["ended"], 3)}
        with self._lock:
            self.records.append(record)
        self.log(f"ray    {what} on {n['ip']} ({n['node_id'][:8]}): {run:.1f} s, "
                 f"{received - submitted - run:.2f} s in Ray")
        return out["value"], n

    def run_step(self, what: str, payload: dict[str, Any], parent: ModelRef, dataset,
                 training: bool) -> dict[str, Any]:
        """A step on a worker (work.run_step); training asks for a GPU when there is one."""
        gpus = 1 if training and self.gpus() >= 1 else 0
        cpus = self.cpus_per_task
        payload = {**payload, "threads": int(cpus) if training else 0}
        value, _ = self.call(what, work.run_step, payload, parent, self.store(), dataset,
                             cpus=cpus, gpus=gpus, fresh=training)
        return value

    def summary(self) -> dict[str, Any]:
        nodes = self.nodes()
        return {"kind": self.kind, "address": self.address,
                "nodes": [{"ip": n["NodeManagerAddress"], "node_id": n["NodeID"],
                           "resources": {k: v for k, v in n.get("Resources", {}).items()
                                         if not k.startswith(("node:", "memory",
                                                              "object_store"))}}
                          for n in nodes],
                "cpus_per_task": self.cpus_per_task, "tasks": list(self.records)}

    def close(self) -> None:
        self.ray.shutdown()
