"""Terminal tables for `build` and `targets`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from optimizer.lambda_local.session import describe_init
from optimizer.package.sizes import MIB
from optimizer.report import packages, runtimes


def cache_line(r: dict[str, Any]) -> str:
    """What ran and what was reused, in the same words as the log lines above it."""
    c = r["cache"]
    shared = f", {c['shared']} made earlier in this build and used again" if c.get(
        "shared") else ""
    if c["all_cached"]:
        return (f"everything came from the cache ({c['hits']} entries{shared}) in "
                f"{r['seconds']} s")
    reused = f"{c['hits']} reused from earlier builds" if c["hits"] else "nothing reused"
    return f"cache: {c['misses']} ran, {reused}{shared}; {r['seconds']} s"


def wide_console(stderr: bool = False) -> Console:
    """Rich sizes tables to the terminal, and to 80 columns when piped or logged, which cuts
    names and prices mid-word; a log is read later, so give it room."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


def print_summary(r: dict[str, Any], out_dir: Path, console: Console | None = None) -> None:
    console = console or wide_console()
    table = Table(title=f"{r['recipe']['name']}: {r['target']['threads']} thread(s), "
                  f"{r['target']['memory_mb']} MB, {r['host']['model']}")
    longest = max(len(a["name"]) for a in r["artifacts"]) + 2
    table.add_column("artifact", no_wrap=True, min_width=min(longest, 40))
    for col in ("size MB", "accuracy %", "agreement %", "p50 ms", "p95 ms", "load ms",
                "gates"):
        table.add_column(col, justify="left" if col == "gates" else "right")
    for a in r["artifacts"]:
        v = a["validation"]
        lat = v["latency"]
        name = a["name"] + (" *" if a["name"] == r["ship"] else "")
        gates = "ok" if a["passed"] else ", ".join(g["gate"] for g in a["gates"] if not g["passed"])
        acc = "no labels" if v["accuracy"] is None else f"{v['accuracy']:.2f}"
        table.add_row(escape(name), f"{v['size_bytes'] / 1e6:.2f}", acc,
                      f"{v['agreement']:.2f}", f"{lat['p50_ms']:.3f}", f"{lat['p95_ms']:.3f}",
                      f"{lat['load_ms']:.1f}", escape(gates))
    console.print(table)
    if on := r.get("timed_on"):
        console.print(escape(f"latency timed on {on['where']}: {on['summary']}"),
                      highlight=False)
    if r.get("packages"):
        pkg = r["packages"][0]
        pt = Table(title=escape(f"packages of {pkg['model']} ({pkg['model_runtime']})"))
        for col in packages.COLUMNS:
            pt.add_column(col, justify="right" if "MiB" in col else "left")
        for row in packages.rows(r, compact=True):
            pt.add_row(*map(escape, row))
        console.print(pt)
    for note in r.get("package_notes", []):
        console.print(f"[yellow]note[/]: {escape(note)}")
    for gap in r.get("proof_gaps", []):
        console.print(f"[{'red' if r.get('require_proof') else 'yellow'}]not proved[/]: "
                      f"{escape(gap)}")
    console.print(cache_line(r))
    for line in runtimes.console_lines(r["runtimes"]) if r.get("runtimes") else []:
        console.print(escape(line))
    if r["ship"]:
        which = "smallest" if r.get("prefer") == "size" else "fastest"
        console.print(escape(f"ship: {out_dir / r['ship_file']} with {r.get('ship_runtime')}  "
                             f"(* {which} within the gates)"))
    if ts := r.get("teacher_student"):
        console.print(escape(
            f"student {ts['student']['name']}: {ts['accuracy_delta']:+.2f} points against the "
            f"teacher, {ts.get('speedup_vs_teacher_onnx', ts['speedup_vs_teacher'])}x faster, "
            f"{ts.get('smaller_vs_teacher_onnx', ts['smaller_vs_teacher'])}x smaller "
            f"(teacher as {'ONNX' if 'teacher_onnx' in ts else 'trained'})"))
    _print_migration(r.get("migration") or {}, console)
    console.print(escape(f"report: {out_dir / 'report.md'}"))


def _print_migration(m: dict[str, Any], console: Console) -> None:
    if par := m.get("conversion"):
        p = par["parity"]
        console.print(f"MXNet -> ONNX: max |diff| {p['max_abs_diff']:.3g} over {p['samples']} "
                      f"test images, top-1 agreement {p['top1_agreement']:.4f}")
        if (h := par.get("handler")) and h["verdict"] != "not run":
            console.print(escape(f"handler {h['handler']}: {h['top1_agreement']:.2f}% top-1 "
                                 f"agreement over {h['samples']} test images"))
    for b in m.get("cost", {}).get("baselines", []):
        if below := b["lambda_cheaper_below_images_per_hour"]:
            console.print(f"{b['setup']}: ${b['usd_per_million_images']} per 1M images at "
                          f"full load; Lambda is cheaper below {below:,} images/h")
        if above := b.get("instance_cheaper_above_images_per_month_by_batch"):
            console.print(f"{b['setup']} (${b['usd_per_month']}/month, at most "
                          f"{b['capacity_images_per_month']:,} images/month): "
                          + "; ".join(crossover_text(n, k, b['capacity_images_per_month'])
                                      for k, n in above.items()))


def crossover_text(images: int, batch: str, capacity: int) -> str:
    if images > capacity:
        return f"Lambda at batch {batch} is cheaper at any load it can serve"
    return f"cheaper above {images:,} images/month than Lambda at batch {batch}"


def print_targets(console: Console | None = None) -> None:
    from optimizer import targets as t

    console = console or wide_console()
    tt = Table(title=f"Lambda targets ({t.TARGETS_VERSION})")
    for col in ("target", "arch", "ISA", "emulate as", "$/GB-s", "note"):
        tt.add_column(col)
    for tg in t.TARGETS.values():
        tt.add_row(tg.name + (" (opt-in)" if tg.opt_in else ""), tg.arch, tg.isa, tg.cpu,
                   f"{tg.price_gb_s:.10f}", tg.note)
    console.print(tt)
    rt = Table(title="Runtimes")
    for col in ("runtime", "python", "OS", "glibc"):
        rt.add_column(col)
    for r in t.RUNTIMES.values():
        rt.add_row(r.name, r.python, r.os, r.glibc)
    console.print(rt)
    it = Table(title="Inference runtimes (recipe `runtimes.candidates`)")
    for col in ("name", "runs", "installs", "architectures", "ISA cap"):
        it.add_column(col)
    for ir in t.ENGINES.values():
        it.add_row(ir.name, ", ".join(ir.formats), " ".join(ir.requirements),
                   ", ".join(ir.arches), ir.isa_cap)
    console.print(it)
    mt = Table(title="Memory to vCPU")
    mt.add_column("memory MB", justify="right")
    mt.add_column("vCPUs", justify="right")
    mt.add_column("threads", justify="right")
    for mb in (128, 512, 1024, 1536, 1769, 3008, 5307, 7076, 8845, 10240):
        mt.add_row(str(mb), f"{t.vcpus(mb):.3f}", str(t.threads_for(mb)))
    console.print(mt)
    bt = Table(title="Server baselines (validate.baselines)")
    for col in ("name", "hardware", "$/hour", "images/s", "$ per 1M images", "workload"):
        bt.add_column(col)
    for b in t.BASELINES.values():
        bt.add_row(b.name, b.hardware, f"{b.usd_per_hour:.3f}", f"{b.images_per_second:g}",
                   f"{b.usd_per_million_images:.4f}", b.workload)
    console.print(bt)
    lim = t.LIMITS
    console.print(
        f"Limits: zip upload {lim.zip_upload_bytes:,} B, unzipped (with layers) "
        f"{lim.unzipped_bytes:,} B, {lim.max_layers} layers, image {lim.image_bytes:,} B, "
        f"image config {lim.image_config_bytes:,} B, payload {lim.payload_bytes:,} B, init "
        f"{lim.init_timeout_s:g} s, timeout {lim.max_timeout_s:g} s, memory "
        f"{lim.memory_min_mb}..{lim.memory_max_mb} MB. Requests ${t.PRICE_PER_REQUEST * 1e6:.2f}"
        f" per 1M, billed per {t.BILLING_GRANULARITY_MS} ms."
    )


def print_sizes(doc: dict[str, Any], console: Console | None = None) -> None:
    """`optimizer check-size`: each limit, then the largest files or layers of each part."""
    console = console or wide_console()
    lt = Table(title=f"Lambda limits ({doc['limits_version']})")
    for col in ("", "what", "size", "limit", "used"):
        lt.add_column(col, justify="right" if col in ("size", "limit", "used") else "left")
    for x in doc["limits"]:
        counted = x["what"] == "layers"
        unit, div = ("KiB", 1024) if x["limit"] < MIB else ("MiB", MIB)
        lt.add_row("[green]ok[/]" if x["ok"] else "[red]OVER[/]", escape(x["what"]),
                   str(x["size"]) if counted else f"{x['size'] / div:,.2f} {unit}",
                   str(x["limit"]) if counted else f"{x['limit'] / div:,.2f} {unit}",
                   f"{x['size'] / x['limit']:.0%}")
    console.print(lt)
    for part in doc["parts"]:
        what = "layers" if part["kind"] in ("image", "image-tarball") else "files"
        # a title rich would wrap mid-path at the table's width: a line of its own instead
        console.print(escape(f"{part['ref']} ({part['kind']}, {part['files']} {what}): "
                             f"{len(part['largest'])} largest"), soft_wrap=True)
        pt = Table()
        pt.add_column(what[:-1])
        pt.add_column("MiB", justify="right")
        for name, size in part["largest"]:
            pt.add_row(escape(name), f"{size / MIB:,.3f}")
        console.print(pt)
    if "elf" in doc:
        e = doc["elf"]
        console.print(f"shared objects: {e['files_checked']} checked for {e['arch']} and "
                      f"glibc {e['glibc']}")
    for problem in doc["problems"]:
        console.print(f"[red]problem[/]: {escape(problem)}")
    console.print("[green]fits[/]" if doc["ok"] else "[red]does not fit[/]")


def _print_batches(doc: dict[str, Any], console: Console) -> None:
    if not doc.get("batch_rows"):
        return
    t = Table(title=escape(f"images per invocation ({doc['event']})"))
    for col in ("MB", "batch", "p50 ms", "per image ms", "images/s", "$ / 1M images",
                "request share", "err"):
        t.add_column(col, justify="right", no_wrap=True)
    rec = doc.get("recommended") or {}
    for r in doc["batch_rows"]:
        mark = " *" if (r["memory_mb"], r["batch"]) == (rec.get("memory_mb"),
                                                        rec.get("batch")) else ""
        t.add_row(f"{r['memory_mb']}", f"{r['batch']}{mark}", f"{r['p50_ms']:.2f}",
                  *("-" if r[k] is None else f"{r[k]:g}" for k in (
                      "per_image_p50_ms", "images_per_second", "cost_per_million_images_usd",
                      "request_charge_share")), str(len(r["errors"])))
    console.print(t)
    if rec:
        console.print(f"recommended: {rec['memory_mb']} MB, {rec['batch']} images per "
                      f"invocation, ${rec['cost_per_million_images_usd']} per 1M images"
                      + (f" ({rec['cost_vs_batch_1']:.0%} of batch 1)"
                         if rec.get("cost_vs_batch_1") else ""))


def print_tune(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or wide_console()
    t = Table(title=escape(f"{doc['package']} ({doc['kind']}): {doc['invocations']} warm "
                           f"invocations per size, {doc['host'].get('model', '')}"))
    for col in ("MB", "vCPU", "init ms", "1st ms", "mean ms", "p50 ms", "p95 ms", "RSS MB",
                "$ / 1M", "err"):
        t.add_column(col, justify="right", no_wrap=True)
    for r in doc["rows"]:
        mark = " *" if r["memory_mb"] == doc["recommended_memory_mb"] else ""
        t.add_row(f"{r['memory_mb']}{mark}", f"{r['vcpus']:.3f}",
                  "-" if r["init_ms"] is None else f"{r['init_ms']:.0f}",
                  f"{r['cold_duration_ms']:.0f}", f"{r['mean_ms']:.2f}", f"{r['p50_ms']:.2f}",
                  f"{r['p95_ms']:.2f}", f"{r['max_memory_mb']:.0f}",
                  "-" if r["cost_per_million_usd"] is None else f"{r['cost_per_million_usd']:.4f}",
                  str(len(r["errors"])))
    console.print(t)
    console.print(f"caps: {doc['rows'][0]['cap_method'] if doc['rows'] else '-'}")
    for r in doc["rows"]:
        if r.get("init_breakdown"):
            console.print(escape(f"{r['memory_mb']} MB {describe_init(r['init_breakdown'])}"))
        for note in dict.fromkeys(r["notes"] + r["errors"]):
            console.print(escape(f"{r['memory_mb']} MB: {note}"))
    if c := doc.get("concurrency"):
        console.print(f"concurrency {c['instances']} at {c['memory_mb']} MB: "
                      f"{c['throughput_rps']} req/s, {c['errors']} errors, {c['cold_starts']} "
                      f"cold starts, p50 {c['p50_ms']} ms")
    if a := doc.get("always_on"):
        console.print(f"always-on ${a['instance_hourly_usd']}/h ({a['instance_vcpus']} vCPU): "
                      f"cheaper above {a['crossover_requests_per_month']:,} requests/month "
                      f"(it can serve {a['instance_capacity_requests_per_month']:,})")
    _print_batches(doc, console)
    rec = doc["recommended_memory_mb"]
    console.print(f"recommended ({doc['strategy']}): {rec} MB" if rec else
                  "no memory size ran without errors")
    for f in doc.get("files", []):
        console.print(f"wrote {f}")
