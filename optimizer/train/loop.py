"""The training loop: one objective for labels, teacher outputs or both, checkpointed each epoch.

A checkpoint is the model's weights, the optimizer's state (its step count drives the
learning-rate schedule), the best weights so far and the early-stopping counters, written
to a fresh folder and then named current with one rename. A killed run resumes from the
last complete epoch and, because batches are drawn per (seed, epoch), sees the same data an
uninterrupted run would have.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.train.augment import shift_zoom
from optimizer.train.config import TrainConfig

CURRENT = "current"
VAL_CHUNK = 256


@dataclass
class TrainData:
    x: np.ndarray  # model-ready NHWC float32
    labels: np.ndarray  # int64; -1 marks an image without a label
    teacher: np.ndarray | None  # teacher logits per image, or None for labels only
    val_x: np.ndarray | None
    val_y: np.ndarray | None
    fill: np.ndarray  # what a black pixel becomes after preprocessing, per channel

    def __post_init__(self) -> None:
        if self.teacher is None and (self.labels < 0).any():
            raise ValueError("images without labels need teacher outputs")


@dataclass(frozen=True)
class Objective:
    """Hinton et al.'s loss: soft_weight * T^2 * KL(teacher_T || student_T) + the rest * CE.

    Images without a label get the soft term alone.
    """

    temperature: float = 1.0
    soft_weight: float = 0.0

    def loss(self, n_classes: int):
        from keras import ops

        t, w = self.temperature, self.soft_weight

        def loss(y_true, logits):
            label = ops.cast(ops.maximum(y_true[:, 0], 0), "int32")
            has = y_true[:, 1]
            logp = ops.log_softmax(logits, axis=-1)
            ce = -ops.sum(ops.one_hot(label, n_classes) * logp, axis=-1)
            if w == 0:
                return ops.sum(ce * has) / ops.maximum(ops.sum(has), 1.0)
            teacher = y_true[:, 2:] / t
            kl = ops.sum(ops.softmax(teacher, axis=-1) * (
                ops.log_softmax(teacher, axis=-1) - ops.log_softmax(logits / t, axis=-1)),
                axis=-1) * (t * t)
            return ops.mean(has * ((1 - w) * ce + w * kl) + (1 - has) * kl)

        return loss


def _schedule(cfg: TrainConfig, steps_per_epoch: int):
    import keras

    total = cfg.epochs * steps_per_epoch
    warm = cfg.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warm else cfg.learning_rate,
        decay_steps=max(1, total - warm),
        alpha=1.0 if cfg.schedule == "constant" else 0.0,
        warmup_target=cfg.learning_rate if warm else None,
        warmup_steps=warm,
    )


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 in fixed-size chunks (padded), so the predict function is traced once."""
    hits = 0
    for i in range(0, len(x), VAL_CHUNK):
        chunk = x[i : i + VAL_CHUNK]
        n = len(chunk)
        if n < VAL_CHUNK:
            chunk = np.concatenate([chunk, np.zeros((VAL_CHUNK - n, *x.shape[1:]), x.dtype)])
        out = np.asarray(model.predict_on_batch(chunk))[:n]
        hits += int((out.argmax(axis=1) == y[i : i + n]).sum())
    return 100.0 * hits / max(1, len(x))


class Checkpoints:
    """Epoch folders under `root`; the file `current` names the last complete one."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def latest(self) -> tuple[Path, dict[str, Any]] | None:
        pointer = self.root / CURRENT
        if not pointer.is_file():
            return None
        folder = self.root / pointer.read_text().strip()
        try:
            return folder, json.loads((folder / "state.json").read_text())
        except (OSError, ValueError):
            return None  # a damaged checkpoint means starting over, not a crash

    def save(self, model, optimizer, state: dict[str, Any], best_improved: bool) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{state['epoch']:04d}"
        folder = self.root / f".{name}.tmp"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        model.save_weights(folder / "last.weights.h5")
        np.savez(folder / "optimizer.npz", *[np.asarray(v) for v in optimizer.variables])
        previous = self.latest()
        if best_improved or previous is None:
            model.save_weights(folder / "best.weights.h5")
        else:
            shutil.copyfile(previous[0] / "best.weights.h5", folder / "best.weights.h5")
        (folder / "state.json").write_text(json.dumps(state))
        os.replace(folder, self.root / name)
        tmp_pointer = self.root / f".{CURRENT}.tmp"
        tmp_pointer.write_text(name)
        os.replace(tmp_pointer, self.root / CURRENT)
        for old in self.root.glob("epoch-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def restore(folder: Path, model, optimizer) -> None:
        optimizer.build(model.trainable_variables)  # first, or Keras skips its saved slots
        model.load_weights(folder / "last.weights.h5")
        with np.load(folder / "optimizer.npz") as saved:
            values = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        if len(values) != len(optimizer.variables):
            raise ValueError("optimizer state does not match the model")
        for var, value in zip(optimizer.variables, values, strict=True):
            var.assign(value)


def _batch_targets(data: TrainData, idx: np.ndarray) -> np.ndarray:
    labels = data.labels[idx]
    cols = [np.maximum(labels, 0)[:, None], (labels >= 0)[:, None]]
    if data.teacher is not None:
        cols.append(data.teacher[idx])
    return np.concatenate(cols, axis=1).astype(np.float32)


def data_for(dataset, pre, x: np.ndarray, labels: np.ndarray,
             teacher: np.ndarray | None = None) -> TrainData:
    """Training inputs plus the dataset's validation split (if any) and the border fill."""
    from optimizer.data.dataset import prepared
    from optimizer.preprocess_spec import apply

    has_val = len(dataset.indices("val")) > 0
    return TrainData(x=x, labels=labels, teacher=teacher,
                     val_x=prepared(dataset, "val", pre) if has_val else None,
                     val_y=dataset.labels_of("val") if has_val else None,
                     fill=apply([np.zeros((1, 1), np.uint8)], pre)[0, 0, 0])


def train(spec, pre, n_classes: int, data: TrainData, cfg: TrainConfig, objective: Objective,
          ctx, step: str, out: Path) -> tuple[Any, dict[str, Any]]:
    """Build `spec` for `pre`'s input, train it (checkpointed in ctx.checkpoints), save it.

    Returns the saved probabilities model and the training record.
    """
    import keras

    from optimizer.errors import StepFailed
    from optimizer.train import nets

    keras.utils.set_random_seed(cfg.seed)
    logits_model, model = nets.build(spec, pre.channels, n_classes, *nets.channel_stats(data.x))
    try:
        result = fit(logits_model, data, cfg, objective, ctx.progress, ctx.checkpoints,
                     f"{step} {spec.label}", ctx.on_checkpoint)
    except FloatingPointError as exc:
        raise StepFailed(step, str(exc)) from None
    model.save(out)
    reproducible(out)
    return model, result


def reproducible(path: Path) -> None:
    """Keras writes the time of saving and memory addresses (`shared_object_id`) into a
    .keras file, so the same weights give other bytes, and another digest, every run; put
    the first in order of appearance, drop the second, and fix the zip members' times."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = [(i, z.read(i)) for i in z.infolist()]
    ids: dict[bytes, int] = {}
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as z:
        for info, data in members:
            if info.filename == "metadata.json":
                meta = json.loads(data)
                meta.pop("date_saved", None)
                data = json.dumps(meta, sort_keys=True).encode()
            elif info.filename == "config.json":
                data = re.sub(rb'"shared_object_id": (\d+)', lambda m: b'"shared_object_id": %d'
                              % ids.setdefault(m[1], len(ids) + 1), data)
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type = info.compress_type
            z.writestr(fixed, data)
    os.replace(tmp, path)


def _resume(store: Checkpoints, logits_model, optimizer, state: dict[str, Any], label: str,
            progress) -> dict[str, Any]:
    """The state of the latest checkpoint, its weights and optimizer slots restored; or the
    fresh `state` when there is none (or it is unusable)."""
    found = store.latest()
    if found is None:
        return state
    folder, saved = found
    try:
        Checkpoints.restore(folder, logits_model, optimizer)
        progress.log(f"[yellow]resume[/] {label} from its epoch {saved['epoch']} checkpoint")
        return {**saved, "resumed_from": saved["epoch"]}
    except (OSError, ValueError, KeyError) as exc:
        progress.log(f"[yellow]restart[/] {label}: checkpoint unusable ({exc})")
        return state


def _epoch(logits_model, data: TrainData, cfg: TrainConfig, epoch: int, batch: int,
           steps: int, label: str) -> float:
    """One epoch in a seeded order with seeded augmentation; its mean loss."""
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(data.x))
    aug_rng = np.random.default_rng([cfg.seed, epoch, 1])
    losses = []
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        xb = shift_zoom(data.x[idx], cfg.augment, aug_rng, data.fill)
        out = logits_model.train_on_batch(xb, _batch_targets(data, idx))
        losses.append(float(out[0] if isinstance(out, list | tuple) else out))
    loss = float(np.mean(losses))
    if not np.isfinite(loss):
        raise FloatingPointError(f"{label}: training loss is {loss} at epoch {epoch + 1}; "
                                 "lower the learning rate")
    return loss


def _record(state: dict[str, Any], cfg: TrainConfig, loss: float, val: float | None,
            seconds: float, has_val: bool) -> bool:
    """The epoch's numbers into `state`, early stopping decided; whether it improved."""
    epoch = state["epoch"]
    improved = val is not None and (state["best_val"] is None or val > state["best_val"])
    if improved:
        state.update(best_val=val, best_epoch=epoch + 1, wait=0)
    elif has_val:
        state["wait"] += 1
    if not has_val:
        state["best_epoch"] = epoch + 1
    hist = state["history"]
    hist["loss"].append(round(loss, 5))
    hist["val_accuracy"].append(None if val is None else round(val, 3))
    hist["seconds"].append(round(seconds, 2))
    state["epoch"] = epoch + 1
    if cfg.patience is not None and has_val and state["wait"] >= cfg.patience:
        state["stopped_early"] = True
    return improved


def fit(logits_model, data: TrainData, cfg: TrainConfig, objective: Objective, progress,
        checkpoints: Path, label: str,
        on_checkpoint: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Trains `logits_model` in place and leaves it holding the best validation weights;
    `on_checkpoint` sees each complete checkpoint (a Ray task sends it to the driver)."""
    import keras

    n = len(data.x)
    batch = min(cfg.batch_size, n)
    steps = max(1, n // batch)  # whole batches only: one traced shape, no tiny last step
    optimizer = keras.optimizers.Adam(_schedule(cfg, steps))
    n_classes = logits_model.output_shape[-1]
    logits_model.compile(optimizer=optimizer, loss=objective.loss(n_classes), jit_compile=False)
    store = Checkpoints(checkpoints)
    # `of` names the candidate in its checkpoint folder (whose name is a cache key)
    state = _resume(store, logits_model, optimizer, {
        "of": label, "epoch": 0, "best_val": None, "best_epoch": 0, "wait": 0,
        "history": {"loss": [], "val_accuracy": [], "seconds": []},
        "resumed_from": None, "stopped_early": False}, label, progress)
    has_val = data.val_x is not None and len(data.val_x) > 0
    with progress.task(label, total=cfg.epochs) as advance:
        advance(state["epoch"])
        while state["epoch"] < cfg.epochs and not state["stopped_early"]:
            epoch = state["epoch"]
            t0 = time.perf_counter()
            loss = _epoch(logits_model, data, cfg, epoch, batch, steps, label)
            val = _accuracy(logits_model, data.val_x, data.val_y) if has_val else None
            improved = _record(state, cfg, loss, val, time.perf_counter() - t0, has_val)
            store.save(logits_model, optimizer, state, improved or not has_val)
            if on_checkpoint is not None:
                on_checkpoint(checkpoints)
            note = f"epoch {epoch + 1}/{cfg.epochs} loss={loss:.4f}" + (
                f" val_acc={val:.2f}%" if val is not None else "")
            advance(1, note)
            progress.step_log(f"{label} {note} ({state['history']['seconds'][-1]:.1f} s)")
    latest = store.latest()
    if has_val and latest is not None:
        logits_model.load_weights(latest[0] / "best.weights.h5")
    return {k: state[k] for k in ("epoch", "best_epoch", "best_val", "stopped_early",
                                  "resumed_from", "history")}
