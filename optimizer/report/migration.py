"""The MXNet migration section: how the source was converted, and what it costs now.

A server is priced by the hour whether it works or not; Lambda by the request. The table
puts the old setup at full load around the clock (its best case) beside the measured Lambda
cost per image, and says at what steady load the two cross.
"""

from __future__ import annotations

from typing import Any

from optimizer import targets


def _lambda_rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured rows from the memory sweep where there is one, else the build's estimate."""
    if tune := r.get("tune"):
        return [{"setup": f"Lambda {x['memory_mb']} MB ({x['vcpus']} vCPU)",
                 "latency_ms": x["p50_ms"], "usd_per_million_images": x["cost_per_million_usd"],
                 "init_ms": x["init_ms"], "method": "measured: local Lambda run, CPU quota of "
                 "the memory size, warm p50", "recommended":
                 x["memory_mb"] == tune["recommended_memory_mb"]}
                for x in tune["rows"] if x["p50_ms"] is not None]
    ship = next((a for a in r["artifacts"] if a["name"] == r["ship"]), None)
    if ship is None:
        return []
    t = r["target"]
    return [{"setup": f"Lambda {t['memory_mb']} MB ({t['vcpus']} vCPU)",
             "latency_ms": ship["estimate"]["duration_ms"],
             "usd_per_million_images": ship["estimate"]["cost_per_million_usd"],
             "method": "estimated: " + ship["estimate"]["method"], "recommended": True}]


def section(r: dict[str, Any], baselines: list[str]) -> dict[str, Any] | None:
    source = r["artifacts"][0]["info"]
    if "parity" not in source and not baselines:
        return None
    out: dict[str, Any] = {}
    if "parity" in source:
        out["conversion"] = {k: source.get(k) for k in (
            "mxnet", "archive", "input_name", "input_shape", "mxnet_ops", "params", "conversion",
            "parity")}
        if "handler" in source:
            out["conversion"]["handler"] = source["handler"]
    if baselines:
        lam = _lambda_rows(r)
        best = min((x["usd_per_million_images"] for x in lam), default=None)
        rows = []
        for name in baselines:
            b = targets.BASELINES[name]
            per_m = b.usd_per_million_images
            rows.append({
                "setup": b.name, "hardware": b.hardware, "workload": b.workload,
                "images_per_second": b.images_per_second, "latency_ms": b.latency_ms,
                "usd_per_hour": round(b.usd_per_hour, 4),
                "usd_per_million_images": round(per_m, 4),
                # below this steady load, Lambda's per-request bill is the smaller one
                "lambda_cheaper_below_images_per_hour":
                    round(b.usd_per_hour / best * 1_000_000) if best else None,
                "lambda_vs_full_load": round(best / per_m, 4) if best else None,
                **_crossover(b, best, r.get("tune")),
            })
        sources = dict.fromkeys(targets.BASELINES[n].source for n in baselines)
        note = ("Baselines are published sizing for their own workload, not this model, "
                "kept at full load 24/7; Lambda rows are this model, billed per request; "
                "'cheaper below' uses the cheapest Lambda row")
        out["cost"] = {"baselines": rows, "lambda": lam, "source": "; ".join(sources),
                       "note": note}
    return out


def _crossover(b: targets.Baseline, batch_1: float | None,
               tune: dict[str, Any] | None) -> dict[str, Any]:
    """Images a month above which the always-on setup is the cheaper one, with Lambda at
    one image per invocation and at the recommended batch (as AWS's Elastic Inference
    migration post drew it), and how many the setup can serve in a month at all."""
    monthly = b.usd_per_hour * targets.HOURS_PER_MONTH
    above: dict[str, int] = {}
    if batch_1:
        above["1"] = round(monthly / batch_1 * 1_000_000)
    rec = (tune or {}).get("recommended")
    if rec and rec.get("cost_per_million_images_usd"):
        above[str(rec["batch"])] = round(monthly / rec["cost_per_million_images_usd"]
                                         * 1_000_000)
    return {"usd_per_month": round(monthly, 2),
            "capacity_images_per_month": round(b.images_per_second * 3600
                                               * targets.HOURS_PER_MONTH),
            "instance_cheaper_above_images_per_month_by_batch": above}


def markdown(m: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if c := m.get("conversion"):
        p = c["parity"]
        arc = c.get("archive") or {}
        lines += ["", "## From MXNet", "",
                  f"- MXNet {c['mxnet']} (isolated environment), input `{c['input_name']}` "
                  f"{c['input_shape']}, {c['params']:,} parameters, ops: "
                  f"{', '.join(c['mxnet_ops'])}",
                  f"- ONNX opset {c['conversion']['opset']} by mx2onnx in "
                  f"{c['conversion']['seconds']} s"]
        if arc:
            lines.append(f"- archive: layout {arc['layout']}, model `{arc['model_name']}`, "
                         f"handler `{arc['handler']}`, labels from synset.txt: "
                         f"{'yes' if arc['labels_from_synset'] else 'no'}")
            lines += [f"- note: {n}" for n in arc.get("notes", [])]
        lines.append(f"- parity on {p['samples']} test images: max |MXNet - ONNX| "
                     f"{p['max_abs_diff']:.3g}, {_relative(p)}, mean "
                     f"{p['mean_abs_diff']:.3g}, top-1 agreement {p['top1_agreement']:.4f}; "
                     + (f"MXNet accuracy {100 * p['mxnet_accuracy']:.2f}%, ONNX "
                        f"{100 * p['onnx_accuracy']:.2f}%" if "mxnet_accuracy" in p
                        else "no labels"))
        if h := c.get("handler"):
            lines.append(_handler_line(h))
    if cost := m.get("cost"):
        lines += ["", "## Cost against the old setup", "",
                  "| setup | workload | images/s | latency ms | $/hour | $ per 1M images | "
                  "Lambda cheaper below | setup cheaper above (images/month, by Lambda "
                  "batch) |", "|---|---|---:|---:|---:|---:|---:|---|"]
        for b in cost["baselines"]:
            below = b["lambda_cheaper_below_images_per_hour"]
            above = b.get("instance_cheaper_above_images_per_month_by_batch") or {}
            lines.append(f"| {b['setup']} | {b['workload']} | {b['images_per_second']} | "
                         f"{b['latency_ms'] or '-'} | {b['usd_per_hour']} | "
                         f"{b['usd_per_million_images']} | "
                         f"{f'{below:,} images/h' if below else '-'} | "
                         + (", ".join(f"{n:,} at batch {k}" + (
                             " (more than it serves)" if n > b["capacity_images_per_month"]
                             else "") for k, n in above.items()) or "-") + " |")
        for x in cost["lambda"]:
            mark = " (recommended)" if x["recommended"] else ""
            lines.append(f"| {x['setup']}{mark} | this model | - | {x['latency_ms']} | per "
                         f"request | {x['usd_per_million_images']} | - | - |")
        lines += ["", f"Baselines: {cost['source']}. {cost['note']}.",
                  f"Lambda rows: {cost['lambda'][0]['method'] if cost['lambda'] else '-'}."]
    return lines


def _relative(p: dict[str, Any]) -> str:
    if "max_rel_diff" not in p:  # reports from before relative parity
        return f"allowed {p['max_abs_diff_allowed']:g}"
    allowed = f"allowed {p['max_rel_diff_allowed']:g}" + (
        f", and {p['max_abs_diff_allowed']:g} absolute" if p.get("max_abs_diff_allowed") else "")
    return f"{p['max_rel_diff']:.3g} of the outputs' size ({allowed})"


def _handler_line(h: dict[str, Any]) -> str:
    if h["verdict"] == "not run":
        return f"- handler `{h['handler']}` not run here: {h['reason']}"
    scores = (f", scores within {h['max_score_diff']:.3g}" if h.get("max_score_diff")
              is not None else ", no scores in its answers")
    return (f"- handler agreement: `{h['handler']}` run on {h['samples']} test images "
            f"({h['image_format'].upper()}) agrees with the converted model on "
            f"{h['top1_agreement']:.2f}% top-1 (at least {h['min_agreement']:g}%){scores}")
