"""Real photos: EXIF orientation, CMYK, alpha, palette, 16-bit and WebP files become the same
arrays in the build (dataset folders) and in the packaged handler (its own Python and
Pillow), under every resize convention and channel order."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optimizer.data.folder import read_image
from optimizer.emulation import interpreters
from optimizer.handler.pixels import NotAnImage, decode
from optimizer.preprocess_spec import Preprocess, apply

SPECS = [
    {"size": [16, 16], "channels": 3, "scale": 0.00392156862745098},
    {"size": [24, 24], "channels": 3, "fit": "crop", "resize_to": 28, "channel_order": "BGR",
     "mean": [103.939, 116.779, 123.68]},
    {"size": [20, 32], "channels": 1, "fit": "letterbox", "pad_color": [114, 114, 114],
     "background": [0, 0, 0], "resize": "bicubic"},
    {"size": [12, 30], "channels": 3, "fit": "crop", "resize_to": [14, 40],
     "layout": "NCHW", "std": [58.4, 57.1, 57.4]},
]


def _scene(w: int = 48, h: int = 32) -> Image.Image:
    """Left half red, a blue band on top: any rotation or flip shows."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2, 0] = 220
    arr[: h // 4, :, 2] = 200
    arr[h // 2:, w // 2:, 1] = np.linspace(0, 255, w - w // 2, dtype=np.uint8)
    return Image.fromarray(arr)


def photos(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    scene = _scene()
    out = {}
    # a phone photo: pixels stored sideways, EXIF orientation 6 says "rotate 90 clockwise"
    exif = Image.Exif()
    exif[0x0112] = 6
    out["exif"] = folder / "exif-rotated.jpg"
    scene.transpose(Image.Transpose.ROTATE_90).save(out["exif"], "JPEG", exif=exif,
                                                    quality=95)
    out["cmyk"] = folder / "print.jpg"
    scene.convert("CMYK").save(out["cmyk"], "JPEG", quality=95)
    rgba = scene.convert("RGBA")
    alpha = np.full((32, 48), 255, np.uint8)
    alpha[:, 40:] = 0
    alpha[20:, :10] = 128
    rgba.putalpha(Image.fromarray(alpha))
    out["rgba"] = folder / "cutout.png"
    rgba.save(out["rgba"])
    out["gif"] = folder / "palette.gif"
    pal = scene.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    pal.save(out["gif"], transparency=0)
    grey16 = (np.linspace(0, 65535, 48 * 32).reshape(32, 48)).astype(np.uint16)
    out["png16"] = folder / "scan-16bit.png"
    Image.fromarray(grey16).save(out["png16"])
    out["webp"] = folder / "web.webp"
    scene.save(out["webp"], "WEBP", quality=90)
    return out


def test_decode_applies_orientation_and_converts_modes(tmp_path):
    files = photos(tmp_path)
    upright = decode(files["exif"].read_bytes())
    assert upright.shape == (32, 48, 3)  # stored 48 high, 32 wide; shown the other way
    assert upright[16, 5, 0] > 150 and upright[16, 40, 0] < 80  # red on the left, as shot
    cmyk = decode(files["cmyk"].read_bytes())
    assert cmyk.shape == (32, 48, 3) and cmyk[16, 5, 0] > 150  # not inverted, not 4 channels
    rgba = decode(files["rgba"].read_bytes())
    assert rgba.shape == (32, 48, 4)
    spec = {"size": [32, 48], "channels": 3, "background": [255, 255, 255]}
    white = apply([rgba], Preprocess(**spec))[0]
    assert (white[10, 44] == 255).all()  # transparent: the background
    half = apply([rgba], Preprocess(**{**spec, "background": [0, 0, 0]}))[0]
    assert abs(half[25, 5, 0] - 110) < 3  # 50% alpha over black: half the red
    gif = decode(files["gif"].read_bytes())
    assert gif.ndim == 3 and gif.shape[2] == 4  # palette transparency kept as alpha
    grey = decode(files["png16"].read_bytes())
    assert grey.dtype == np.uint8 and grey.shape == (32, 48)
    assert grey[0, 0] == 0 and grey[-1, -1] == 255 and abs(int(grey[16, 0]) - 128) < 3
    assert decode(files["webp"].read_bytes()).shape == (32, 48, 3)


def test_an_undecodable_file_is_named_by_its_format_not_by_pillows_buffer():
    """An iPhone's default photo format is HEIC, which Pillow cannot open: say so."""
    heic = b"\x00\x00\x00\x18ftypheic" + bytes(100)
    with pytest.raises(NotAnImage, match=r"HEIC is not supported; send JPEG"):
        decode(heic)
    with pytest.raises(NotAnImage) as caught:
        decode(b"not an image at all")
    assert "cannot identify image file" in str(caught.value)
    assert "BytesIO" not in str(caught.value) and "0x" not in str(caught.value)


def test_resize_conventions_and_bgr():
    arr = np.asarray(_scene(40, 20))
    crop = apply([arr], Preprocess(size=(10, 10), fit="crop"))[0]
    # shorter side to 10 (20 wide), the center 10: red on the left half, black on the right
    assert crop[5, 2, 0] > 150 and crop[5, 8, 0] < 60
    box = apply([arr], Preprocess(size=(20, 20), fit="letterbox", pad_color=[9, 9, 9]))[0]
    assert (box[0, 10] == 9).all() and (box[-1, 10] == 9).all() and box[10, 2, 0] > 150
    rgb = apply([arr], Preprocess(size=(20, 40)))[0]
    bgr = apply([arr], Preprocess(size=(20, 40), channel_order="BGR"))[0]
    assert np.array_equal(rgb[..., ::-1], bgr)
    with pytest.raises(ValueError, match="resize_to applies to fit: crop"):
        Preprocess(size=(8, 8), resize_to=10)
    with pytest.raises(ValueError, match="BGR needs 3 channels"):
        Preprocess(size=(8, 8), channels=1, channel_order="BGR")


PACKAGED = r'''
import json, sys
task, opt, specs_file, out = sys.argv[1:5]
sys.path[:0] = [task, opt + "/python"]
import numpy as np
from handler.pixels import decode, to_batch
import PIL
specs = json.load(open(specs_file))
arrays = {}
for path in sys.argv[5:]:
    img = decode(open(path, "rb").read())
    for i, spec in enumerate(specs):
        arrays[f"{path}|{i}"] = to_batch([img], spec)
np.savez(out, **arrays)
print(PIL.__version__, PIL.__file__)
'''


def test_build_and_packaged_handler_give_identical_arrays(zip_build, tmp_path):
    """The same bytes through the dataset reader and through the handler unpacked from the
    built zip, run by the runtime's Python with only the package importable."""
    root, _, _ = zip_build
    files = photos(tmp_path / "photos")
    task, opt = tmp_path / "task", tmp_path / "opt"
    for z, dest in (("function.zip", task), ("layer-1.zip", opt)):
        zipfile.ZipFile(root / "out" / "package" / z).extractall(dest)
    shipped = json.loads((task / "model" / "package.json").read_text())["preprocess"]
    specs = [shipped, *SPECS]
    (tmp_path / "specs.json").write_text(json.dumps(specs))
    (tmp_path / "run.py").write_text(PACKAGED)
    python = interpreters.find_python("3.12")
    assert python is not None, "the test needs Python 3.12 (pyenv), as the package proof does"
    proc = subprocess.run([str(python), "-I", "-S", str(tmp_path / "run.py"), str(task),
                           str(opt), str(tmp_path / "specs.json"), str(tmp_path / "out.npz"),
                           *map(str, files.values())], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert str(opt) in proc.stdout  # the package's own Pillow, not this machine's
    packaged = np.load(tmp_path / "out.npz")
    for kind, path in files.items():
        img = read_image(path)  # what an image-folder dataset holds
        for i, spec in enumerate(specs):
            built = apply([img], Preprocess.model_validate(spec))
            got = packaged[f"{path}|{i}"]
            assert got.shape == built.shape and np.array_equal(got, built), (kind, i)


def test_handler_answers_the_same_for_a_rotated_phone_photo(zip_build, tmp_path):
    """A digit shot sideways, with an EXIF tag saying so: the packaged function, run as
    Lambda runs it, answers for it exactly as for the upright picture; without the tag the
    same pixels are read sideways."""
    import base64

    from typer.testing import CliRunner

    from optimizer.cli import app
    from optimizer.handler.events import images_from_event

    root, _, _ = zip_build
    event = json.loads((root / "out" / "package" / "sample-event.json").read_text())
    png = images_from_event(event, 1 << 24, 64)[0]
    upright = decode(png)
    sideways = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 270 clockwise to show"
    tagged, untagged = io.BytesIO(), io.BytesIO()
    sideways.save(tagged, "PNG", exif=exif)
    sideways.save(untagged, "PNG")
    assert np.array_equal(decode(tagged.getvalue()), upright)
    assert not np.array_equal(decode(untagged.getvalue()), upright)
    request = tmp_path / "photos.json"
    request.write_text(json.dumps({"images": [base64.b64encode(b).decode() for b in (
        png, tagged.getvalue())]}))
    result = CliRunner().invoke(app, ["invoke", str(root / "out"), "--event", str(request),
                                      "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    first, rotated = json.loads(json.loads(result.stdout)["response"]["body"])["predictions"]
    assert rotated == first
