"""report.md: the trade-off table a person reads, rendered from report.json."""

from __future__ import annotations

from typing import Any

from optimizer.lambda_local.session import INIT_PARTS, describe_init
from optimizer.report import migration, packages, runtimes


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def _students(r: dict[str, Any]) -> list[str]:
    """Teacher beside the shipped student, then every candidate, then the plot."""
    lines: list[str] = []
    if ts := r.get("teacher_student"):
        lines += ["", "## Teacher and student", "",
                  "| | artifact | params | accuracy | p50 ms | size |",
                  "|---|---|---:|---:|---:|---:|"]
        sides = [("teacher", ts["teacher"]), ("teacher as ONNX", ts.get("teacher_onnx")),
                 ("student (ship)", ts["student"])]
        for label, side in sides:
            if side is None:
                continue
            params = f"{side['params']:,}" if side.get("params") else "-"
            lines.append(f"| {label} | {side['name']} | {params} | {side['accuracy']:.2f}% | "
                         f"{side['p50_ms']:.3f} | {_mb(side['size_bytes'])} |")
        lines += ["", f"The student is {ts['accuracy_delta']:+.2f} points against the teacher, "
                  f"{_ratio(ts.get('speedup_vs_teacher_onnx'))} faster and "
                  f"{_ratio(ts.get('smaller_vs_teacher_onnx'))} smaller than the teacher as "
                  f"ONNX ({_ratio(ts['speedup_vs_teacher'])} and "
                  f"{_ratio(ts['smaller_vs_teacher'])} against the teacher as trained), "
                  "measured in this run."]
    if cands := r.get("candidates"):
        lines += ["", f"## Candidates (ship preference: {r.get('prefer', 'speed')})", "",
                  "| student | method | params | labels / unlabeled | epochs (best) | "
                  "best val | best artifact | accuracy | p50 ms | size | passed |",
                  "|---|---|---:|---|---|---:|---|---:|---:|---:|---|"]
        for c in cands:
            val = c["best_val_accuracy"]
            stop = " early" if c["stopped_early"] else ""
            resumed = f", resumed at {c['resumed_from']}" if c["resumed_from"] else ""
            shown_val = "-" if val is None else f"{val:.2f}%"
            best = "| - (no deployable artifact) | - | - | - | no |"
            if c["best_artifact"]:
                best = (f"| {c['best_artifact']} | {c['accuracy']:.2f}% | {c['p50_ms']:.3f} | "
                        f"{_mb(c['size_bytes'])} | {'yes' if c['best_passed'] else 'no'} |")
            lines.append(
                f"| {c['student']} | {c['method']} | {c['params'] or 0:,} | "
                f"{c['labeled']} / {c['unlabeled']} | {c['epochs']} ({c['best_epoch']}{stop}"
                f"{resumed}) | {shown_val} {best}")
        if sum(a["candidate"] for a in r["artifacts"]) >= 2:  # when pareto.svg was drawn
            lines += ["", "![accuracy against latency and against size; the dashed line is "
                      "the Pareto front](pareto.svg)"]
    return lines


def _value(v: Any) -> str:
    """A value as a person writes it: no brackets, quotes or None."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v) or "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_value(x)}" for k, x in v.items()) or "-"
    return str(v)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}%"


def _classes(r: dict[str, Any]) -> list[str]:
    """The source check, then source and shipped artifact class by class, in output order."""
    lines = ["", "## Classes", ""]
    ds, check = r["dataset"], r.get("source_check") or {}
    lines.append(f"{len(r['classes'])} classes in the model's output order; the order came "
                 f"from: {ds.get('classes_from', 'the dataset')}.")
    if check.get("verdict") == "ok":
        lines.append(f"The source scores {check['accuracy']:.2f}% on the test split (chance "
                     f"{check['chance']:.2f}%, best class order {check['best_order_accuracy']:.2f}"
                     "%): the classes are in the model's order.")
    elif check.get("verdict") == "no labels":
        lines.append("No labels: nothing checks that the source itself is right; artifacts are "
                     "judged by agreement with it.")
        if check.get("warning"):
            lines.append(f"**Warning:** {check['warning']}.")
    pc = r.get("per_class")
    if pc:
        what = "accuracy" if pc["basis"] == "accuracy" else "agreement"
        lines += ["", f"| # | class | test images | source {what} | {pc['artifact']} {what} "
                  "| drop |", "|---:|---|---:|---:|---:|---:|"]
        for row in pc["rows"]:
            drop = "-" if row["drop"] is None else f"{row['drop']:+.2f}"
            lines.append(f"| {row['index']} | {row['class']} | {row['n']} | "
                         f"{_pct(row['source'])} | {_pct(row['ship'])} | {drop} |")
        if pc.get("worst_class") is not None:
            lines += ["", f"Largest per-class drop: {pc['max_class_drop']:.2f} points "
                      f"('{pc['worst_class']}')."]
        if pc["basis"] != "accuracy":
            lines += ["", "Classes are the source's answers; 'test images' counts the images "
                      "the source put in each."]
    if r.get("confusion"):
        lines += ["", f"![confusion matrix of {r['confusion']['artifact']}](confusion.svg)"]
    return lines


def _ort_format(r: dict[str, Any]) -> list[str]:
    rows = [(a["name"], a["validation"]["ort_format"]) for a in r["artifacts"]
            if "ort_format" in a["validation"]]
    if not rows:
        return []
    return ["", "## ONNX Runtime format", "",
            "Beside each ONNX artifact: `NAME.ort` and `NAME.required_operators.config`, for "
            "an ONNX Runtime built with `--minimal_build --include_ops_by_config`. Load is "
            "the median session creation (1 thread) over 7 alternating rounds.", "",
            "| artifact | .ort size | operators | load .onnx ms | load .ort ms |",
            "|---|---:|---:|---:|---:|",
            *(f"| {name} | {_mb(o['bytes'])} | {o['operators']} | {o['load_ms_onnx']} | "
              f"{o['load_ms_ort']} |" for name, o in rows)]


def _cost(r: dict[str, Any]) -> list[str]:
    c = r.get("cost")
    if not c:
        return []
    head = f"**Cost per 1M requests at {c['memory_mb']} MB:** "
    if "usd" not in c:
        return [head + f"${c['warm_only_usd']:.4f} warm ({c['note']})", ""]
    return [head + f"${c['usd']:.4f} with {c['cold_starts_per_1000']:g} cold starts per 1,000 "
            f"requests, each billed {c['cold_request_ms']:.0f} ms of init and first request "
            f"({c['cold_from']}); ${c['warm_only_usd']:.4f} if every request were warm "
            "(validate.cold_starts_per_1000 sets the share).", ""]


def init_table(rows: list[dict[str, Any]]) -> list[str]:
    """Where each size's Init Duration went (ms), as the handler's OPTIMIZER_INIT line says."""
    if not any(x.get("init_breakdown") for x in rows):
        return []
    out = ["", "Init Duration by part (ms):", "",
           "| memory MB | " + " | ".join(label for _, label in INIT_PARTS) + " | total |",
           "|---|" + "---|" * (len(INIT_PARTS) + 1)]
    for x in rows:
        parts = x.get("init_breakdown") or {}
        total = "-" if x.get("init_ms") is None else f"{x['init_ms']:.0f}"
        out.append(f"| {x['memory_mb']} | " + " | ".join(
            "-" if parts.get(k) is None else f"{parts[k]:.0f}" for k, _ in INIT_PARTS)
            + f" | {total} |")
    return out


def _timed_on(r: dict[str, Any]) -> list[str]:
    on = r.get("timed_on") or {}
    if not on:
        return []
    return [f"- Timed on: {on['where']}, {on['cpu']} ({on['arch']}; "
            f"{' '.join(on['flags']) or 'no flags read'}): {on['summary']}"]


def _executor(r: dict[str, Any]) -> list[str]:
    ex = r.get("executor") or {}
    if ex.get("kind") != "ray":
        runs = [f"{k}: {v['processes']} process(es) x {v['threads']} thread(s)"
                for k, v in (ex.get("candidates") or {}).items()]
        return [f"- Ran on: this machine{' (' + '; '.join(runs) + ')' if runs else ''}"]
    tasks = ex["tasks"]
    nodes = ", ".join(f"{n['ip']} ({n['node_id'][:8]}: "
                      + ", ".join(f"{v:g} {k}" for k, v in n["resources"].items()) + ")"
                      for n in ex["nodes"])
    lines = [f"- Ran on: Ray at {ex['address']}, {len(ex['nodes'])} node(s): {nodes}; "
             f"{len(tasks)} task(s), {ex['cpus_per_task']} CPU(s) each"
             + ("" if tasks else " (everything came from the driver's cache)")]
    if tasks:
        run = sum(t["run_s"] for t in tasks)
        over = sorted(t["overhead_s"] for t in tasks)
        lines.append(f"- Ray tasks: {run:.1f} s of work; time in Ray (queue, transfer, "
                     f"start) per task: median {over[len(over) // 2]:.2f} s, most "
                     f"{over[-1]:.2f} s")
    return lines


def _artifacts(r: dict[str, Any]) -> list[str]:
    """The trade-off table: one row per artifact, the ship marked."""
    src = r["artifacts"][0]["validation"]
    src_acc, src_p50 = src["accuracy"], src["latency"]["p50_ms"]
    lines = ["## Artifacts", "",
             "| artifact | step | size | accuracy | "
             + ("drop" if src_acc is not None else "mean KL")
             + " | agreement | p50 ms | p95 ms | vs source | first load ms | est. $/1M warm | "
             "gates |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for a in r["artifacts"]:
        v, lat = a["validation"], a["validation"]["latency"]
        gates = ", ".join(
            f"{g['gate']} {'ok' if g['passed'] else 'FAIL'}" for g in a["gates"]
        ) or "-"
        mark = " **(ship)**" if a["name"] == r["ship"] else ""
        acc, drop = ("no labels", f"{v.get('mean_kl', 0):.2g}") if src_acc is None else (
            f"{v['accuracy']:.2f}%", f"{src_acc - v['accuracy']:+.2f}")
        lines.append(
            f"| {a['name']}{mark} | {a['step']} | {_mb(v['size_bytes'])} | {acc} "
            f"| {drop} | {v['agreement']:.2f}% | {lat['p50_ms']:.3f} "
            f"| {lat['p95_ms']:.3f} | {lat['p50_ms'] / src_p50:.3f}x | {lat['load_ms']:.1f} "
            f"| {a['estimate']['cost_per_million_usd']:.4f} | {gates} |"
        )
    return lines


def _method(r: dict[str, Any]) -> list[str]:
    """What the numbers in the table are."""
    t, src = r["target"], r["artifacts"][0]["validation"]
    return [
        "",
        *(f"- {a['name']}: {g['gate']}: {g['why']}" for a in r["artifacts"] for g in a["gates"]
          if "why" in g),
        "",
        (f"Accuracy is top-1 on {src['samples']} test images; drop is in points against the "
         "source; agreement is top-1 agreement with the source."
         if src["accuracy"] is not None else
         f"No labels: every artifact is judged by its answers on {src['samples']} test images "
         "against the source's (top-1 agreement, and the mean KL divergence of its "
         "probabilities from the source's)."),
        f"Latency is batch 1 over {src['latency']['runs']} runs after "
        f"{src['latency']['warmup']} warm-up runs, with {t['threads']} intra-op thread(s) for "
        f"{t['memory_mb']} MB ({t['vcpus']} vCPU). Estimated cost per 1M requests scales p50 "
        "by the CPU share; no CPU quota was applied. First load is the model's first load in "
        "the timing process, runtime start-up included; the ONNX Runtime format table below "
        "has the median of warm loads.",
    ]


def _machine(r: dict[str, Any]) -> list[str]:
    t, h = r["target"], r["host"]
    lines = [
        "", "## Machine and target", "",
        f"- CPU: {h['model']} ({h['arch']}), {h['usable_cores']} usable cores",
        f"- ISA flags: {' '.join(h['flags']) or 'none read'}",
        f"- Target: {t['name']} ({t['isa']}), runtime {t['runtime']}, {t['memory_mb']} MB",
        f"- Host extensions the target does not promise: "
        f"{', '.join(h['versus_target']['host_extra_flags']) or 'none'}",
        *_timed_on(r), *_executor(r), "",
    ]
    caps: dict[str, list[str]] = {}
    for a in r["artifacts"]:
        caps.setdefault(a["validation"]["latency"].get("isa_cap", "-"), []).append(a["name"])
    if len(caps) == 1:
        return [*lines, f"- ISA cap: {next(iter(caps))}"]
    return [*lines, "", "| ISA cap | artifacts |", "|---|---|",
            *(f"| {cap} | {', '.join(names)} |" for cap, names in caps.items())]


def _steps(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Steps", ""]
    for a in r["artifacts"]:
        info = a["info"]
        shown = "; ".join(f"{k}: {_value(v)}" for k, v in info.items()
                          if k not in ("training", "ops", "ops_before", "ops_after", "why",
                                       "passes"))
        lines.append(f"- **{a['name']}** ({a['step']}, {'cached' if a['cached'] else 'built'}"
                     f" in {a['build_seconds']} s): {shown}")
        lines += [f"  - {why}" for why in info.get("why", [])]
        lines += [f"  - pass {p['pass']}: " + (f"{p['nodes_before']} -> {p['nodes_after']} nodes"
                                               if p["kept"] else f"rolled back ({p['reason']})")
                  for p in info.get("passes", [])]
    return lines


def _packages(r: dict[str, Any]) -> list[str]:
    if not (r.get("packages") or r.get("package_notes")):
        return []
    lines = ["", "## Packages", "", "| " + " | ".join(packages.COLUMNS) + " |",
             "|" + "---|" * len(packages.COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in packages.rows(r)]
    lines += [""] + [f"- {d}" for d in packages.digests(r)]
    lines += [f"- note: {n}" for n in r.get("package_notes", [])]
    lines += [f"- **not proved:** {g}" for g in r.get("proof_gaps", [])]
    lines += packages.slim_table(r)
    lines += [f"- {p['file']} proof (Python {p['proof']['python']}, this machine's CPU, "
              f"{p['proof'].get('caps', 'no cap')}): "
              f"{describe_init(p['proof'].get('init_breakdown'))}"
              for p in r.get("packages", []) if p.get("kind") == "zip"
              and p.get("proof", {}).get("init_breakdown")]
    return lines


def _tune(r: dict[str, Any]) -> list[str]:
    if not (tune := r.get("tune")):
        return []
    return ["", "## Memory sweep", "",
            f"{tune['invocations']} warm invocations after one cold start per size, "
            f"package {tune['kind']}; caps: {tune['rows'][0]['cap_method']}. "
            f"Recommended ({tune['strategy']}): {tune['recommended_memory_mb']} MB. "
            "Plot: package/tune.html.", "",
            "| memory MB | vCPU | init ms | mean ms | p50 ms | p95 ms | max MB | "
            "USD / 1M | errors |", "|---|---|---|---|---|---|---|---|---|",
            *(f"| {x['memory_mb']} | {x['vcpus']} | {x['init_ms']} | {x['mean_ms']} | "
              f"{x['p50_ms']} | {x['p95_ms']} | {x['max_memory_mb']} | "
              f"{x['cost_per_million_usd']} | {len(x['errors'])} |" for x in tune["rows"]),
            *init_table(tune["rows"])]


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# {r['recipe']['name']}",
        "",
        f"Built by optimizer {r['tool']['version']} on {r['started']} in {r['seconds']} s "
        f"(cache: {r['cache']['misses']} ran, {r['cache']['hits']} reused from earlier "
        f"builds, {r['cache'].get('shared', 0)} made earlier in this build and used again).",
        "",
        f"**Ship:** `{r['ship_file']}`" if r["ship"] else f"**Nothing to ship:** {r['failure']}",
        "",
        *_cost(r),
        *_artifacts(r),
        *_method(r),
        *_classes(r),
        *_students(r),
        *(migration.markdown(r["migration"]) if r.get("migration") else []),
        *_ort_format(r),
        *(runtimes.markdown(r["runtimes"]) if r.get("runtimes") else []),
        *_machine(r),
        *_steps(r),
        *_packages(r),
        *_tune(r),
        "", "Libraries: " + ", ".join(f"{k} {v}" for k, v in r["libraries"].items()), "",
    ]
    return "\n".join(lines)
