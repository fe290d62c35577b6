"""An MMS 1.x image-classification handler, shipped inside the example archives.

Runs under MXNet Model Server's Python worker (never in optimizer's process). It does what
MMS's own vision services do, from the archive's files alone: decode, resize to the
signature's NCHW shape, normalise with the mean/std in its code or else the signature's, run the
checkpoint, and answer the top 5 labels from synset.txt.
"""

import io
import json
import os

# Normalisation written in the handler's code, as hand-written handlers often keep it; the
# example maker fills these in for archives whose signature.json lists no mean or std.
MEAN = None
STD = None


class Service:
    def __init__(self):
        self.ready = False

    def initialize(self, context):
        import mxnet as mx

        props = context.system_properties
        folder = props["model_dir"]
        name = context.manifest["model"]["modelName"]
        with open(os.path.join(folder, "signature.json")) as f:
            sig = json.load(f)
        first = sig["inputs"][0]
        self.input_name = first["data_name"]
        self.shape = [1, *list(first["data_shape"][1:])]
        self.mean = MEAN if MEAN is not None else first.get("mean", sig.get("mean", [0.0]))
        self.std = STD if STD is not None else first.get("std", sig.get("std", [1.0]))
        synset = os.path.join(folder, "synset.txt")
        with open(synset) as f:
            self.labels = [ln.strip() for ln in f if ln.strip()]
        sym, arg, aux = mx.model.load_checkpoint(os.path.join(folder, name), 0)
        labels = [a for a in sym.list_arguments() if a.endswith("_label")]  # SoftmaxOutput
        self.module = mx.mod.Module(sym, data_names=[self.input_name],
                                    label_names=labels or None, context=mx.cpu())
        self.module.bind(data_shapes=[(self.input_name, tuple(self.shape))], for_training=False)
        self.module.set_params(arg, aux, allow_missing=True)
        self.ready = True

    def _tensor(self, raw):
        import mxnet as mx
        import numpy as np
        from PIL import Image

        c, h, w = self.shape[1:]
        img = Image.open(io.BytesIO(raw)).convert("RGB" if c == 3 else "L")
        arr = np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32)
        arr = arr.reshape(h, w, c).transpose(2, 0, 1)[None]
        mean = np.array(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.array(self.std, np.float32).reshape(1, -1, 1, 1)
        return mx.nd.array((arr - mean) / std)

    def handle(self, data, context):
        import mxnet as mx

        out = []
        for row in data:
            raw = row.get("data") or row.get("body")
            self.module.forward(mx.io.DataBatch([self._tensor(raw)]), is_train=False)
            scores = self.module.get_outputs()[0].asnumpy()[0]
            if scores.min() < 0 or abs(float(scores.sum()) - 1) > 1e-3:  # logits
                import numpy as np

                e = np.exp(scores - scores.max())
                scores = e / e.sum()
            top = scores.argsort()[::-1][:5]
            out.append(json.dumps([{"label": self.labels[i], "score": float(scores[i])}
                                   for i in top]))
        return out


_service = Service()


def handle(data, context):
    if not _service.ready:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
