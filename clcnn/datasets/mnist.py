"""MNIST-format data: the embedded MNIST copy and folders of IDX files in MNIST naming.

A split is a pair of IDX files, ``{train,t10k}-images-idx3-ubyte`` (uint8, N x H x W) and
``{train,t10k}-labels-idx1-ubyte`` (uint8, N), each raw or with ``.gz`` appended.
"""
import functools
from importlib import resources
from pathlib import Path

from ..errors import DataError
from .cache import cached_array
from .idx import decode_idx, read_idx

# split name -> file prefix of the MNIST naming
_PREFIXES = {"train": "train", "test": "t10k"}


def split_files(split):
    """The (images, labels) file names of `split` ("train" or "test"), without ``.gz``."""
    if split not in _PREFIXES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    prefix = _PREFIXES[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def find_split(folder, split):
    """The (images, labels) paths of `split` in `folder` (raw preferred over .gz), or None
    when either file is missing."""
    found = []
    for name in split_files(split):
        paths = [p for p in (Path(folder) / name, Path(folder) / (name + ".gz")) if p.is_file()]
        if not paths:
            return None
        found.append(paths[0])
    return tuple(found)


def load_folder(path, split="train"):
    """(images uint8 (N, H, W), labels uint8 (N,)) of `split` from a folder of IDX files in
    MNIST naming. Raises `DataError` when a file is missing, corrupt or does not fit."""
    paths = find_split(path, split)
    if paths is None:
        expected = " and ".join(f"{n}[.gz]" for n in split_files(split))
        where = "folder" if Path(path).is_dir() else "folder (it does not exist)"
        raise DataError(f"no {split} split in {where} {path}: expected {expected}")
    return check_pair(read_idx(paths[0]), read_idx(paths[1]), path)


def check_pair(images, labels, where):
    """Check that an (images, labels) pair is MNIST-shaped uint8 data; return it."""
    if images.dtype != "u1" or images.ndim != 3:
        raise DataError(f"images in {where} must be uint8 of shape (N, H, W), "
                        f"got {images.dtype} of shape {images.shape}")
    if labels.dtype != "u1" or labels.ndim != 1:
        raise DataError(f"labels in {where} must be uint8 of shape (N,), "
                        f"got {labels.dtype} of shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{where} has {len(images)} images but {len(labels)} labels")
    return images, labels


def mnist(split="train"):
    """The embedded MNIST: (images uint8 (N, 28, 28), labels uint8 (N,)), N = 60000 for
    "train" and 10000 for "test". Decoded once per process; the arrays are read-only (shared
    by every caller), so ``.copy()`` them before changing them in place."""
    split_files(split)  # ValueError for a bad split, before the cache sees it
    return _embedded_mnist(split)


@functools.lru_cache(maxsize=None)
def _embedded_mnist(split):
    folder = resources.files(__package__) / "data" / "mnist"
    arrays = []
    for name in split_files(split):
        resource = folder / (name + ".gz")

        def decode(resource=resource):
            try:
                data = resource.read_bytes()
            except OSError as e:
                raise DataError(f"the embedded MNIST file {resource} is missing ({e}): "
                                "reinstall clcnn") from None
            return decode_idx(data, str(resource))

        # An installed package's files are on disk: their decoded arrays are cached.
        array = cached_array(resource, decode, writable=False) if isinstance(resource, Path) else decode()
        array.flags.writeable = False
        arrays.append(array)
    return check_pair(arrays[0], arrays[1], "the embedded MNIST")
