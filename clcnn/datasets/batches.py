"""From uint8 images to training batches: normalisation and padding, shuffled index batches,
random-shift augmentation. NumPy only and vectorised, so it never holds a training step up.

Typical use in a training loop::

    x = prepare_images(images, pad=2)               # (N, 1, 32, 32) float32, once
    for idx in iterate_batches(len(x), 64, shuffle=True, rng=rng):
        xb = random_shift(x[idx], 2, rng)           # augmentation, train only
        yb = labels[idx]
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# The mean and standard deviation of MNIST training pixels scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


def background_value(mean=MNIST_MEAN, std=MNIST_STD):
    """The normalised value of a 0 (background) pixel: (0 - mean) / std; a tuple of one value
    per channel when mean or std is a sequence (the per-channel fill of augmentation)."""
    if np.ndim(mean) == 0 and np.ndim(std) == 0:
        return (0.0 - mean) / std
    return tuple(((0.0 - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)).tolist())


BACKGROUND = background_value()


def prepare_images(images, pad=0, mean=MNIST_MEAN, std=MNIST_STD):
    """uint8 images (N, H, W) or (N, C, H, W) -> float32 (N, C, H + 2 pad, W + 2 pad) with
    value (pixel / 255 - mean) / std; the padding holds the value of a 0 pixel (background),
    as if the images had been padded before normalising. `mean` and `std` are one number, or
    one per channel (CIFAR-10's: clcnn.datasets.CIFAR10_MEAN, CIFAR10_STD)."""
    images = _channels_first(images, "prepare_images")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, c, h, w = images.shape
    scale, shift, background = (v.reshape(-1, 1, 1) for v in normalization(mean, std, c))
    out = np.empty((n, c, h + 2 * pad, w + 2 * pad), np.float32)
    out[...] = background
    inner = out[:, :, pad:pad + h, pad:pad + w]
    np.multiply(images, scale, out=inner)
    inner -= shift
    return out


def normalization(mean, std, channels):
    """float32 (3, channels): per channel the scale 1 / (255 std), the shift mean / std and the
    background (0 - mean) / std, so that a pixel p becomes p * scale - shift (rounded to float32
    after the product and after the difference). prepare_images and the device's batch gather
    (clcnn.ops.data.batch_gather) both compute with these, so they agree bit for bit."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    for name, value in (("mean", mean), ("std", std)):
        if value.ndim > 1 or value.size not in (1, channels):
            raise ValueError(f"{name} must be one number or {channels} (one per channel), got {value.tolist()}")
    rows = (1.0 / (255.0 * std), mean / std, np.asarray(background_value(mean, std)))
    return np.stack([np.broadcast_to(np.asarray(r, np.float32).reshape(-1), (channels,)) for r in rows])


def _channels_first(images, what):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"{what} takes uint8 images, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4:
        raise ValueError(f"{what} takes images of shape (N, H, W) or (N, C, H, W), got {images.shape}")
    return images


class PreparedImages:
    """uint8 images with the preparation of prepare_images, applied when read: behaves as the
    float32 array prepare_images(images, pad, mean, std) would (shape, dtype, len, indexing,
    np.asarray) without holding it. Trainer.fit uploads the uint8 images and normalises each
    batch on the device; evaluation normalises one slice at a time on the host. `take(index)`
    selects images without copying them (it keeps an index into the same uint8 array)."""

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, images, pad=0, mean=MNIST_MEAN, std=MNIST_STD, _index=None):
        self.base = _channels_first(images, "PreparedImages")
        if pad < 0:
            raise ValueError(f"pad must be >= 0, got {pad}")
        self.pad, self.mean, self.std, self.index = int(pad), mean, std, _index
        self.norm = normalization(mean, std, self.base.shape[1])   # checks mean and std
        _, c, h, w = self.base.shape
        self.shape = (len(self.base) if _index is None else len(_index), c, h + 2 * pad, w + 2 * pad)

    def __len__(self):
        return self.shape[0]

    @property
    def size(self):
        return int(np.prod(self.shape))

    @property
    def nbytes(self):
        return self.size * 4

    @property
    def images(self):
        """The uint8 images (N, C, H, W) of this set (a copy when it was taken from a larger one)."""
        return self.base if self.index is None else self.base[self.index]

    def source(self):
        """(uint8 images, index or None) to upload: this set's images are images[index]. The
        larger array is shared when this set is at least half of it, sparing a host copy."""
        if self.index is None or 2 * len(self.index) >= len(self.base):
            return self.base, self.index
        return self.images, None

    def take(self, index):
        rows = np.arange(len(self))[index]
        if np.ndim(rows) != 1:
            raise IndexError(f"take selects images with a slice, an index array or a mask, got {index!r}")
        return PreparedImages(self.base, self.pad, self.mean, self.std,
                              _index=rows if self.index is None else self.index[rows])

    def __getitem__(self, index):
        if isinstance(index, tuple):
            first, rest = index[0], index[1:]
            return self[first][rest if np.ndim(first) == 0 and not isinstance(first, slice)
                               else (slice(None), *rest)]
        rows = self.base[index if self.index is None else self.index[index]]
        if isinstance(index, (int, np.integer)):
            return prepare_images(rows[None], self.pad, self.mean, self.std)[0]
        return prepare_images(rows, self.pad, self.mean, self.std)

    def __array__(self, dtype=None, copy=None):
        out = prepare_images(self.images, self.pad, self.mean, self.std)
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self):
        return f"PreparedImages({self.shape[0]} images {self.base.shape[1:]} uint8, pad={self.pad})"


def iterate_batches(n, batch_size, shuffle=True, rng=None):
    """Yield index arrays that cover range(n) once: in order, or in a random order drawn from
    `rng` (a numpy Generator or a seed) when `shuffle`; the last batch may be smaller."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(rng).permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def shift_images(batch, shifts, fill=BACKGROUND):
    """Move each image of `batch` (N, C, H, W) by its own whole-pixel amount: ``shifts[i] =
    (dy, dx)`` moves image i down by dy and right by dx (negative: up, left), so that
    ``out[i, :, y, x] = batch[i, :, y - dy, x - dx]``; uncovered pixels get `fill`."""
    batch = np.asarray(batch)
    shifts = np.asarray(shifts, dtype=np.intp).reshape(len(batch), 2)
    m = int(np.abs(shifts).max()) if len(batch) else 0
    if m == 0:
        return batch.copy()
    n, c, h, w = batch.shape
    padded = np.full((n, c, h + 2 * m, w + 2 * m), fill, batch.dtype)
    padded[:, :, m:m + h, m:m + w] = batch
    # Every H x W window of the padded images, indexed by its top-left corner (no copy);
    # image i takes the window whose corner is (m - dy, m - dx).
    windows = sliding_window_view(padded, (h, w), axis=(2, 3))  # (N, C, 2m+1, 2m+1, H, W)
    return windows[np.arange(n), :, m - shifts[:, 0], m - shifts[:, 1]]


def random_shift(batch, max_shift, rng=None, fill=BACKGROUND):
    """`shift_images` by amounts drawn per image, uniform in [-max_shift, max_shift] for y and
    x independently: ``rng.integers(-max_shift, max_shift + 1, size=(N, 2))`` (dy, dx) from
    `rng` (a numpy Generator or a seed). `fill` defaults to the MNIST-normalised background."""
    rng = np.random.default_rng(rng)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(batch), 2))
    return shift_images(batch, shifts, fill)
