"""Image input: read_image and list_images against NumPy oracles on files written by Pillow
(and by hand where Pillow would not write the case), and `clcnn predict` on the same files.

Oracles: 8-bit pixels / 255; 16-bit / 65535 (or / maxval for a PGM); luminance
0.299 R + 0.587 G + 0.114 B (Pillow's "L" rounds it to a level: tolerance just over half a level);
transparent pixels count as black (value times alpha)."""
import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, strategies as st
from PIL import Image

import clcnn
from clcnn.cli.main import PREPROCESS, cli
from clcnn.datasets import mnist, prepare_images
from clcnn.errors import DataError
from clcnn.imageio import MAX_SIDE, RESIZE_CHOICES, list_images, read_image

from .helpers import assert_close

LUMA = np.array([0.299, 0.587, 0.114])
LUMA_ATOL = 0.51 / 255      # Pillow's "L": rounded to a level, 16-bit fixed-point coefficients


def _save(path, array, fmt=None, **options):
    Image.fromarray(array).save(path, fmt, **options)
    return path


def _bytes(array, fmt, **options):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, fmt, **options)
    return buf.getvalue()


def _chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_by_hand(gray, filter_type=0, ihdr=None, idat=None):
    """An 8-bit grayscale PNG with every row given filter_type; ihdr/idat replace those bodies."""
    height, width = gray.shape
    raw = b"".join(bytes([filter_type]) + gray[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0) if ihdr is None else ihdr
    idat = zlib.compress(raw) if idat is None else idat
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _luminance(rgb):
    return np.tensordot(LUMA, rgb.astype(np.float64), axes=([0], [-1])) / 255


def _hw(max_side=24):
    return st.tuples(st.integers(1, max_side), st.integers(1, max_side))


def _pixels(seed, shape, dtype=np.uint8, top=255):
    return np.random.default_rng(seed).integers(0, top + 1, shape, dtype=np.int64).astype(dtype)


# ------------------------------------------------------------------------- formats and modes

LOSSLESS_GRAY = [("png", {}), ("bmp", {}), ("tif", {}), ("pgm", {}), ("gif", {}), ("webp", {"lossless": True})]


@pytest.mark.parametrize("suffix, options", LOSSLESS_GRAY)
@given(hw=_hw(), seed=st.integers(0, 2**31))
def test_grayscale_files_read_as_pixels_over_255(tmp_path_factory, suffix, options, hw, seed):
    gray = _pixels(seed, hw)
    path = _save(tmp_path_factory.mktemp("img") / f"g.{suffix}", gray, **options)
    image = read_image(path)
    assert image.dtype == np.float32 and image.shape == (1, *hw)
    assert_close(image[0], gray / 255, atol=1e-6, rtol=0, what=suffix)
    assert_close(read_image(path, channels=3), np.repeat(gray[None] / 255, 3, axis=0), atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", ["png", "bmp", "tif", "ppm"])
@given(hw=_hw(), seed=st.integers(0, 2**31))
def test_colour_files_give_rgb_or_luminance(tmp_path_factory, suffix, hw, seed):
    rgb = _pixels(seed, (*hw, 3))
    path = _save(tmp_path_factory.mktemp("img") / f"c.{suffix}", rgb)
    assert_close(read_image(path, channels=3), np.moveaxis(rgb, -1, 0) / 255, atol=1e-6, rtol=0, what=suffix)
    assert_close(read_image(path)[0], _luminance(rgb), atol=LUMA_ATOL, rtol=0, what=suffix)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@given(hw=_hw(), seed=st.integers(0, 2**31))
def test_alpha_counts_transparent_pixels_as_black(tmp_path_factory, mode, hw, seed):
    bands = 4 if mode == "RGBA" else 2
    pixels = _pixels(seed, (*hw, bands))
    path = tmp_path_factory.mktemp("img") / "a.png"
    if mode == "LA":
        Image.merge("LA", [Image.fromarray(pixels[..., 0]), Image.fromarray(pixels[..., 1])]).save(path)
    else:
        _save(path, pixels)
    alpha = pixels[..., -1] / 255
    gray = _luminance(pixels[..., :3]) if mode == "RGBA" else pixels[..., 0] / 255
    assert_close(read_image(path)[0], gray * alpha, atol=LUMA_ATOL, rtol=0, what=mode)
    if mode == "RGBA":
        want = np.moveaxis(pixels[..., :3], -1, 0) / 255 * alpha
        assert_close(read_image(path, channels=3), want, atol=1e-6, rtol=0)


@given(hw=_hw(), seed=st.integers(0, 2**31))
def test_sixteen_bit_png_and_tiff_keep_their_precision(tmp_path_factory, hw, seed):
    deep = _pixels(seed, hw, np.uint16, top=65535)
    folder = tmp_path_factory.mktemp("img")
    for suffix in ("png", "tif"):
        path = _save(folder / f"d.{suffix}", deep)
        assert_close(read_image(path)[0], deep / 65535, atol=1e-6, rtol=0, what=suffix)


@given(hw=_hw(), maxval=st.integers(1, 65535), seed=st.integers(0, 2**31), ascii_=st.booleans())
def test_pgm_of_any_maxval_is_scaled_by_it(tmp_path_factory, hw, maxval, seed, ascii_):
    values = _pixels(seed, hw, np.int64, top=maxval)
    height, width = hw
    if ascii_:
        body = " ".join(map(str, values.ravel())).encode()
    else:
        body = values.astype(np.uint8 if maxval < 256 else ">u2").tobytes()
    path = tmp_path_factory.mktemp("img") / "p.pgm"
    path.write_bytes(b"P2" if ascii_ else b"P5")
    path.write_bytes(path.read_bytes() + f"\n# comment\n{width} {height}\n{maxval}\n".encode() + body)
    # Pillow rescales to 8 bits (maxval < 256) or 16 bits: half a level of that.
    level = 1 / 255 if maxval < 256 else 1 / 65535
    assert_close(read_image(path)[0], values / maxval, atol=0.5 * level + 1e-6, rtol=0)


def _adam7_png(gray):
    """An interlaced 8-bit grayscale PNG (Pillow writes none): the seven Adam7 passes in turn."""
    height, width = gray.shape
    raw = b""
    for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
                           (0, 1, 1, 2)):
        sub = gray[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    return _png_by_hand(gray, ihdr=struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 1), idat=zlib.compress(raw))


def test_palette_interlaced_and_bilevel_images_are_converted(tmp_path):
    gray = _pixels(1, (20, 30))
    (tmp_path / "interlaced.png").write_bytes(_adam7_png(gray))
    palette = Image.fromarray(gray).convert("P")              # a 256-colour palette holds every gray
    palette.save(tmp_path / "palette.png")
    Image.fromarray(gray >= 128).save(tmp_path / "bilevel.png")
    assert_close(read_image(tmp_path / "interlaced.png")[0], gray / 255, atol=1e-6, rtol=0)
    assert_close(read_image(tmp_path / "palette.png")[0], gray / 255, atol=1e-6, rtol=0)
    assert_close(read_image(tmp_path / "bilevel.png")[0], (gray >= 128).astype(float), atol=0, rtol=0)


def test_gif_gives_its_first_frame(tmp_path):
    first, second = _pixels(2, (16, 16)), _pixels(3, (16, 16))
    Image.fromarray(first).save(tmp_path / "anim.gif", save_all=True, append_images=[Image.fromarray(second)])
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert_close(read_image(tmp_path / "anim.gif")[0], first / 255, atol=1e-6, rtol=0)


def test_float_tiff_in_unit_range_is_read_as_is(tmp_path):
    values = np.random.default_rng(4).random((12, 9)).astype(np.float32)
    _save(tmp_path / "f.tif", values)
    assert_close(read_image(tmp_path / "f.tif")[0], values, atol=0, rtol=0)


def test_jpeg_is_close_to_its_source(tmp_path):
    digit = mnist("test")[0][0]
    _save(tmp_path / "d.jpg", digit, quality=95)
    image = read_image(tmp_path / "d.jpg")[0]
    assert np.abs(image - digit / 255).mean() < 0.02 and np.abs(image - digit / 255).max() < 0.2


@given(hw=_hw(), seed=st.integers(0, 2**31), form=st.sampled_from(["hw", "1hw", "11hw", "3hw", "float", "bool",
                                                                    "uint16", "int32"]))
def test_npy_arrays_are_read_by_dtype_and_shape(tmp_path_factory, hw, seed, form):
    gray = _pixels(seed, hw)
    want = gray / 255
    array = {"hw": gray, "1hw": gray[None], "11hw": gray[None, None], "float": gray / 255,
             "bool": gray >= 128, "uint16": gray.astype(np.uint16) * 257, "int32": gray.astype(np.int32)}.get(form)
    if form == "bool":
        want = (gray >= 128).astype(float)
    if form == "3hw":
        rgb = _pixels(seed + 1, (3, *hw))
        array, want = rgb, np.tensordot(LUMA, rgb / 255, axes=1)
    path = tmp_path_factory.mktemp("npy") / "a.npy"
    np.save(path, array)
    assert_close(read_image(path)[0], want, atol=1e-6, rtol=0, what=form)
    assert read_image(path, channels=3).shape == (3, *hw)


# --------------------------------------------------------------------------------- resizing

def test_a_different_size_is_refused_by_default_naming_both_sizes(tmp_path):
    _save(tmp_path / "big.png", _pixels(5, (40, 40)))
    with pytest.raises(DataError, match=r"big\.png: image is 40x40 .* takes 28x28"):
        read_image(tmp_path / "big.png", size=(28, 28))


@pytest.mark.parametrize("resize", [r for r in RESIZE_CHOICES if r != "refuse"])
@given(hw=_hw(40), size=_hw(40), value=st.integers(0, 255))
def test_resizing_keeps_a_constant_image_constant(tmp_path_factory, resize, hw, size, value):
    path = _save(tmp_path_factory.mktemp("img") / "c.png", np.full(hw, value, np.uint8))
    ratio = (hw[1] / hw[0]) / (size[1] / size[0])
    if resize != "stretch" and max(ratio, 1 / ratio) > 1.05:
        with pytest.raises(DataError, match="aspect ratio"):
            read_image(path, size=size, resize=resize)
        return
    image = read_image(path, size=size, resize=resize)
    assert image.shape == (1, *size)
    assert_close(image, np.full((1, *size), value / 255), atol=1e-5, rtol=0, what=resize)


@given(hw=_hw(), factor=st.integers(2, 4), seed=st.integers(0, 2**31))
def test_nearest_resize_by_an_integer_factor_repeats_pixels_and_back(tmp_path_factory, hw, factor, seed):
    gray = _pixels(seed, hw)
    folder = tmp_path_factory.mktemp("img")
    big = np.repeat(np.repeat(gray, factor, axis=0), factor, axis=1)
    up = read_image(_save(folder / "s.png", gray), size=big.shape, resize="nearest")
    assert_close(up[0], big / 255, atol=1e-6, rtol=0)
    down = read_image(_save(folder / "b.png", big), size=hw, resize="nearest")
    assert_close(down[0], gray / 255, atol=1e-6, rtol=0)


def test_sharp_filters_stay_in_unit_range(tmp_path):
    checker = (np.indices((30, 30)).sum(axis=0) % 2 * 255).astype(np.uint8)
    for resize in ("bicubic", "lanczos"):
        image = read_image(_save(tmp_path / "c.png", checker), size=(17, 17), resize=resize)
        assert image.min() >= 0 and image.max() <= 1


def test_aspect_ratio_rule_is_five_percent(tmp_path):
    ok = _save(tmp_path / "ok.png", np.zeros((28, 29), np.uint8))       # 3.6% wider
    wide = _save(tmp_path / "wide.png", np.zeros((28, 31), np.uint8))   # 10.7% wider
    assert read_image(ok, size=(28, 28), resize="bilinear").shape == (1, 28, 28)
    with pytest.raises(DataError, match=r"wide\.png: .*aspect ratio .* 5%.*stretch"):
        read_image(wide, size=(28, 28), resize="bilinear")
    assert read_image(wide, size=(28, 28), resize="stretch").shape == (1, 28, 28)


# ------------------------------------------------------------------------ size limit, refusals

def test_a_4000_pixel_png_is_refused_from_its_header_at_once(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (4000, 4000)).save(path)
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"huge\.png: image is 4000x4000 .*limit of {MAX_SIDE}x{MAX_SIDE}"):
        read_image(path, size=(4000, 4000))
    assert time.perf_counter() - start < 1.0


def test_max_side_sets_the_limit(tmp_path):
    path = _save(tmp_path / "sixty.png", np.zeros((60, 50), np.uint8))
    with pytest.raises(DataError, match=r"sixty\.png: .*limit of 59x59"):
        read_image(path, max_side=59)
    assert read_image(path, max_side=60).shape == (1, 60, 50)


def test_a_huge_npy_is_refused_before_its_data_is_read(tmp_path):
    np.save(tmp_path / "huge.npy", np.zeros((1, 3000, 2500), np.uint8))
    with pytest.raises(DataError, match=r"huge\.npy: image is 3000x2500"):
        read_image(tmp_path / "huge.npy")


def _bad_files():
    """name -> (file bytes or a writer, fragment the message must hold besides the file name)."""
    digit = _pixels(6, (28, 28))
    png = _png_by_hand(digit)

    def npy(array):
        buf = io.BytesIO()
        np.save(buf, array)
        return buf.getvalue()
    nan = np.full((28, 28), np.nan, np.float32)
    one_inf = digit / 255
    one_inf[3, 4] = np.inf
    return {
        "float-255.npy": (npy(digit.astype(np.float32)), "divide them by 255"),
        "all-nan.npy": (npy(nan), "784 of 784 values are NaN or Inf"),
        "one-inf.npy": (npy(one_inf), "1 of 784 values are NaN or Inf"),
        "negative.npy": (npy(digit / 255 - 0.5), "outside [0, 1]"),
        "int-300.npy": (npy(np.full((28, 28), 300, np.int32)), "outside 0-255"),
        "hwc.npy": (npy(np.zeros((28, 28, 3), np.uint8)), "np.moveaxis"),
        "two-images.npy": (npy(np.zeros((2, 28, 28), np.uint8)), "shape (2, 28, 28)"),
        "empty.npy": (npy(np.zeros((0, 28), np.uint8)), "empty"),
        "text.npy": (npy(np.array([["a"]])), "not an image"),
        "cut.npy": (npy(digit)[:-100], "not a readable .npy"),
        "maxval0.pgm": (b"P5\n28 28\n0\n" + digit.tobytes(), "maxval"),
        "filter9.png": (_png_by_hand(digit, filter_type=9), "corrupt or truncated PNG"),
        "bad-zlib.png": (_png_by_hand(digit, idat=b"\x78\x9c garbage, not deflate"), "corrupt or truncated PNG"),
        "short-ihdr.png": (_png_by_hand(digit, ihdr=b"\0\0\0\x1c\0\0\0\x1c\x08"), "IHDR"),
        "cut-in-header.png": (png[:35], "cut short"),
        "cut-in-data.png": (png[:len(png) // 2], "truncated"),
        "cut.jpg": (_bytes(np.dstack([digit] * 3), "JPEG")[:600], "truncated"),
        "cut.bmp": (_bytes(digit, "BMP")[:1500], "truncated"),
        "cut.pgm": (b"P5\n28 28\n255\n" + digit.tobytes()[:700], "truncated"),
        "nan.tif": (_bytes(nan, "TIFF"), "NaN"),
        "255.tif": (_bytes(digit.astype(np.float32), "TIFF"), "outside [0, 1]"),
        "int32.tif": (_bytes(digit.astype(np.int32), "TIFF"), "32-bit integer"),
        "bomb.png": (_png_by_hand(digit, ihdr=struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0)), "too large"),
        "text.png": (b"hello, not an image", "not an image file"),
        "empty.png": (b"", "not an image file"),
        "gif-header-only.gif": (b"GIF89a....", "not an image file"),
    }


BAD = _bad_files()


@pytest.mark.parametrize("name", sorted(BAD))
def test_files_that_would_predict_wrongly_are_refused_naming_the_file(tmp_path, name):
    content, fragment = BAD[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as info:
        read_image(tmp_path / name, size=(28, 28))
    message = str(info.value)
    assert str(tmp_path / name) in message and fragment in message, message
    assert "\n" not in message


@given(cut=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
def test_a_png_cut_anywhere_before_its_pixels_end_is_refused(tmp_path_factory, cut, seed):
    noise = _pixels(seed, (12, 12))          # incompressible: the last bytes of IDAT are pixels
    data = _bytes(noise, "PNG")
    end_of_pixels = len(data) - 12 - 4 - 4 - 4   # IEND, IDAT's CRC, zlib's Adler-32, 4 pixels
    path = tmp_path_factory.mktemp("cut") / "cut.png"
    path.write_bytes(data[:int(cut * end_of_pixels)])
    with pytest.raises(DataError, match="cut.png"):
        read_image(path)


def test_a_missing_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match="nope.png: cannot read"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize("kwargs, fragment", [({"channels": 2}, "channels"), ({"size": (28,)}, "size"),
                                              ({"resize": "cubic"}, "resize")])
def test_bad_arguments_are_value_errors(tmp_path, kwargs, fragment):
    path = _save(tmp_path / "a.png", _pixels(7, (28, 28)))
    with pytest.raises(ValueError, match=fragment):
        read_image(path, **kwargs)


# ------------------------------------------------------------------------------ list_images

def test_list_images_expands_folders_sorted_with_image_suffixes_only(tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for name in ("b.png", "a.JPG", "c.npy", "notes.txt", "d.pgm"):
        (folder / name).write_bytes(b"x")
    (folder / "sub.png").mkdir()
    single = tmp_path / "z.bmp"
    single.write_bytes(b"x")
    found = list_images([single, folder])
    assert found == [str(single)] + [str(folder / n) for n in ("a.JPG", "b.png", "c.npy", "d.pgm")]


def test_list_images_refuses_an_empty_folder_and_a_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty: folder holds no images"):
        list_images([tmp_path / "empty"])
    with pytest.raises(DataError, match="gone: no such file or folder"):
        list_images([tmp_path / "gone"])
    with pytest.raises(DataError, match="no images given"):
        list_images([])


# --------------------------------------------------------------------------- clcnn predict

@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """LeNet-5 after ~190 SGD steps on 6,000 MNIST digits, saved as clcnn train saves it, and
    the predictions (probabilities) for the first 40 test digits computed from the arrays."""
    device = clcnn.get_device("cpu")
    images, labels = mnist("train")
    prep = PREPROCESS["lenet5"]
    x = prepare_images(images[:6000], **prep)
    clcnn.seed(0)
    net = clcnn.models.lenet5(device=device)
    opt = clcnn.optim.SGD(net, lr=0.05, momentum=0.9)
    clcnn.Trainer(net, clcnn.losses.SoftmaxCrossEntropy(), opt, progress=False).fit(
        (x, labels[:6000]), epochs=1, batch_size=32)
    path = tmp_path_factory.mktemp("model") / "digits.clcnn"
    meta = {"model": "lenet5", "input_shape": [1, 32, 32], "preprocess": prep}
    net.save(path, metadata=meta)
    test_images, test_labels = mnist("test")
    logits = clcnn.train.predict(net, prepare_images(test_images[:40], **prep)).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    assert (probs.argmax(axis=1) == test_labels[:40]).mean() > 0.8, "the model did not learn"
    return {"path": path, "net": net, "meta": meta, "images": test_images[:40], "probs": probs}


def _predict(model_path, *args):
    result = CliRunner().invoke(cli, ["predict", str(model_path), *map(str, args), "--device", "cpu"])
    return result


def _predict_json(model_path, *args):
    result = _predict(model_path, *args, "--json", "--top", "10")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["predictions"]


def _probs(row):
    p = np.zeros(len(row["top"]))
    for entry in row["top"]:
        p[entry["class"]] = entry["probability"]
    return p


def test_png_and_jpeg_of_real_digits_predict_as_the_arrays(digits_model, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, digit in enumerate(digits_model["images"]):
        _save(folder / f"{i:02d}.png", digit)
        _save(folder / f"{i:02d}.jpg", digit, quality=95)
    rows = _predict_json(digits_model["path"], folder)
    assert [r["file"] for r in rows] == sorted(str(p) for p in folder.iterdir())
    want = digits_model["probs"]
    confident = 0
    for row in rows:
        i = int(row["file"][-6:-4])
        if row["file"].endswith(".png"):    # lossless: the same numbers up to float rounding
            assert_close(_probs(row), want[i], atol=1e-5, rtol=0, what=row["file"])
        elif want[i].max() > 0.9:           # lossy: the same answer where the model is sure
            confident += 1
            assert row["class"] == want[i].argmax(), row["file"]
    assert confident >= 20


def test_predict_table_lists_file_class_probability_and_top_k(digits_model, tmp_path):
    digit = digits_model["images"][0]
    rgb = _save(tmp_path / "a.ppm", np.dstack([digit] * 3))
    gray16 = _save(tmp_path / "b.png", digit.astype(np.uint16) * 257)
    pgm = _save(tmp_path / "c.pgm", digit)
    npy = tmp_path / "d.npy"
    np.save(npy, digit)
    result = _predict(digits_model["path"], rgb, gray16, pgm, npy, "--top", "2")
    assert result.exit_code == 0, result.output
    header, *lines = result.output.strip().splitlines()
    assert header.split() == ["file", "class", "probability", "top", "2"]
    want = digits_model["probs"][0]
    best, second = np.argsort(-want)[:2]
    for line, path in zip(lines, (rgb, gray16, pgm, npy)):
        fields = line.split()
        assert fields[0] == str(path) and int(fields[1]) == best
        assert abs(float(fields[2]) - want[best]) < 1e-3      # printed to 3 decimals
        assert int(fields[3]) == best and int(fields[5]) == second
    assert len(lines) == 4


def test_predict_json_uses_class_names_from_the_checkpoint(digits_model, tmp_path):
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    path = tmp_path / "named.clcnn"
    digits_model["net"].save(path, metadata={**digits_model["meta"], "class_names": names})
    _save(tmp_path / "d.png", digits_model["images"][3])
    (row,) = _predict_json(path, tmp_path / "d.png")
    want = digits_model["probs"][3]
    assert row["class"] == want.argmax() and row["label"] == names[want.argmax()]
    assert [t["label"] for t in row["top"]] == [names[c] for c in np.argsort(-want, kind="stable")]
    probabilities = [t["probability"] for t in row["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and abs(sum(probabilities) - 1) < 1e-6
    result = _predict(path, tmp_path / "d.png", "--top", "1")
    assert result.exit_code == 0 and names[want.argmax()] in result.output.splitlines()[1]


def test_predict_resizes_only_when_asked(digits_model, tmp_path):
    digit = digits_model["images"][5]
    big = _save(tmp_path / "big.png", np.repeat(np.repeat(digit, 2, axis=0), 2, axis=1))
    result = _predict(digits_model["path"], big)
    assert result.exit_code == 1 and "big.png: image is 56x56" in result.output and "--resize" in result.output
    (row,) = _predict_json(digits_model["path"], big, "--resize", "nearest")
    assert_close(_probs(row), digits_model["probs"][5], atol=1e-5, rtol=0)
    (row,) = _predict_json(digits_model["path"], big, "--resize", "lanczos")
    assert row["class"] == digits_model["probs"][5].argmax()
    wide = _save(tmp_path / "wide.png", np.zeros((28, 40), np.uint8))
    result = _predict(digits_model["path"], wide, "--resize", "bilinear")
    assert result.exit_code == 1 and "wide.png" in result.output and "aspect ratio" in result.output
    assert _predict(digits_model["path"], wide, "--resize", "stretch").exit_code == 0


def test_predict_converts_to_a_colour_models_channels_and_normalisation(tmp_path):
    device = clcnn.get_device("cpu")
    clcnn.seed(3)
    L = clcnn.layers
    net = clcnn.Sequential([L.Conv2D(3, 4, 3), L.ReLU(), L.Flatten(), L.Dense(4 * 8 * 8, 5)], device=device)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    path = tmp_path / "colour.clcnn"
    net.save(path, metadata={
        "input_shape": [3, 10, 10], "preprocess": {"pad": 1, "mean": mean, "std": std}})
    rgb = _pixels(8, (8, 8, 3))
    gray = _pixels(9, (8, 8))
    _save(tmp_path / "rgb.png", rgb)
    _save(tmp_path / "gray.png", gray)
    rows = _predict_json(path, tmp_path / "rgb.png", tmp_path / "gray.png")
    for row, pixels in zip(rows, (np.moveaxis(rgb, -1, 0), np.repeat(gray[None], 3, axis=0))):
        x = np.zeros((1, 3, 10, 10))
        x[0, :, 1:9, 1:9] = pixels / 255
        x = (x - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1))
        logits = clcnn.train.predict(net, x.astype(np.float32)).astype(np.float64)[0]
        want = np.exp(logits - logits.max())
        assert_close(_probs(row), want / want.sum(), atol=1e-5, rtol=0, what=row["file"])


@pytest.mark.parametrize("name", sorted(BAD))
def test_predict_refuses_each_bad_file_in_one_line_naming_it(digits_model, tmp_path, name):
    content, fragment = BAD[name]
    (tmp_path / name).write_bytes(content)
    _save(tmp_path / "good.png", digits_model["images"][0])
    result = _predict(digits_model["path"], tmp_path / "good.png", tmp_path / name)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and name in lines[0] and fragment in lines[0]


def test_predict_refuses_a_4000_pixel_png_at_once(digits_model, tmp_path):
    Image.new("L", (4000, 4000)).save(tmp_path / "huge.png")
    start = time.perf_counter()
    result = _predict(digits_model["path"], tmp_path / "huge.png", "--resize", "bilinear")
    assert time.perf_counter() - start < 5   # loading the model included; the image itself costs ~0
    assert result.exit_code == 1 and "huge.png" in result.output and f"{MAX_SIDE}x{MAX_SIDE}" in result.output


def test_predict_refuses_an_empty_folder_and_incomplete_metadata(digits_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = _predict(digits_model["path"], tmp_path / "empty")
    assert result.exit_code == 1 and "empty: folder holds no images" in result.output
    path = tmp_path / "nomean.clcnn"
    digits_model["net"].save(path, metadata={
        "input_shape": [1, 32, 32], "preprocess": {"pad": 2, "std": 0.3}})
    _save(tmp_path / "d.png", digits_model["images"][0])
    result = _predict(path, tmp_path / "d.png")
    assert result.exit_code == 1 and "nomean.clcnn" in result.output and "mean" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_predict_resize_choices_match_read_image():
    option = next(p for p in cli.commands["predict"].params if p.name == "resize")
    assert tuple(option.type.choices) == RESIZE_CHOICES
