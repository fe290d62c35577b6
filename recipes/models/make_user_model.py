"""Remakes recipes/models/digit-cnn.keras and recipes/data/digit-photos/ (offline, ~20 s).

A stand-in for what users bring: a Keras CNN trained elsewhere (its own Rescaling layer, its
labels in a text file, digits in digit order) and photos without labels, in the formats
phones and editors write: EXIF-rotated JPEGs, CMYK JPEGs, RGBA PNGs cut out on a
transparent background, palette GIFs, 16-bit PNG scans and WebP. The photos are digits the
model never saw in training.

    python recipes/models/make_user_model.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
PHOTOS = HERE.parent / "data" / "digit-photos"
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN = 1300  # the rest of scikit-learn's 1,797 digits become photos
PHOTO_COUNT = 250
SIZE = 32


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8), d.target


def cnn(size: int, x: np.ndarray, labels: np.ndarray):
    """The kind of model a user brings: its own Rescaling layer, trained elsewhere (the
    tests train the same one at 16 px)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((size, size, 3), name="image"), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, labels, epochs=25, batch_size=32, verbose=0)
    return model


def train(images: np.ndarray, labels: np.ndarray) -> None:
    x = np.stack([np.asarray(Image.fromarray(i).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
                             .convert("RGB")) for i in images]).astype("float32")
    cnn(SIZE, x, labels).save(HERE / "digit-cnn.keras")
    (HERE / "digit-cnn.labels.txt").write_text("\n".join(WORDS) + "\n")


def _photo(img: np.ndarray, i: int) -> tuple[str, bytes]:
    """One digit at 64 px in the i-th of seven formats."""
    big = Image.fromarray(img).resize((64, 64), Image.Resampling.BICUBIC)
    rgb = big.convert("RGB")
    buf = io.BytesIO()
    kind = i % 7
    if kind == 0:  # shot sideways; the EXIF tag says "rotate 90 clockwise"
        exif = Image.Exif()
        exif[0x0112] = 6
        rgb.transpose(Image.Transpose.ROTATE_90).save(buf, "JPEG", exif=exif, quality=92)
        return "jpg", buf.getvalue()
    if kind == 1:
        rgb.convert("CMYK").save(buf, "JPEG", quality=92)
        return "jpg", buf.getvalue()
    if kind == 2:  # cut out: the dark background is transparent
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(np.where(np.asarray(big) > 20, 255, 0).astype(np.uint8)))
        rgba.save(buf, "PNG")
        return "png", buf.getvalue()
    if kind == 3:
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32).save(buf, "GIF")
        return "gif", buf.getvalue()
    if kind == 4:
        Image.fromarray(np.asarray(big).astype(np.uint16) * 257).save(buf, "PNG")
        return "png", buf.getvalue()
    if kind == 5:
        rgb.save(buf, "WEBP", quality=90)
        return "webp", buf.getvalue()
    big.save(buf, "JPEG", quality=92)
    return "jpg", buf.getvalue()


def photos(images: np.ndarray) -> None:
    PHOTOS.mkdir(parents=True, exist_ok=True)
    for old in PHOTOS.iterdir():
        old.unlink()
    for i, img in enumerate(images[:PHOTO_COUNT]):
        ext, data = _photo(img, i)
        (PHOTOS / f"IMG_{i:04d}.{ext}").write_bytes(data)


def main() -> None:
    images, labels = _digits()
    order = np.random.default_rng(0).permutation(len(images))
    train(images[order[:TRAIN]], labels[order[:TRAIN]])
    photos(images[order[TRAIN:]])
    print(f"wrote {HERE / 'digit-cnn.keras'} and {PHOTO_COUNT} photos in {PHOTOS}")


if __name__ == "__main__":
    main()
