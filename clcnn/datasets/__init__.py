"""Data sets for clcnn: the embedded MNIST, Fashion-MNIST and CIFAR-10 (found on disk or
downloaded), folders of IDX files in MNIST naming, image folders with one sub-folder per class,
and the batching and augmentation helpers the Trainer uses.

Every loader returns (images uint8, labels uint8 (N,)): images (N, H, W) for 1-channel data
and (N, 3, H, W) for colour.
"""
from pathlib import Path

from ..errors import DataError
from .augment import augment_draw, crop_flip, random_crop_flip
from .batches import (BACKGROUND, MNIST_MEAN, MNIST_STD, PreparedImages, background_value,
                      iterate_batches, prepare_images, random_shift, shift_images)
from .cifar import CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, cifar10
from .fashion import FASHION_MNIST_CLASSES, fashion_mnist
from .folder import channel_stats, image_folder, is_image_folder
from .folder import class_names as folder_class_names
from .idx import read_idx, write_idx
from .mnist import find_split, load_folder, mnist

__all__ = ["dataset", "class_names", "mnist", "fashion_mnist", "cifar10", "image_folder",
           "load_folder", "read_idx", "write_idx", "prepare_images", "PreparedImages", "iterate_batches",
           "shift_images", "random_shift", "augment_draw", "crop_flip", "random_crop_flip",
           "channel_stats", "background_value", "BACKGROUND", "MNIST_MEAN", "MNIST_STD",
           "CIFAR10_MEAN", "CIFAR10_STD", "MNIST_CLASSES", "FASHION_MNIST_CLASSES",
           "CIFAR10_CLASSES"]

MNIST_CLASSES = tuple(str(digit) for digit in range(10))

_FASHION = ("fashion-mnist", "fashion_mnist", "fashionmnist")
_CIFAR10 = ("cifar10", "cifar-10", "cifar_10")
_KNOWN = "use 'mnist', 'fashion-mnist', 'cifar10' or the path of a folder"
_FOLDERS = ("holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (IDX files) or one "
            "sub-folder of PNG/JPEG/BMP images per class")


def dataset(name_or_path, split="train", data_dir=None):
    """(images, labels) of `split` ("train" or "test") from "mnist" (the embedded copy),
    "fashion-mnist" (see `fashion_mnist`), "cifar10" (see `cifar10`; for both, `data_dir` is
    the first folder to search) or the path of a folder: of IDX files in MNIST naming, or of
    images with one sub-folder per class (see `image_folder`, with its default split)."""
    name = str(name_or_path)
    if name.lower() == "mnist":
        return mnist(split)
    if name.lower() in _FASHION:
        return fashion_mnist(split, data_dir=data_dir)
    if name.lower() in _CIFAR10:
        return cifar10(split, data_dir=data_dir)
    return _folder(name, lambda: load_folder(name, split), lambda: image_folder(name, split))


def class_names(name_or_path):
    """The class names of a dataset, label k's name at index k: MNIST's digits "0".."9",
    Fashion-MNIST's and CIFAR-10's ten names, an image folder's sub-folder names, and "0",
    "1", ... up to the largest label for a folder of IDX files."""
    name = str(name_or_path)
    if name.lower() == "mnist":
        return list(MNIST_CLASSES)
    if name.lower() in _FASHION:
        return list(FASHION_MNIST_CLASSES)
    if name.lower() in _CIFAR10:
        return list(CIFAR10_CLASSES)
    return _folder(name, lambda: _idx_class_names(name), lambda: folder_class_names(name))


def _folder(path, idx, images):
    """Call `idx` for a folder of IDX files, `images` for an image folder: told apart by
    content, IDX files first."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"unknown dataset {path!r}: {_KNOWN} {_FOLDERS}")
    if any(find_split(folder, s) is not None for s in ("train", "test")) or any(
            p.name.endswith(("-ubyte", "-ubyte.gz")) for p in folder.iterdir()):
        return idx()
    if is_image_folder(folder):
        return images()
    raise DataError(f"{path} is neither a folder of IDX files nor an image folder: it must be a "
                    f"folder {_FOLDERS}")


def _idx_class_names(path):
    split = "train" if find_split(path, "train") is not None else "test"
    labels = load_folder(path, split)[1]
    return [str(k) for k in range(int(labels.max(initial=0)) + 1)]
