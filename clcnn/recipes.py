"""What `clcnn train MODEL --dataset D` means: the model built for the data's channels, classes
and size, the preprocessing (padding, per-channel normalisation), the augmentation and the
default hyperparameters. The CLI and the distributed trainer both start from here."""
import os

import numpy as np

from . import datasets, models
from .datasets.batches import background_value
from .errors import DataError

# Normalisation of the named datasets (mean, std of the training images in [0, 1]).
DATASET_STATS = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.2860, 0.3530),
    "cifar10": (datasets.CIFAR10_MEAN, datasets.CIFAR10_STD),
}
ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "cifar-10": "cifar10"}

# The input side the chain models' dense layers are built for (graph models take any size).
FIXED_INPUT = {"lenet5": 32, "mnist-cnn": 28}

DEFAULTS = {  # epochs, batch size, optimizer, learning rate, weight decay
    "lenet5": dict(epochs=15, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4),
    "mnist-cnn": dict(epochs=12, batch_size=64, optimizer="sgd", lr=0.05, weight_decay=5e-4),
    "resnet20": dict(epochs=30, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=5e-4),
    "mobilenet-small": dict(epochs=30, batch_size=128, optimizer="sgd", lr=0.1, weight_decay=4e-5),
}


def dataset_id(name):
    """The dataset as recorded in checkpoints: a known name, or the absolute path of a folder."""
    name = str(name)
    if os.path.exists(name):
        return os.path.abspath(name)
    return ALIASES.get(name.lower(), name.lower())


def load_split(name, split, data_dir=None):
    """(uint8 images (N, C, H, W), labels) of a dataset split, always with a channel axis."""
    images, labels = datasets.dataset(name, split, data_dir=data_dir)
    if images.ndim == 3:
        images = images[:, None]
    return images, labels


def preprocess_for(model, name, train_images):
    """{"pad", "mean", "std"} for MODEL on the dataset: padding up to the size a chain model
    needs, the dataset's normalisation (per channel; measured on the training images for
    folders)."""
    size = train_images.shape[-1]
    pad = 0
    if model in FIXED_INPUT:
        want = FIXED_INPUT[model]
        pad = (want - size) // 2
        if pad < 0 or size + 2 * pad != want or train_images.shape[-2] != size:
            raise DataError(f"{model} takes {want}x{want} images (after padding); this dataset's are "
                            f"{train_images.shape[-2]}x{size}: choose resnet20 or mobilenet-small, which take any size")
    key = dataset_id(name)
    if key in DATASET_STATS:
        mean, std = DATASET_STATS[key]
    else:
        mean, std = datasets.channel_stats(train_images)
    if np.ndim(mean) and len(mean) != train_images.shape[1]:
        raise DataError(f"dataset {name}: {len(mean)} channel statistics for {train_images.shape[1]}-channel images")
    as_list = (lambda v: [float(x) for x in v] if np.ndim(v) else float(v))
    return {"pad": pad, "mean": as_list(mean), "std": as_list(std)}


def prepare(images, prep):
    """The uint8 images as datasets.PreparedImages: read as float32 prepared by `prep`, but
    normalised only when read (Trainer.fit does it on the device, batch by batch)."""
    return datasets.PreparedImages(images, pad=prep["pad"], mean=prep["mean"], std=prep["std"])


def build_model(model, channels, classes, size, device=None):
    """MODEL for images of `channels` x size x size (after preprocessing) and `classes` classes."""
    build = models.MODELS[model][0]
    if model in FIXED_INPUT:
        return build(in_channels=channels, num_classes=classes, device=device)
    return build(in_channels=channels, num_classes=classes, input_size=size, device=device)


def augmentation(channels, prep):
    """Trainer keyword arguments for --augment: shifts of up to 2 pixels for digits; for colour
    images the CIFAR recipe (4 pixels of padding, a random crop, horizontal flips)."""
    fill = background_value(prep["mean"], prep["std"])
    if channels == 3:
        return {"augment_shift": 4, "augment_flip": True, "augment_fill": fill}
    return {"augment_shift": 2, "augment_fill": fill}
