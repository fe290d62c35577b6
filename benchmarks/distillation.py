"""Distillation against training on labels alone, on the same student, data and budget.

    python benchmarks/distillation.py [--recipe recipes/fashion-distill.yaml] [--fractions 1,0.1]

Takes the teacher, the dataset and the distill step of the recipe (Fashion-MNIST by default:
digits are too easy to tell the methods apart) and, for every labeled fraction, trains the
recipe's student twice from the same seed:

- labels: `swap`, cross-entropy on the labeled share only;
- distill: `distill`, the teacher's soft targets on every training image plus the labels
  of the labeled share (the rest are unlabeled: the teacher labels them).

With fewer labels the labels-only run gets proportionally more epochs, so both runs take
about the same number of optimizer steps; both stop early on the validation split. One
build measures everything, so the accuracies come from the same test images and the same
process. Writes benchmarks/results/distillation.json and prints a table; the numbers are
reported whatever they show.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from optimizer import hostinfo
from optimizer.build.run import run
from optimizer.cache import Cache, default_root
from optimizer.progress import Progress
from optimizer.recipe.schema import Recipe
from optimizer.recipe.yamlfile import load as load_yaml

ROOT = Path(__file__).resolve().parent.parent


def experiment(recipe_file: Path, fractions: list[float]) -> Recipe:
    """The recipe with its steps replaced by one labels-only and one distilled student per
    fraction, all fed by the recipe's teacher (the source)."""
    data = load_yaml(recipe_file).data
    distill = next(s for s in data["steps"] if s["step"] == "distill")
    train = distill.get("train", {})
    steps = []
    for f in fractions:
        tag = f"{round(f * 100):g}pct"
        base = {k: v for k, v in distill.items() if k not in ("step", "name", "input",
                                                                 "labeled_fraction")}
        labels_train = {**train, "epochs": round(train.get("epochs", 30) / f)}
        if train.get("patience"):
            labels_train["patience"] = round(train["patience"] / f)
        steps.append({"step": "swap", "name": f"labels-{tag}", "input": "source",
                      "labeled_fraction": f, "train": labels_train,
                      **{k: v for k, v in base.items()
                         if k in ("student", "candidates")}})
        steps.append({**base, "step": "distill", "name": f"distill-{tag}", "input": "source",
                      "labeled_fraction": f})
    data = {**data, "name": f"{data['name']}-experiment", "steps": steps, "package": {},
            "validate": {**data.get("validate", {}), "max_accuracy_drop": 100,
                         "min_accuracy": None, "max_latency_ms": None, "max_model_mb": None}}
    return Recipe.model_validate(data, context={"base": recipe_file.parent.resolve()})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", type=Path, default=ROOT / "recipes/fashion-distill.yaml")
    ap.add_argument("--fractions", default="1,0.1")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/distillation.json")
    args = ap.parse_args()
    fractions = [float(f) for f in args.fractions.split(",")]
    recipe = experiment(args.recipe, fractions)
    t0 = time.perf_counter()
    result = run(recipe, args.recipe, ROOT / "artifacts" / recipe.name, Cache(default_root()),
                 Progress())
    r = result.report
    teacher = r["artifacts"][0]
    rows = []
    for a in r["artifacts"][1:]:
        info, v = a["info"], a["validation"]
        rows.append({
            "run": a["name"], "method": info["method"], "student": info["student"],
            "params": info["params"], "labeled": info["labeled"],
            "unlabeled": info["unlabeled"], "test_accuracy": v["accuracy"],
            "agreement_with_teacher": v["agreement"],
            "epochs": info["training"]["epoch"], "best_epoch": info["training"]["best_epoch"],
            "best_val_accuracy": info["training"]["best_val"],
            "train_seconds": round(sum(info["training"]["history"]["seconds"]), 1),
            # a cached run's seconds are from the build that trained it
            "trained_in_this_run": not a["cached"],
        })
    by = {x["run"]: x for x in rows}
    gains = {f"{round(f * 100):g}pct": round(
        by[f"distill-{round(f * 100):g}pct"]["test_accuracy"]
        - by[f"labels-{round(f * 100):g}pct"]["test_accuracy"], 3) for f in fractions}
    doc = {
        "recipe": str(args.recipe.relative_to(ROOT)) if args.recipe.is_relative_to(ROOT)
        else str(args.recipe),
        "dataset": r["dataset"], "host": hostinfo.cpu(),
        "teacher": {"name": teacher["info"].get("architecture"),
                    "params": teacher["info"].get("params"),
                    "test_accuracy": teacher["validation"]["accuracy"]},
        "test_samples": teacher["validation"]["samples"],
        "distill_settings": {k: v for k, v in recipe.steps[1].model_dump(mode="json").items()
                             if k in ("temperature", "soft_weight", "train")},
        "runs": rows,
        "distill_minus_labels_points": gains,
        "seconds": round(time.perf_counter() - t0, 1),
        "cache": {k: r["cache"][k] for k in ("hits", "misses", "all_cached")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"teacher {doc['teacher']['name']} ({doc['teacher']['params']:,} params): "
          f"{doc['teacher']['test_accuracy']:.2f}% on {doc['test_samples']} test images")
    print(f"{'run':<16}{'labeled':>9}{'unlabeled':>10}{'test %':>9}{'epochs':>8}{'train s':>9}")
    for x in rows:
        print(f"{x['run']:<16}{x['labeled']:>9}{x['unlabeled']:>10}{x['test_accuracy']:>9.2f}"
              f"{x['epochs']:>8}{x['train_seconds']:>9.1f}")
    if r["cache"]["all_cached"]:
        print("every run came from the cache: its seconds are from the build that trained it")
    for tag, gain in gains.items():
        print(f"distillation minus labels alone at {tag} labels: {gain:+.2f} points")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
