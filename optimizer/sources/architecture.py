"""A Keras application architecture trained from scratch on the recipe's dataset.

Nothing can be downloaded, so "a MobileNetV2" means the architecture with fresh weights,
trained here with a fixed seed. Pixels go in as 0..255 floats; the model rescales itself, so
the deployed preprocessing is only a resize.
"""

from __future__ import annotations

import numpy as np

from optimizer.errors import BadInput
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.preprocess import Preprocess

WITH_ALPHA = {"MobileNetV2", "MobileNetV3Small", "MobileNetV3Large"}
MIN_SIZE = {"Xception": 71}


def _base(cfg):
    import keras

    apps = {
        "MobileNetV2": keras.applications.MobileNetV2,
        "MobileNetV3Small": keras.applications.MobileNetV3Small,
        "MobileNetV3Large": keras.applications.MobileNetV3Large,
        "EfficientNetB0": keras.applications.EfficientNetB0,
        "ResNet50": keras.applications.ResNet50,
        "Xception": keras.applications.Xception,
    }
    size = cfg.input_size
    if size < MIN_SIZE.get(cfg.architecture, 32):
        raise BadInput(f"source.input_size: {cfg.architecture} needs at least "
                       f"{MIN_SIZE[cfg.architecture]} pixels, got {size}")
    kwargs = {"input_shape": (size, size, 3), "weights": None, "include_top": False,
              "pooling": "avg"}
    if cfg.architecture in WITH_ALPHA:
        kwargs["alpha"] = cfg.alpha
    if cfg.architecture.startswith("MobileNetV3"):
        kwargs["include_preprocessing"] = False
    base = apps[cfg.architecture](**kwargs)
    # Keras' 0.999 BN momentum is tuned for ImageNet-length runs; with a few hundred steps
    # the moving averages would still hold their initial values and test accuracy collapses.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return base


def build(cfg, n_classes: int):
    import keras

    base = _base(cfg)
    inp = keras.Input((cfg.input_size, cfg.input_size, 3), name="input")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale_to_unit")(inp)
    x = base(x)
    out = keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, out, name=f"{cfg.architecture}_a{cfg.alpha}_{cfg.input_size}")


def _train_data(x: np.ndarray, y: np.ndarray, train):
    """Seeded shuffle and (optionally) random shift and zoom, applied to batches in tf.data."""
    import keras
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(x), seed=train.seed, reshuffle_each_iteration=True
    ).batch(train.batch_size)
    if train.augment > 0:
        f = train.augment
        aug = keras.Sequential([
            keras.layers.RandomTranslation(f, f, fill_mode="constant", seed=train.seed),
            keras.layers.RandomZoom(f, f, fill_mode="constant", seed=train.seed + 1),
        ])
        data = data.map(lambda a, b: (aug(a, training=True), b))
    return data.prefetch(2)


def load(cfg, dataset, ctx) -> ModelRef:
    import keras

    from optimizer.data import prepared

    pre = Preprocess(size=(cfg.input_size, cfg.input_size), channels=3)
    keras.utils.set_random_seed(cfg.train.seed)
    model = build(cfg, len(dataset.classes))
    x = prepared(dataset, "train", pre)
    y = dataset.labels_of("train")
    steps_per_epoch = int(np.ceil(len(x) / cfg.train.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        cfg.train.learning_rate, cfg.train.epochs * steps_per_epoch
    )
    # XLA made each epoch 6x slower on a 2-core AVX2 host (35 s against 5.7 s)
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    val = None
    if len(dataset.indices("val")):
        val = (prepared(dataset, "val", pre), dataset.labels_of("val"))
    history = model.fit(
        _train_data(x, y, cfg.train), epochs=cfg.train.epochs, verbose=0, shuffle=False,
        validation_data=val, callbacks=[ctx.progress.keras_callback("train", cfg.train.epochs)],
    )
    out = ctx.out_dir / FILE_NAMES["keras"]
    model.save(out)
    hist = {k: [round(float(v), 5) for v in vals] for k, vals in history.history.items()}
    return ModelRef(kind="keras", path=out, preprocess=pre, classes=dataset.classes,
                    info={"params": int(model.count_params()), "history": hist,
                          "architecture": cfg.architecture, "alpha": cfg.alpha,
                          "input_size": cfg.input_size})
