"""Random crop (shift) and horizontal flip: the per-image draws and a NumPy version.

The Trainer draws each batch's augmentation from (seed, epoch, batch) with `augment_draw` and
applies it on the device (clcnn.ops.data.batch_gather) or, when the data stays on the host,
with `crop_flip`; both give the same pixels. A shift of up to p pixels filled with the value
of a black pixel is torchvision's ``RandomCrop(size, padding=p)``; the flip is its
``RandomHorizontalFlip()``.
"""
import numpy as np

from .batches import shift_images


def augment_draw(seed, epoch, batch, count, max_shift, flip=False):
    """(shifts int (count, 2), flips int (count,) or None) for one batch: (dy, dx) uniform in
    [-max_shift, max_shift], then a fair coin per image when `flip`, from the generator
    ``default_rng([seed, epoch, batch])``. The shifts equal those of the Trainer's shift-only
    augmentation for the same (seed, epoch, batch), so adding flips leaves them unchanged."""
    rng = np.random.default_rng([seed, epoch, batch])
    shifts = rng.integers(-max_shift, max_shift + 1, size=(count, 2))
    flips = rng.integers(0, 2, size=count) if flip else None
    return shifts, flips


def crop_flip(batch, shifts=None, flips=None, fill=0.0):
    """`batch` (N, C, H, W) with image i moved by shifts[i] = (dy, dx) (uncovered pixels =
    fill: one number or one per channel), then mirrored left-right where flips[i] is nonzero:
    ``out[i, c, y, x] = batch[i, c, y - dy, x' - dx]``, ``x' = W - 1 - x`` when flipped."""
    batch = np.asarray(batch)
    out = batch.copy()
    if shifts is not None:
        fill = np.asarray(fill, dtype=batch.dtype)
        if fill.ndim == 1:
            fill = fill.reshape(-1, 1, 1)   # one value per channel: broadcast over (C, H, W)
        out = shift_images(batch, shifts, fill)
    if flips is not None:
        flipped = np.asarray(flips).astype(bool)
        out[flipped] = out[flipped, :, :, ::-1]
    return out


def random_crop_flip(batch, max_shift, rng=None, fill=0.0, flip=True):
    """`crop_flip` with shifts up to `max_shift` and flips drawn from `rng` (a numpy Generator
    or a seed) as `augment_draw` draws them."""
    rng = np.random.default_rng(rng)
    shifts = rng.integers(-max_shift, max_shift + 1, size=(len(batch), 2))
    flips = rng.integers(0, 2, size=len(batch)) if flip else None
    return crop_flip(batch, shifts, flips, fill)
