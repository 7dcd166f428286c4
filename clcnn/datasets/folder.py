"""Image folders as torchvision's ImageFolder: one sub-folder per class of PNG, JPEG or BMP
files, read with Pillow.

    root/cat/001.png, root/cat/sub/002.jpg, root/dog/003.bmp, ...

Class names are the sorted sub-folder names; label k is the k-th name. Files are taken from
all depths of a class folder, folder by folder in sorted order (a folder's own files, sorted,
before its sub-folders'); names starting with "." and other extensions are skipped. The held-out test split is either given (``root/train/<class>/...`` and
``root/test/<class>/...``) or drawn: a fixed fraction of each class, chosen by a seeded
shuffle of that class's files alone, so the split never changes between runs and one class's
files do not move another's.
"""
import os
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_KINDS = "PNG, JPEG or BMP"
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def image_folder(path, split="train", size=None, channels=None, test_fraction=0.2, seed=0):
    """(images uint8, labels uint8 (N,)) of `split` ("train" or "test") of an image folder.

    Images come back (N, H, W) for 1 channel and (N, 3, H, W) for 3. channels: 1 (grayscale,
    colour converted to luminance), 3 (RGB, grayscale repeated), or None: 1 when every image of
    the folder is grayscale, else 3. Alpha is dropped. size: None (all images must have one
    size), an int (square) or (height, width) to resize every image to (bilinear).
    test_fraction and seed choose the test split when the folder has no train/ and test/
    sub-folders: round(test_fraction * n) of each class's n files (at most n - 1).
    Raises `DataError` naming the folder or file for no images, one class, an empty class
    folder, mixed sizes and unreadable images."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in [0, 1), got {test_fraction}")
    root, classes = Path(path), class_names(path)
    split_root = _split_root(root)
    by_class = _class_files(split_root(split) if split_root else root, classes, required=not split_root
                            or split == "train")
    files, labels = [], []
    for label, name in enumerate(classes):
        chosen = by_class.get(name, [])
        if not split_root:
            chosen = _held_out(chosen, name, split, test_fraction, seed)
        files += chosen
        labels += [label] * len(chosen)
    if not files and split_root:
        raise DataError(f"{split_root(split)} holds no {_KINDS} images in its class folders")
    if not files:
        raise DataError(f"the {split} split of image folder {root} is empty: with "
                        f"test_fraction={test_fraction} no image is held out; raise it or add images")
    images = _read_all(files, size, channels, _all_gray(root) if channels is None else None)
    return images, np.array(labels, np.uint8)


def class_names(path):
    """The class names of an image folder: its sorted sub-folder names (those of train/ when it
    has train/ and test/). Raises `DataError` when it has no images or only one class."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    split_root = _split_root(root)
    top = split_root("train") if split_root else root
    classes = sorted(p.name for p in top.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not any(_images_in(top / name) for name in classes):
        raise DataError(f"no {_KINDS} images in {top}: an image folder holds one sub-folder per "
                        f"class of images ({top / 'cat' / '001.png'}, {top / 'dog' / '002.jpg'}, ...)")
    if len(classes) < 2:
        raise DataError(f"image folder {top} has one class only ({classes[0]}): a classifier "
                        "needs at least two sub-folders of images")
    if split_root:
        extra = sorted(p.name for p in split_root("test").iterdir()
                       if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
        if extra:
            raise DataError(f"{split_root('test')} has classes that {top} lacks: {', '.join(extra)}")
    return classes


def is_image_folder(path):
    """True when `path` is a folder whose sub-folders (or those of its train/) hold images."""
    root = Path(path)
    if not root.is_dir():
        return False
    split_root = _split_root(root)
    top = split_root("train") if split_root else root
    return any(p.is_dir() and _images_in(p) for p in top.iterdir())


def channel_stats(images):
    """(mean, std) per channel of uint8 images (N, H, W) or (N, C, H, W) scaled to [0, 1], as
    tuples: the `mean` and `std` that prepare_images takes, computed on a train split."""
    x = np.asarray(images)
    x = x[:, None] if x.ndim == 3 else x
    axes = (0, 2, 3)
    mean = x.mean(axis=axes, dtype=np.float64) / 255.0
    std = x.std(axis=axes, dtype=np.float64) / 255.0
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def _split_root(root):
    """A function split -> folder when `root` has train/ and test/ sub-folders, else None."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        return lambda split: root / split
    return None


def _images_in(folder):
    """The image files under `folder`, at any depth: its own files sorted by name, then each
    sub-folder's, in sorted order."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def _class_files(top, classes, required=True):
    """{class name: sorted image paths} under `top`; an empty class folder is refused when
    `required` (a test/ folder may lack classes)."""
    by_class = {}
    for name in classes:
        files = _images_in(top / name) if (top / name).is_dir() else []
        if not files and required:
            raise DataError(f"class folder {top / name} holds no {_KINDS} image: add images or "
                            "remove the folder")
        by_class[name] = files
    return by_class


def _held_out(files, name, split, fraction, seed):
    """The files of one class that fall in `split`: round(fraction * n) of them (at most
    n - 1) are the test split, chosen by a shuffle seeded by (seed, the class name)."""
    n = len(files)
    n_test = min(int(round(fraction * n)), max(n - 1, 0))
    order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(n)
    test = np.zeros(n, bool)
    test[order[:n_test]] = True
    return [f for f, t in zip(files, test) if t == (split == "test")]


def _all_gray(root):
    """True when every image of the folder (both splits) is grayscale: the channel count then
    is 1 for both splits alike."""
    from PIL import Image
    for path in _images_in(root):
        try:
            with Image.open(path) as img:
                if img.mode not in _GRAY_MODES and not (img.mode == "P" and _gray_palette(img)):
                    return False
        except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
            raise _unreadable(path, e) from None
    return True


def _gray_palette(img):
    rgb = np.asarray(img.getpalette("RGB") or [0, 0, 0]).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _read_all(files, size, channels, all_gray):
    """Stack the images of `files` as uint8 (N, H, W) or (N, 3, H, W)."""
    mode = "L" if channels == 1 or (channels is None and all_gray) else "RGB"
    if isinstance(size, int):
        size = (size, size)
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise ValueError(f"size must be None, an int or (height, width), got {size!r}")
    arrays, first = [], None
    for path in files:
        array = _read(path, mode, size)
        if first is None:
            first = (path, array.shape)
        elif array.shape != first[1]:
            raise DataError(f"images differ in size: {first[0]} is {_wxh(first[1])} but {path} is "
                            f"{_wxh(array.shape)} (width x height); pass size=(height, width) "
                            "to resize them all")
        arrays.append(array)
    images = np.stack(arrays)
    return images if mode == "L" else np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def _wxh(shape):
    return f"{shape[1]}x{shape[0]}"


def _read(path, mode, size):
    from PIL import Image
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode.startswith("I;16") or img.mode == "I":
                # 16-bit grayscale: scale to 8 bits (Pillow's own conversion clips at 255).
                wide = np.asarray(img, dtype=np.float64)
                img = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
            img = img.convert("RGBA" if img.mode == "P" else img.mode).convert(mode)
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad file
        raise _unreadable(path, e) from None


def _unreadable(path, error):
    return DataError(f"cannot read image {path} ({error}): the file is corrupt or not a "
                     f"{_KINDS} image; replace or remove it")
