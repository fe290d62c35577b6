"""MXNet work, run by the isolated environment's Python: `python worker.py COMMAND request.json`.

This file is a script, not part of the package at run time: it imports only MXNet, numpy
and onnx (the isolated versions) and the standard library. It reads a JSON request, writes
a JSON reply to the request's `reply` path, and exits 0; a problem the user can fix exits 2
with {"error": ...} in the reply, so the caller can show it as it is.
"""

from __future__ import annotations

import json
import os
import sys
import time

USER_ERROR = 2
ENV_BROKEN = 3


class UserError(Exception):
    pass


def _mx():
    import mxnet as mx

    return mx


def _load_params(path: str, sym) -> dict:
    """arg:/aux: keyed params, whichever way they were saved (Module, export, save_parameters)."""
    mx = _mx()
    try:
        raw = mx.nd.load(path)
    except Exception as exc:  # MXNetError: a corrupt or foreign file
        raise UserError(f"{path}: not an MXNet params file ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: holds an unnamed list of arrays; expected named parameters")
    aux = set(sym.list_auxiliary_states())
    out = {}
    for key, value in raw.items():
        if key.startswith(("arg:", "aux:")):
            out[key] = value
        else:
            out[("aux:" if key in aux else "arg:") + key] = value
    return out


def _inference_graph(graph: dict) -> dict:
    """SoftmaxOutput (a training head with a label input) as the plain softmax it computes at
    inference: mx2onnx cannot convert it with the label dangling, and MMS never fed one."""
    for node in graph.get("nodes", []):
        if node.get("op") == "SoftmaxOutput":
            attrs = node.get("attrs") or node.get("param") or {}
            multi = str(attrs.get("multi_output", "False")).lower() in ("true", "1")
            node["op"] = "softmax"
            node["inputs"] = node["inputs"][:1]
            node.pop("param", None)
            node["attrs"] = {"axis": "1" if multi else "-1"}
    return graph


def _symbol(path: str):
    mx = _mx()
    try:
        with open(path) as f:
            graph = _inference_graph(json.load(f))
        return mx.sym.load_json(json.dumps(graph))
    except Exception as exc:
        raise UserError(f"{path}: not an MXNet symbol JSON ({str(exc).splitlines()[0]})") from None


def _ops(symbol_path: str) -> list[str]:
    with open(symbol_path) as f:
        graph = json.load(f)
    return sorted({n["op"] for n in graph.get("nodes", []) if n.get("op") not in (None, "null")})


def _data_inputs(sym, params: dict) -> list[str]:
    names = {k.split(":", 1)[1] for k in params}
    return [a for a in sym.list_arguments() if a not in names and not a.endswith("_label")]


def _executor(sym, params: dict, input_name: str, shape: list[int]):
    mx = _mx()
    exe = sym.simple_bind(mx.cpu(), grad_req="null", **{input_name: tuple(shape)})
    for key, value in params.items():
        kind, name = key.split(":", 1)
        target = exe.arg_dict if kind == "arg" else exe.aux_dict
        if name in target:
            if target[name].shape != value.shape:
                raise UserError(f"parameter {name}: params file has shape {value.shape}, the "
                                f"symbol needs {target[name].shape} at input {shape}")
            value.copyto(target[name])
    missing = [n for n in sym.list_arguments() + sym.list_auxiliary_states()
               if n != input_name and not n.endswith("_label")
               and f"arg:{n}" not in params and f"aux:{n}" not in params]
    if missing:
        raise UserError(f"params file lacks {len(missing)} parameters the symbol needs, e.g. "
                        f"{missing[:3]}")
    return exe


def inspect(req: dict) -> dict:
    mx = _mx()
    sym = _symbol(req["symbol"])
    params = _load_params(req["params"], sym)
    inputs = _data_inputs(sym, params)
    if not inputs:
        raise UserError(f"{req['symbol']}: every argument has a parameter; no data input")
    name = req.get("input_name") or inputs[0]
    if name not in inputs:
        raise UserError(f"{req['symbol']}: no input named '{name}'; inputs are {inputs}")
    from mxnet.onnx.mx2onnx._export_model import get_operator_support

    ops = _ops(req["symbol"])
    supported = set(get_operator_support())
    shape = req["input_shape"]
    try:
        _, out_shapes, _ = sym.infer_shape(**{name: tuple(shape)})
    except Exception as exc:
        raise UserError(f"{req['symbol']}: shapes do not infer for input {name}{tuple(shape)} "
                        f"({str(exc).splitlines()[0]})") from None
    return {"mxnet": mx.__version__, "inputs": inputs, "input_name": name,
            "outputs": sym.list_outputs(), "output_shape": list(out_shapes[0]),
            "ops": ops, "unsupported": sorted(set(ops) - supported),
            "params": int(sum(v.size for k, v in params.items() if k.startswith("arg:")))}


def export(req: dict) -> dict:
    """mx2onnx with a dynamic batch; label inputs (SoftmaxOutput) are dropped by the exporter."""
    mx = _mx()
    import numpy as np
    import onnx

    sym = _symbol(req["symbol"])
    params = _load_params(req["params"], sym)
    name, shape = req["input_name"], req["input_shape"]
    # only the data input and real parameters: a dangling label var would become an input
    wanted = {k.split(":", 1)[1]: v for k, v in params.items() if k.split(":", 1)[1] != name}
    t0 = time.perf_counter()
    try:
        mx.onnx.export_model(sym, wanted, [tuple(shape)], [np.float32], req["out"],
                             dynamic=True, dynamic_input_shapes=[[None, *shape[1:]]])
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise UserError(f"mx2onnx could not convert the model: {text[-1] if text else exc!r}") \
            from None
    # mx2onnx declares onnx's newest opset but translates with its own newest (13 in 1.9.1):
    # declare what the nodes really follow, or opset-18 ops (ReduceMean...) would be misread
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    model = onnx.load(req["out"])
    used = max(v for v in MXNetGraph.registry_ if v <= onnx.defs.onnx_opset_version())
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = used
    onnx.save(model, req["out"])
    return {"seconds": round(time.perf_counter() - t0, 3), "onnx": onnx.__version__,
            "opset": used}


def forward(req: dict) -> dict:
    """MXNet's own outputs on the given inputs, in fixed-size batches (the last one padded)."""
    import numpy as np

    sym = _symbol(req["symbol"])
    params = _load_params(req["params"], sym)
    x = np.load(req["inputs"])
    batch = min(int(req.get("batch", 64)), len(x))
    exe = _executor(sym, params, req["input_name"], [batch, *x.shape[1:]])
    outs = []
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        pad = batch - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
        exe.forward(is_train=False, **{req["input_name"]: chunk})
        outs.append(exe.outputs[0].asnumpy()[:batch - pad])
    np.save(req["out"], np.concatenate(outs).astype(np.float32))
    return {"seconds": round(time.perf_counter() - t0, 3), "n": len(x)}


def train_example(req: dict) -> dict:
    """A model zoo ResNetV1 (fresh weights) trained briefly here, saved the way MMS users have
    it: Gluon export, or a Module checkpoint with a SoftmaxOutput head (the classic zoo files).
    """
    mx = _mx()
    import numpy as np
    from mxnet import autograd, gluon
    from mxnet.gluon.model_zoo.vision.resnet import BasicBlockV1, ResNetV1

    mx.random.seed(req.get("seed", 0))
    np.random.seed(req.get("seed", 0))
    data = np.load(req["data"])
    x, y = data["x"].astype(np.float32), data["y"].astype(np.float32)
    net = ResNetV1(BasicBlockV1, req["layers"], req["channels"], classes=req["classes"],
                   thumbnail=True)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net.hybridize(static_alloc=True)
    # the model gets raw 0..255 pixels minus the signature's mean over its std
    mean = np.array(req["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.array(req["std"], np.float32).reshape(1, -1, 1, 1)
    xn = (x - mean) / std
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": req.get("lr", 2e-3)})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    bs = req.get("batch_size", 64)
    rng = np.random.RandomState(req.get("seed", 0))
    log = []
    for epoch in range(req["epochs"]):
        order = rng.permutation(len(xn))
        total = 0.0
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            xb, yb = mx.nd.array(xn[idx]), mx.nd.array(y[idx])
            with autograd.record():
                loss = loss_fn(net(xb), yb)
            loss.backward()
            trainer.step(len(idx))
            total += float(loss.sum().asscalar())
        log.append(round(total / len(xn), 4))
        print(f"epoch {epoch + 1}/{req['epochs']} loss {log[-1]}", flush=True)
    prefix = req["out_prefix"]
    if req.get("style", "gluon") == "gluon":
        net.export(prefix, epoch=0)
    else:
        out = net(mx.sym.var("data"))
        sym = mx.sym.SoftmaxOutput(out, name="softmax")
        arg, aux = {}, {}
        for pname, p in net.collect_params().items():
            (aux if pname.endswith(("running_mean", "running_var")) else arg)[pname] = p.data()
        mx.model.save_checkpoint(prefix, 0, sym, arg, aux)
    return {"losses": log, "symbol": f"{prefix}-symbol.json", "params": f"{prefix}-0000.params"}


def _answer(value):
    """A handler's answer for one request as JSON data: MMS sends strings and bytes as
    they are, so a JSON string is parsed."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _mms_service(req: dict):
    """The archive's service loaded by MMS 1.x's own loader: a model-archiver manifest's
    `module:function` (or a service class), or an MMS 0.x service, initialised with MMS's
    context (system_properties, manifest)."""
    sys.path.insert(0, req["model_dir"])  # as MMS's worker does
    from mms.model_loader import ModelLoaderFactory

    loader = ModelLoaderFactory.get_model_loader(req["model_dir"])
    return loader.load(req["model_name"], req["model_dir"], req["handler"], None, 1)


def _request(service, body: bytearray, content_type: str):
    """One request, set up as MMS's Service.predict sets it up, to the entry point."""
    from mms.context import RequestProcessor
    from mms.metrics.metrics_store import MetricsStore

    ctx = service.context
    ctx.request_ids = {0: "request-0"}
    ctx.request_processor = [RequestProcessor({"body": {"content-type": content_type}})]
    ctx.metrics = MetricsStore(ctx.request_ids, ctx.model_name)
    return service._entry_point([{"body": body}], ctx)


def handle(req: dict) -> dict:
    """The archive's handler run as MMS 1.x runs it, once per image with the encoded bytes as
    the request body. A handler that cannot run here answers {"unavailable": why}."""
    import traceback

    try:
        service = _mms_service(req)
    except BaseException as exc:  # SystemExit too: a handler must not end the worker
        traceback.print_exc()
        return {"unavailable": f"{req['handler']} failed to load: {_last_line(exc)}"}
    answers = []
    t0 = time.perf_counter()
    for path in req["images"]:
        with open(path, "rb") as f:
            body = bytearray(f.read())
        try:
            out = _request(service, body, req["content_type"])
        except BaseException as exc:
            traceback.print_exc()
            return {"unavailable": f"{req['handler']} raised on {os.path.basename(path)}: "
                                   f"{_last_line(exc)}"}
        if not isinstance(out, list) or len(out) != 1:
            return {"unavailable": f"{req['handler']} returned {type(out).__name__} for one "
                                   "request; MMS expects a list with one answer per request"}
        answers.append(_answer(out[0]))
    module = req["handler"].split(":", 1)[0]
    source = os.path.join(req["model_dir"], module if module.endswith(".py") else module + ".py")
    handler_source = None
    if os.path.isfile(source):
        with open(source, encoding="utf-8", errors="replace") as f:
            handler_source = f.read()
    return {"answers": answers, "source": handler_source,
            "seconds": round(time.perf_counter() - t0, 3)}


COMMANDS = {"inspect": inspect, "export": export, "forward": forward,
            "train_example": train_example, "handle": handle}


def main() -> int:
    command, request_path = sys.argv[1], sys.argv[2]
    with open(request_path) as f:
        req = json.load(f)
    reply_path = req["reply"]
    try:
        import mxnet  # noqa: F401
        import numpy  # noqa: F401
        import onnx  # noqa: F401
    except Exception as exc:  # a damaged install: the caller remakes the env and retries
        reply, code = {"env_broken": f"{type(exc).__name__}: {exc}"}, ENV_BROKEN
    else:
        try:
            reply = COMMANDS[command](req)
            code = 0
        except UserError as exc:
            reply, code = {"error": str(exc)}, USER_ERROR
    tmp = reply_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(reply, f)
    os.replace(tmp, reply_path)
    return code


if __name__ == "__main__":
    sys.exit(main())
