"""Image folders (one sub-folder per class, as torchvision's ImageFolder): images written with
Pillow read back exactly (PNG, BMP) or closely (JPEG), the deterministic held-out split, the
train/ test/ layout, channel handling, resizing, class names, dispatch by content, and one
DataError naming the folder or file for each kind of bad folder."""
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from clcnn.datasets import (FASHION_MNIST_CLASSES, channel_stats, class_names, dataset,
                            image_folder, write_idx)
from clcnn.errors import DataError


def save(path, array, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def make_folder(root, counts, shape=(6, 7, 3), seed=0, ext=".png"):
    """{class: n} images of `shape` (H, W[, 3]) in root/<class>/; returns {path: array}."""
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in counts.items():
        for k in range(n):
            array = rng.integers(0, 256, shape, dtype=np.uint8)
            written[save(root / name / f"img{k:03d}{ext}", array)] = array
    return written


def chw(array):
    return array.transpose(2, 0, 1) if array.ndim == 3 else array


@given(st.dictionaries(st.sampled_from(["ant", "Bee", "cat", "dog_2", "eel"]), st.integers(1, 6),
                       min_size=2, max_size=4),
       st.integers(1, 5), st.integers(1, 5), st.booleans(), st.integers(0, 3))
def test_round_trip_and_split(counts, h, w, colour, seed):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        written = make_folder(root, counts, (h, w, 3) if colour else (h, w), seed)
        classes = sorted(counts)
        assert class_names(root) == classes
        seen = {}
        held_out = {name: min(round(0.2 * n), n - 1) for name, n in counts.items()}
        for split in ("train", "test"):
            if split == "test" and not any(held_out.values()):
                with pytest.raises(DataError, match="the test split .* is empty"):
                    image_folder(root, split, seed=seed)
                continue
            images, labels = image_folder(root, split, seed=seed)
            assert images.dtype == np.uint8 and labels.dtype == np.uint8
            assert images.shape[1:] == ((3, h, w) if colour else (h, w))
            again = image_folder(root, split, seed=seed)            # deterministic
            assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)
            for image, label in zip(images, labels):
                matches = [p for p, a in written.items() if p.parent.name == classes[label]
                           and np.array_equal(chw(a), image) and p not in seen]
                assert matches, "an image that is not one of its class's files"
                seen[matches[0]] = split
        assert set(seen) == set(written)                           # each file once, in one split
        for name in counts:
            tests = sum(1 for p, s in seen.items() if p.parent.name == name and s == "test")
            assert tests == held_out[name]


def test_split_depends_on_seed_and_fraction(tmp_path):
    make_folder(tmp_path, {"a": 20, "b": 20})
    first = image_folder(tmp_path, "test", seed=0)[0]
    assert len(first) == 8
    assert not np.array_equal(first, image_folder(tmp_path, "test", seed=1)[0])
    assert len(image_folder(tmp_path, "test", test_fraction=0.5)[0]) == 20
    assert len(image_folder(tmp_path, "train", test_fraction=0.0)[0]) == 40
    with pytest.raises(DataError, match="empty"):
        image_folder(tmp_path, "test", test_fraction=0.0)
    # Adding files to one class leaves the other class's split as it was.
    before = image_folder(tmp_path, "test")
    make_folder(tmp_path, {"b": 30}, seed=9)      # b's img000..img019 are overwritten, 10 added
    after = image_folder(tmp_path, "test")
    assert np.array_equal(before[0][before[1] == 0], after[0][after[1] == 0])


def test_train_and_test_subfolders(tmp_path):
    train = make_folder(tmp_path / "train", {"x": 3, "y": 2, "z": 1}, seed=1)
    test = make_folder(tmp_path / "test", {"z": 2, "x": 1}, seed=2)    # y absent from test: fine
    assert class_names(tmp_path) == ["x", "y", "z"]
    images, labels = image_folder(tmp_path, "train")
    assert labels.tolist() == [0, 0, 0, 1, 1, 2] and len(images) == len(train)
    images, labels = image_folder(tmp_path, "test")
    assert labels.tolist() == [0, 2, 2]
    assert np.array_equal(images[0], chw(test[tmp_path / "test" / "x" / "img000.png"]))
    make_folder(tmp_path / "test", {"w": 1})
    with pytest.raises(DataError, match="classes that .* lacks: w"):
        image_folder(tmp_path, "test")


def test_grayscale_colour_and_channels(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    rgb = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    save(tmp_path / "gray" / "p" / "a.png", gray)
    save(tmp_path / "gray" / "q" / "a.png", np.dstack([255 - gray, np.full_like(gray, 7)]))  # + alpha
    images, _ = image_folder(tmp_path / "gray", test_fraction=0.0)
    assert images.shape == (2, 5, 4) and np.array_equal(images[1], 255 - gray)
    # One colour file makes the whole folder 3-channel; gray images are repeated.
    save(tmp_path / "gray" / "q" / "b.png", rgb)
    images, _ = image_folder(tmp_path / "gray", test_fraction=0.0)
    assert images.shape == (3, 3, 5, 4)
    assert np.array_equal(images[0], np.stack([gray] * 3)) and np.array_equal(images[2], chw(rgb))
    # channels=1: luminance by ITU-R 601-2, L = (299 R + 587 G + 114 B) / 1000.
    images, _ = image_folder(tmp_path / "gray", channels=1, test_fraction=0.0)
    luma = rgb.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert images.shape == (3, 5, 4) and np.abs(images[2] - luma).max() <= 1.0
    with pytest.raises(ValueError, match="channels"):
        image_folder(tmp_path / "gray", channels=2)


def test_other_formats_and_files_skipped(tmp_path):
    rng = np.random.default_rng(4)
    smooth = np.repeat(np.linspace(0, 255, 16, dtype=np.uint8)[None, :, None], 16, 0).repeat(3, 2)
    save(tmp_path / "a" / "deep" / "er" / "x.JPG", smooth, quality=95)
    bmp = save(tmp_path / "a" / "y.bmp", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    palette = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).quantize(8)
    (tmp_path / "b").mkdir()
    palette.save(tmp_path / "b" / "p.png")
    wide = (rng.integers(0, 65536, (16, 16))).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "b" / "w16.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    save(tmp_path / "b" / ".hidden.png", np.zeros((3, 3), np.uint8))      # another size: skipped
    images, labels = image_folder(tmp_path, test_fraction=0.0)
    assert labels.tolist() == [0, 0, 1, 1] and images.shape == (4, 3, 16, 16)
    # A class folder's own files first, then its sub-folders': a/y.bmp, a/deep/er/x.JPG.
    assert np.array_equal(images[0], chw(np.asarray(Image.open(bmp))))
    assert np.abs(images[1].astype(int) - chw(smooth)).max() <= 8           # JPEG, quality 95
    assert np.array_equal(images[2], chw(np.asarray(palette.convert("RGB"))))
    expected16 = np.rint(wide / 257.0)                                      # 16-bit scaled to 8
    assert np.array_equal(images[3], np.stack([expected16] * 3))


def test_sizes_refused_or_resized(tmp_path):
    save(tmp_path / "a" / "big.png", np.full((8, 10, 3), 200, np.uint8))
    save(tmp_path / "b" / "small.png", np.full((4, 6, 3), 50, np.uint8))
    with pytest.raises(DataError) as e:
        image_folder(tmp_path, test_fraction=0.0)
    message = str(e.value)
    assert "big.png is 10x8" in message and "small.png is 6x4" in message and "size=" in message
    images, _ = image_folder(tmp_path, size=(5, 7), test_fraction=0.0)
    assert images.shape == (2, 3, 5, 7)
    assert (images[0] == 200).all() and (images[1] == 50).all()            # flat stays flat
    assert image_folder(tmp_path, size=3, test_fraction=0.0)[0].shape == (2, 3, 3, 3)


def test_bad_folders(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        image_folder(tmp_path / "nowhere")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir()
    (tmp_path / "empty" / "b" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=f"no PNG, JPEG or BMP images in {tmp_path / 'empty'}"):
        image_folder(tmp_path / "empty")
    make_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(DataError, match=r"one class only \(only\)"):
        image_folder(tmp_path / "one")
    make_folder(tmp_path / "gap", {"a": 2})
    (tmp_path / "gap" / "b").mkdir()
    make_folder(tmp_path / "gap", {"c": 2})
    with pytest.raises(DataError, match=f"class folder {tmp_path / 'gap' / 'b'} holds no"):
        image_folder(tmp_path / "gap")


@pytest.mark.parametrize("damage", ["truncated jpeg", "garbage png"])
def test_corrupt_image_named(tmp_path, damage):
    make_folder(tmp_path, {"a": 2, "b": 2}, shape=(32, 32, 3), ext=".jpg")
    bad = tmp_path / "b" / "img001.jpg"
    if damage == "truncated jpeg":
        bad.write_bytes(bad.read_bytes()[:300])
    else:
        bad = tmp_path / "a" / "zz.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    with pytest.raises(DataError) as e:
        image_folder(tmp_path, test_fraction=0.0)
    assert f"cannot read image {bad}" in str(e.value) and "replace or remove it" in str(e.value)


def test_dataset_and_class_names_dispatch(tmp_path):
    written = make_folder(tmp_path / "pics", {"cat": 5, "dog": 5})
    images, labels = dataset(tmp_path / "pics", "test")
    assert images.shape == (2, 3, 6, 7) and labels.tolist() == [0, 1]
    assert any(np.array_equal(chw(a), images[0]) for a in written.values())
    assert class_names(tmp_path / "pics") == ["cat", "dog"]
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "t10k-images-idx3-ubyte.gz", np.zeros((3, 4, 4), np.uint8))
    write_idx(idx / "t10k-labels-idx1-ubyte.gz", np.array([0, 4, 2], np.uint8))
    assert dataset(idx, "test")[1].tolist() == [0, 4, 2]
    assert class_names(idx) == ["0", "1", "2", "3", "4"]
    assert class_names("mnist") == [str(d) for d in range(10)]
    assert class_names("fashion-mnist") == list(FASHION_MNIST_CLASSES)
    assert class_names("fashion-mnist")[9] == "Ankle boot"
    (tmp_path / "neither" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="neither a folder of IDX files nor an image folder"):
        dataset(tmp_path / "neither")
    with pytest.raises(DataError, match="unknown dataset"):
        class_names("imagenet")


def test_channel_stats(tmp_path):
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (5, 3, 4, 4), dtype=np.uint8)
    mean, std = channel_stats(images)
    for c in range(3):
        values = images[:, c].astype(np.float64).ravel() / 255
        assert mean[c] == pytest.approx(values.mean(), rel=1e-12)
        assert std[c] == pytest.approx(values.std(), rel=1e-12)
    gray_mean, _ = channel_stats(images[:, 0])
    assert gray_mean == pytest.approx(mean[:1])
