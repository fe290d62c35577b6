"""The `optimizer` command: thin; parses, calls, prints. Exit codes: 0 ok, 1 gate, 2 input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import typer

from optimizer import HASH_SEED, __version__
from optimizer.errors import EXIT_BAD_INPUT, EXIT_GATE, EXIT_OK, BadInput, OptimizerError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Build small, fast, validated AWS Lambda artifacts from image models.")

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
RecipeArg = Annotated[Path, typer.Argument(help="recipe YAML file", show_default=False)]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"optimizer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """optimizer: trained image models in, Lambda-ready artifacts out."""


# where --json documents go: the real stdout, which _guard keeps for them alone
_documents: list[Any] = []


def _emit(as_json: bool, doc: dict[str, Any], text: Callable[[], None]) -> None:
    if as_json:
        out = _documents[-1] if _documents else sys.stdout
        out.write(json.dumps(doc, indent=2) + "\n")
        out.flush()
    else:
        text()


@contextlib.contextmanager
def _stdout_for_documents(as_json: bool) -> Iterator[None]:
    """With --json, stdout holds one document and nothing else: whatever libraries print
    meanwhile (Ray's driver reports a dead worker on stdout, native code writes to fd 1)
    goes to stderr instead."""
    if not as_json:
        yield
        return
    previous = sys.stdout
    previous.flush()
    try:
        real_fd = previous.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a test runner's buffer
        real_fd = False
    out = os.fdopen(os.dup(1), "w") if real_fd else previous
    if real_fd:
        os.dup2(2, 1)
    sys.stdout = sys.stderr
    _documents.append(out)
    try:
        yield
    finally:
        _documents.pop()
        sys.stdout = previous
        sys.stderr.flush()
        if real_fd:
            out.flush()
            os.dup2(out.fileno(), 1)
            out.close()


_signalled: list[int] = []


def _importing(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Raises KeyboardInterrupt so `finally` blocks remove temporary folders on SIGTERM too.

    Not inside an import: an exception raised while a native module initialises (onnx's
    enums, via pybind11) aborts the process, leaving its temporary folders behind. There
    the signal is delivered again 50 ms later, until the import is done.
    """
    if _importing(frame):
        main = threading.main_thread().ident
        threading.Timer(0.05, signal.pthread_kill, (main, signum)).start()
        return
    _signalled.append(signum)
    raise KeyboardInterrupt


def _interrupted() -> NoReturn:
    typer.echo("interrupted; nothing was published", err=True)
    raise typer.Exit(130) from None


def _guard(as_json: bool, fn: Callable[[], int]) -> None:
    """Runs a command; known failures become one line on stderr (or JSON) and an exit code."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    with _stdout_for_documents(as_json):
        code = _documented(as_json, fn)
    raise typer.Exit(code)


def _documented(as_json: bool, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except KeyboardInterrupt:
        _interrupted()
    except Exception as exc:
        if _signalled:
            # the signal landed inside native code (TensorFlow) and came back as its error
            _interrupted()
        if not isinstance(exc, OptimizerError):
            raise
        lines = exc.lines
        if as_json:
            doc = {"ok": False, "exit_code": exc.exit_code, "error": lines[0]}
            if len(lines) > 1:
                doc["errors"] = lines
            if isinstance(getattr(exc, "record", None), dict):
                doc["source_check"] = exc.record
            _emit(True, doc, lambda: None)
        for line in lines:
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(exc.exit_code) from None


@app.command()
def build(
    recipe: RecipeArg,
    out: Annotated[Path | None, typer.Option(help="output folder [default: artifacts/NAME]")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="ignore the cache; rebuild all")]
    = False,
    cache_dir: Annotated[Path | None, typer.Option(
        help="cache folder [default: $OPTIMIZER_CACHE or ~/.cache/optimizer]")] = None,
    prefer: Annotated[str | None, typer.Option(
        help="ship the fastest ('speed') or the smallest ('size') artifact that passes "
        "[default: the recipe's validate.prefer]")] = None,
    require_proof: Annotated[bool, typer.Option(
        "--require-proof", help="exit 1 when a package could not be proved on the target's "
        "CPU (no qemu-user or debootstrap here) [default: the recipe's "
        "validate.require_proof]")] = False,
    retry: Annotated[bool, typer.Option(
        "--retry", help="ask again what failed before and was remembered (a wheel the "
        "package index did not have)")] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", envvar="OPTIMIZER_RAY", help="run training, teacher outputs, conversions "
        "and scoring as tasks on the Ray cluster at HEAD:PORT (or `auto`); this machine "
        "keeps the cache and the output [default: $OPTIMIZER_RAY, else local processes]")]
    = None,
    ray_cpus: Annotated[int, typer.Option(
        "--ray-cpus", min=1, max=256, help="CPUs each Ray task asks for (training threads "
        "follow it)")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """Run a recipe end to end and write its artifacts and report."""
    _guard(as_json, lambda: _build(recipe, out, force, cache_dir, prefer, require_proof, retry,
                                   ray, ray_cpus, as_json))


def _build(recipe: Path, out: Path | None, force: bool, cache_dir: Path | None,
           prefer: str | None, require_proof: bool, retry: bool, ray: str | None,
           ray_cpus: int, as_json: bool) -> int:
    from optimizer.build.run import Options
    from optimizer.build.run import build as do_build
    from optimizer.cache import Cache, default_root
    from optimizer.progress import Progress
    from optimizer.recipe.load import load_recipe

    if prefer not in (None, "speed", "size"):
        raise BadInput(f"--prefer must be 'speed' or 'size', got {prefer!r}")
    parsed = load_recipe(recipe)
    progress = Progress()
    cache = Cache(cache_dir or default_root())
    executor = None
    if ray:  # connects (or fails in one line) before any work
        from optimizer.build.ray.executor import RayExecutor

        executor = RayExecutor(ray, cache.root, progress.log, ray_cpus)
    try:
        if parsed.uses_tensorflow():
            from optimizer.quiet import import_tensorflow

            import_tensorflow()
        result = do_build(parsed, recipe, out, cache, progress, Options(
            force=force, prefer=prefer, require_proof=require_proof, retry=retry,
            executor=executor))
    finally:
        if executor is not None:
            executor.close()
    r = result.report

    def text() -> None:
        from optimizer.report.console import print_summary

        print_summary(r, result.out_dir, progress.console)

    _emit(as_json, {"ok": r["passed"], "exit_code": result.exit_code,
                    "out_dir": str(result.out_dir), **r}, text)
    if not r["passed"]:
        typer.echo(f"error: {'' if r['ship'] else 'gate failed: '}{r['failure']}", err=True)
    return EXIT_OK if r["passed"] else EXIT_GATE


@app.command()
def check(recipes: Annotated[list[Path], typer.Argument(
        help="recipe YAML files (a shell glob gives several)", show_default=False)],
          as_json: JsonOpt = False) -> None:
    """Validate recipes without running them; every problem of every file is listed."""

    def one(recipe: Path) -> dict[str, Any]:
        from optimizer.package.image import preflight
        from optimizer.recipe.load import load_recipe

        parsed = load_recipe(recipe)
        try:
            preflight(parsed)
        except BadInput as exc:
            raise BadInput(f"{recipe}: package.image: {exc}") from None
        return {"ok": True, "recipe": str(recipe), "name": parsed.name,
                "steps": [s.name for s in parsed.steps],
                "resolved": parsed.model_dump(mode="json", by_alias=True),
                "summary": f"{recipe}: ok ({parsed.name}: source {parsed.source.kind}, "
                           f"steps {' -> '.join(s.name or s.step for s in parsed.steps)})"}

    def run() -> int:
        if len(recipes) == 1:
            doc = one(recipes[0])
            _emit(as_json, doc, lambda: typer.echo(doc["summary"]))
            return EXIT_OK
        docs = []
        for recipe in recipes:
            try:
                docs.append(one(recipe))
            except BadInput as exc:
                lines = exc.lines
                docs.append({"ok": False, "recipe": str(recipe), "error": lines[0],
                             "errors": lines})
        failed = [d for d in docs if not d["ok"]]

        def text() -> None:
            for d in docs:
                if d["ok"]:
                    typer.echo(d["summary"])
                else:
                    for line in d["errors"]:
                        typer.echo(f"error: {line}", err=True)
            typer.echo(f"{len(docs) - len(failed)} of {len(docs)} recipes ok")

        _emit(as_json, {"ok": not failed, "exit_code": 2 if failed else 0, "recipes": docs},
              text)
        return EXIT_BAD_INPUT if failed else EXIT_OK

    _guard(as_json, run)


@app.command()
def schema() -> None:
    """Print the JSON Schema of recipes (for editors)."""
    from optimizer.recipe.load import json_schema as recipe_schema

    typer.echo(json.dumps(recipe_schema(), indent=2))


@app.command("targets")
def targets_cmd(as_json: JsonOpt = False) -> None:
    """Show the Lambda targets with their limits, memory sizes and prices."""
    from optimizer import targets

    def text() -> None:
        from optimizer.report.console import print_targets

        print_targets()

    _emit(as_json, targets.as_dict(), text)


@app.command("check-size")
def check_size(
    paths: Annotated[list[str], typer.Argument(
        help="a zip, a folder, several zips (function first, then layers), a folder of zips, "
        "an image tarball, or an image in the local Docker Engine (docker://REF)",
        show_default=False)],
    target: Annotated[str | None, typer.Option(
        help="also check every shared object for this target's architecture and the "
        "runtime's glibc (zips and folders)")] = None,
    runtime: Annotated[str | None, typer.Option(
        help="runtime whose glibc --target checks against [default: python3.12]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check any Lambda package against the size limits; exit 1 when over."""

    def run() -> int:
        from optimizer.package.sizes import check

        doc = check(paths, target, runtime)

        def text() -> None:
            from optimizer.report.console import print_sizes

            print_sizes(doc)

        _emit(as_json, doc, text)
        return EXIT_OK if doc["ok"] else EXIT_GATE

    _guard(as_json, run)


@app.command()
def verify(
    path: Annotated[Path, typer.Argument(
        help="a build's manifest.json, or the output folder that holds it",
        show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Re-check published artifacts against their manifest; exit 1 on any difference."""

    def run() -> int:
        from optimizer.publish.manifest import verify as check

        doc = check(path)

        def text() -> None:
            for p in doc["problems"]:
                typer.echo(f"FAIL {p['path']}: {p['problem']}")
            for rel in doc["unlisted"]:
                typer.echo(f"FAIL {rel}: not in the manifest")
            verdict = "ok" if doc["ok"] else "FAILED"
            typer.echo(f"{doc['manifest']}: {verdict}: {doc['checked']} file(s) checked, "
                       f"{len(doc['problems']) + len(doc['unlisted'])} problem(s)")

        _emit(as_json, doc, text)
        return EXIT_OK if doc["ok"] else EXIT_GATE

    _guard(as_json, run)


@app.command("base-image")
def base_image(
    suite: Annotated[str, typer.Option(help="Debian suite to debootstrap")] = "bookworm",
    lambda_like: Annotated[bool, typer.Option(
        "--lambda-like", help="add the AWS base image's contract (awslambdaric entry point, "
        "/var/task) on top, for the lambda template")] = False,
    tag: Annotated[str | None, typer.Option(
        help="image tag [default: local/debian-python:PYTHON]")] = None,
    save: Annotated[Path | None, typer.Option(
        help="also write it as a `docker save` tarball (a base for the daemonless writer)")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Build a local Debian + python3 base image (for machines that cannot pull one)."""

    def log(message: str) -> None:
        typer.echo(message, err=True)

    def run() -> int:
        from optimizer.errors import PackageFailed
        from optimizer.package import baseimage

        try:
            ref = baseimage.ensure_lambda_like(tag, suite, log) if lambda_like else \
                baseimage.ensure(tag, suite, log=log)
            if save is not None:
                log(f"saving {ref} to {save}")
                baseimage.save(ref, save)
        except PackageFailed as exc:  # not a build step here: no "step 'package'" prefix
            raise BadInput(exc.detail) from None
        _emit(as_json, {"ok": True, "image": ref, "tarball": str(save) if save else None},
              lambda: typer.echo(f"{ref}" + (f" (saved to {save})" if save else "")))
        return EXIT_OK

    _guard(as_json, run)


PackageArg = Annotated[str, typer.Argument(
    help="a build's output folder, a folder with function.zip and layers, a zip, an image "
    "tarball, or an image (docker://REF)", show_default=False)]
EventOpt = Annotated[Path | None, typer.Option(
    help="event JSON [default: the build's package/sample-event.json]")]
TimeoutOpt = Annotated[float, typer.Option(
    min=0.001, max=900, help="function timeout in seconds (Lambda's: 1 to 900; a fraction "
    "shows locally what a timeout does)")]


def _event(dep, event: Path | None, one_image: bool = False) -> Any:
    """--event, or the build's sample event (reduced to its first image for `one_image`:
    the sweep times batch-1 requests, as the build measured)."""
    path = event or dep.sample_event
    if path is None:
        raise BadInput(f"{dep.ref}: no --event given and no sample-event.json beside it")
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable JSON event ({exc})") from None
    if one_image and event is None:
        from optimizer.handler.events import BadRequest, images_from_event
        from optimizer.package.proof import sample_event

        try:
            doc = sample_event(images_from_event(doc, 1 << 30, 1 << 20)[:1])
        except BadRequest as exc:
            raise BadInput(f"{path}: {exc.message}") from None
    return doc


def _environment(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise BadInput(f"--env {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def _bulk_event(sqs: list[Path] | None, s3: list[str] | None) -> dict | None:
    from optimizer.lambda_local import bulk_events

    if sqs and s3:
        raise BadInput("--sqs and --s3 make one event each; give one of them")
    if sqs:
        return bulk_events.sqs_of_files(sqs)
    return bulk_events.s3_event(s3) if s3 else None


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise BadInput(f"--batch {text!r}: expected whole numbers, e.g. 1,10,100") from None
    if not sizes or sizes[0] < 1 or sizes[-1] > 10_000:
        raise BadInput(f"--batch {text!r}: sizes from 1 to 10,000 (SQS's largest batch)")
    return sizes


def _event_images(dep, event: Path | None) -> list[bytes]:
    """The images an event (or the build's sample event) carries."""
    from optimizer.handler.events import BadRequest, images_from_event

    try:
        return images_from_event(_event(dep, event), 1 << 30, 1 << 20)
    except BadRequest as exc:
        raise BadInput(f"{event or dep.sample_event}: {exc.message}") from None


def _memory_sizes(text: str) -> list[int]:
    """Comma-separated memory sizes, each within Lambda's range, or one clear error."""
    from optimizer import targets

    try:
        sizes = [int(m) for m in text.split(",") if m.strip()]
        for m in sizes:
            targets.vcpus(m)
    except ValueError as exc:
        raise BadInput(f"--memory: {exc}") from None
    if not sizes:
        raise BadInput("--memory: no memory size given")
    return sizes


def _print_invocation(report, doc: dict[str, Any]) -> None:
    """`optimizer invoke` for a person: the response, the REPORT line, where init went."""
    from optimizer.lambda_local.session import describe_init

    out = report.response if report.status == "ok" else {"error": report.error}
    if isinstance(out, dict) and isinstance(out.get("body"), str):
        try:  # a proxy response's body is JSON in a string: show it as JSON
            out = {**out, "body": json.loads(out["body"])}
        except ValueError:
            pass
    typer.echo(json.dumps(out, indent=2))
    typer.echo(report.line())
    if report.init_ms is not None and report.status == "ok":
        typer.echo(describe_init(report.init_breakdown))
    if report.restore:
        after = report.restore.get("after_restore") or {}
        typer.echo(f"SnapStart: init {report.init_ms:.0f} ms before the snapshot; after "
                   f"restore {after.get('after_restore_ms', '?')} ms in the handler's hook, "
                   f"{after.get('threads', '?')} thread(s)"
                   f"{', model reloaded' if after.get('reloaded') else ''} (a restore here "
                   "resumes the same process; Lambda's also loads the snapshot)")
    if report.note:
        typer.echo(f"note: {report.note}")
    if doc.get("hint"):
        typer.echo(f"hint: {doc['hint']}")
    typer.echo(f"caps: {doc['cap_method']}")


@app.command()
def invoke(
    package: PackageArg,
    event: EventOpt = None,
    memory: Annotated[int, typer.Option(help="memory size in MB (sets the CPU share)")] = 1769,
    timeout: TimeoutOpt = 30.0,
    runtime: Annotated[str | None, typer.Option(help="zip runtime [default: the package's]")]
    = None,
    handler: Annotated[str | None, typer.Option(help="handler [default: the package's]")]
    = None,
    snap_start: Annotated[bool, typer.Option(
        "--snap-start", help="start as a SnapStart version: init and the before-snapshot "
        "hooks, a restore, the after-restore hooks, then the event (zip packages)")] = False,
    sqs: Annotated[list[Path] | None, typer.Option(
        help="send an SQS event, one message a file (base64 image); a folder gives its "
        "files; repeatable")] = None,
    s3: Annotated[list[str] | None, typer.Option(
        help="send an S3 notification for s3://BUCKET/KEY; repeatable")] = None,
    env: Annotated[list[str] | None, typer.Option(
        help="KEY=VALUE for the function's environment (OPTIMIZER_OUTPUT_BUCKET...); "
        "repeatable")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a package once as Lambda would; print the response and the REPORT line."""

    def run() -> int:
        import tempfile

        from optimizer import targets
        from optimizer.lambda_local.deployable import open_deployable
        from optimizer.lambda_local.session import Session

        _memory_sizes(str(memory))
        environment = _environment(env or [])
        with tempfile.TemporaryDirectory(prefix="optimizer-invoke-") as work:
            dep = open_deployable(package, Path(work), runtime, handler, environment)
            if snap_start and dep.kind != "zip":
                raise BadInput(f"{package}: container images cannot use SnapStart; "
                               "--snap-start is for zip packages")
            payload = _bulk_event(sqs, s3) or _event(dep, event)
            session = Session(dep.make(memory, targets.vcpus(memory), timeout), memory,
                              timeout, snap_start=snap_start)
            try:
                report = session.invoke(payload)
                cap = session.instance.cap_method
            finally:
                session.close()
        doc = {"ok": report.status == "ok", **report.as_dict(), "report": report.line(),
               "cap_method": cap}
        if report.status != "ok" and (hint := dep.hint(str(report.error))):
            doc["hint"] = hint

        _emit(as_json, doc, lambda: _print_invocation(report, doc))
        return EXIT_OK if report.status == "ok" else EXIT_GATE

    _guard(as_json, run)


@app.command()
def tune(
    package: PackageArg,
    memory: Annotated[str, typer.Option(help="memory sizes in MB, comma-separated")]
    = "512,1024,1536,1769,3008",
    invocations: Annotated[int, typer.Option(min=1, help="warm invocations per size")] = 20,
    strategy: Annotated[str, typer.Option(help="cost | speed | balanced")] = "balanced",
    event: EventOpt = None,
    timeout: TimeoutOpt = 30.0,
    concurrency: Annotated[int, typer.Option(
        min=0, help="also run N instances at the recommended size")] = 0,
    instance_price: Annotated[float | None, typer.Option(
        help="hourly USD of an always-on alternative, for the break-even volume")] = None,
    instance_vcpus: Annotated[int, typer.Option(min=1, help="its vCPU count")] = 1,
    cold_per_1000: Annotated[float, typer.Option(
        min=0, max=1000, help="cold starts per 1,000 requests the cost assumes (each bills its "
        "Init Duration)")] = 10.0,
    batch: Annotated[str | None, typer.Option(
        help="images per invocation, comma-separated (e.g. 1,10,100): SQS events of that "
        "many images; recommends memory and batch together by cost per image")] = None,
    out: Annotated[Path, typer.Option(help="folder for tune.json and tune.html")]
    = Path("artifacts/tune"),
    as_json: JsonOpt = False,
) -> None:
    """Try memory sizes with a cold start and warm invocations each; recommend one."""

    def run() -> int:
        import tempfile

        from optimizer.lambda_local import batch_tune
        from optimizer.lambda_local import tune as tuning
        from optimizer.lambda_local.deployable import open_deployable
        from optimizer.progress import Progress
        from optimizer.report.tune_plot import render

        if strategy not in tuning.STRATEGIES:
            raise BadInput(f"--strategy must be one of {', '.join(tuning.STRATEGIES)}")
        sizes, progress = _memory_sizes(memory), Progress()
        batches = _batch_sizes(batch) if batch else None
        with tempfile.TemporaryDirectory(prefix="optimizer-tune-") as work:
            dep = open_deployable(package, Path(work))
            doc = batch_tune.run(
                dep, _event_images(dep, event), sizes, batches, invocations, strategy,
                timeout, cold_per_1000, progress.log) if batches else tuning.run(
                dep, _event(dep, event, one_image=True), sizes, invocations, strategy,
                timeout, concurrency, (instance_price, instance_vcpus)
                if instance_price else None, progress.log, cold_per_1000)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tune.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out / "tune.html").write_text(render(doc))
        doc["files"] = [str(out / "tune.json"), str(out / "tune.html")]

        def text() -> None:
            from optimizer.report.console import print_tune

            print_tune(doc, progress.console)

        _emit(as_json, doc, text)
        return EXIT_OK if doc["recommended_memory_mb"] else EXIT_GATE

    _guard(as_json, run)


def main() -> None:
    """Console-script entry point; usage errors from typer already exit with 2.

    tf2onnx's graph passes iterate sets of names, so under another string-hash seed the
    same model converts to a different (equivalent) graph, with another digest, and every
    step after it misses the cache. The build starts again, at once, under one fixed seed
    (child processes and Ray tasks get the same), which makes builds repeatable."""
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:
        os.environ["PYTHONHASHSEED"] = HASH_SEED
        args = sys.argv[1:]
        head = ([sys.executable, "-m", "optimizer"] if sys.argv[0].endswith("__main__.py")
                else [sys.executable, sys.argv[0]])
        os.execv(sys.executable, [*head, *args])
    app()


if __name__ == "__main__":
    main()
