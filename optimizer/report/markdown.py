"""report.md: the trade-off table a person reads, rendered from report.json."""

from __future__ import annotations

from typing import Any


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def render(r: dict[str, Any]) -> str:
    t, h = r["target"], r["host"]
    vs = h["versus_target"]
    lines = [
        f"# {r['recipe']['name']}",
        "",
        f"Built by optimizer {r['tool']['version']} on {r['started']} in {r['seconds']} s "
        f"(cache: {r['cache']['hits']} hits, {r['cache']['misses']} misses).",
        "",
        f"**Ship:** `{r['ship_file']}`" if r["ship"] else f"**Nothing to ship:** {r['failure']}",
        "",
        "## Artifacts",
        "",
        "| artifact | step | size | accuracy | drop | agreement | p50 ms | p95 ms | load ms "
        "| est. $/1M | gates |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    src_acc = r["artifacts"][0]["validation"]["accuracy"]
    for a in r["artifacts"]:
        v, lat = a["validation"], a["validation"]["latency"]
        gates = ", ".join(
            f"{g['gate']} {'ok' if g['passed'] else 'FAIL'}" for g in a["gates"]
        ) or "-"
        mark = " **(ship)**" if a["name"] == r["ship"] else ""
        lines.append(
            f"| {a['name']}{mark} | {a['step']} | {_mb(v['size_bytes'])} | {v['accuracy']:.2f}% "
            f"| {src_acc - v['accuracy']:+.2f} | {v['agreement']:.2f}% | {lat['p50_ms']:.3f} "
            f"| {lat['p95_ms']:.3f} | {lat['load_ms']:.1f} "
            f"| {a['estimate']['cost_per_million_usd']:.4f} | {gates} |"
        )
    lines += [
        "",
        f"Accuracy is top-1 on {r['artifacts'][0]['validation']['samples']} test images; drop "
        "is in points against the source; agreement is top-1 agreement with the source.",
        f"Latency is batch 1 over {r['artifacts'][0]['validation']['latency']['runs']} runs "
        f"after {r['artifacts'][0]['validation']['latency']['warmup']} warm-up runs, with "
        f"{t['threads']} intra-op thread(s) for {t['memory_mb']} MB ({t['vcpus']} vCPU). "
        "Estimated cost per 1M requests scales p50 by the CPU share; no CPU quota was applied.",
        "",
        "## Machine and target",
        "",
        f"- CPU: {h['model']} ({h['arch']}), {h['usable_cores']} usable cores",
        f"- ISA flags: {' '.join(h['flags']) or 'none read'}",
        f"- Target: {t['name']} ({t['isa']}), runtime {t['runtime']}, {t['memory_mb']} MB",
        f"- Host extensions the target does not promise: "
        f"{', '.join(vs['host_extra_flags']) or 'none'}",
        "",
        "| artifact | ISA cap |",
        "|---|---|",
    ]
    for a in r["artifacts"]:
        lines.append(f"| {a['name']} | {a['validation']['latency'].get('isa_cap', '-')} |")
    lines += ["", "## Steps", ""]
    for a in r["artifacts"]:
        info = {k: v for k, v in a["info"].items() if k not in ("history", "ops", "ops_before",
                                                               "ops_after")}
        lines.append(f"- **{a['name']}** ({a['step']}, {'cached' if a['cached'] else 'built'}"
                     f" in {a['build_seconds']} s): {info}")
    lines += ["", "Libraries: " + ", ".join(f"{k} {v}" for k, v in r["libraries"].items()), ""]
    return "\n".join(lines)
