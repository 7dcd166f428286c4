"""Data sets for clcnn: the embedded MNIST, Fashion-MNIST (found on disk or downloaded), any
folder of IDX files in MNIST naming, and the batching helpers the Trainer uses.

Every loader returns (images uint8 (N, H, W), labels uint8 (N,)).
"""
from pathlib import Path

from ..errors import DataError
from .batches import (BACKGROUND, MNIST_MEAN, MNIST_STD, background_value, iterate_batches,
                      prepare_images, random_shift, shift_images)
from .fashion import fashion_mnist
from .idx import read_idx, write_idx
from .mnist import load_folder, mnist

__all__ = ["dataset", "mnist", "fashion_mnist", "load_folder", "read_idx", "write_idx",
           "prepare_images", "iterate_batches", "shift_images", "random_shift",
           "background_value", "BACKGROUND", "MNIST_MEAN", "MNIST_STD"]


def dataset(name_or_path, split="train", data_dir=None):
    """(images, labels) of `split` ("train" or "test") from "mnist" (the embedded copy),
    "fashion-mnist" (see `fashion_mnist`; `data_dir` is its first folder to search) or the
    path of a folder of IDX files in MNIST naming."""
    name = str(name_or_path)
    if name.lower() == "mnist":
        return mnist(split)
    if name.lower() in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return fashion_mnist(split, data_dir=data_dir)
    if Path(name).is_dir():
        return load_folder(name, split)
    raise DataError(f"unknown dataset {name!r}: use 'mnist', 'fashion-mnist' or the path of a "
                    "folder holding {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]")
