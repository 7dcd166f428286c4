"""Image files in for prediction (through Pillow, plus NumPy's .npy); pictures out are
clcnn.plot's (matplotlib).

`read_image` gives float32 (channels, H, W) in [0, 1]. Every way a file could give a wrong
prediction without an error (0-255 floats, NaN, a corrupt or truncated file, a size that only
fits after distortion) is refused with a DataError naming the file.
"""
import os
import warnings

import numpy as np

from .errors import DataError

MAX_SIDE = 2048            # larger images are refused from the header, before any decoding
ASPECT_TOLERANCE = 0.05    # resizing refuses aspect ratios further apart than this (5%)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pnm",
                  ".pbm", ".webp", ".npy")
RESIZE_CHOICES = ("refuse", "nearest", "bilinear", "bicubic", "lanczos", "stretch")
_NPY_MAGIC = b"\x93NUMPY"
_HIGH_BIT_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")   # 16-bit PNG/TIFF/PGM: 0..65535
_LUMINANCE = np.array([0.299, 0.587, 0.114])                 # ITU-R 601, as Pillow's "L"


def read_image(path, channels=1, size=None, resize="refuse", max_side=MAX_SIDE):
    """One image file as float32 (channels, H, W) in [0, 1].

    Files: PNG, JPEG, BMP, GIF (first frame), TIFF, PGM/PPM, WebP (anything Pillow reads), any
    mode and 8 or 16 bits; or a .npy array of shape (H, W) or (C, H, W) with C 1 or 3, integer
    (0-255, or 0-65535 for uint16) or float in [0, 1] (floats outside [0, 1], such as 0-255
    values, are refused, not guessed at; so are NaN and Inf).

    channels: 1 gives luminance (0.299 R + 0.587 G + 0.114 B, as Pillow's "L"), 3 gives RGB
    (grayscale repeated). Transparent pixels count as black (colour times alpha), the
    background of MNIST-style digits.

    size: (H, W) wanted, or None to keep the file's. A different size is refused when resize is
    "refuse"; "nearest", "bilinear", "bicubic" or "lanczos" resize with that Pillow filter when
    the aspect ratios (W / H) differ by at most 5%, and refuse otherwise; "stretch" resizes
    bilinearly whatever the aspect ratio.

    max_side: images wider or taller than this are refused from the header, before decoding.
    """
    path = os.fspath(path)
    if channels not in (1, 3):
        raise ValueError(f"read_image: channels must be 1 or 3, got {channels!r}")
    if resize not in RESIZE_CHOICES:
        raise ValueError(f"read_image: resize must be one of {', '.join(RESIZE_CHOICES)}; got {resize!r}")
    if size is not None:
        size = tuple(size)
        if len(size) != 2 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in size):
            raise ValueError(f"read_image: size must be (height, width) in pixels, got {size!r}")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    reader = _read_npy if magic == _NPY_MAGIC else _read_pillow
    image = reader(path, channels, size, resize, max_side)
    if size is not None and image.shape[1:] != size:
        image = _resize(image, size, resize)
    return image.astype(np.float32)


def list_images(paths):
    """The image files among paths, in the order given; a folder gives its files with an image
    suffix (IMAGE_SUFFIXES, any case), sorted by name, not descending into sub-folders."""
    found = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES)
                           and os.path.isfile(os.path.join(path, n)))
            if not names:
                raise DataError(f"{path}: folder holds no images (files ending in {', '.join(IMAGE_SUFFIXES)})")
            found += [os.path.join(path, n) for n in names]
        elif os.path.exists(path):
            found.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    if not found:
        raise DataError("no images given: pass image files or folders of images")
    return found


# ----------------------------------------------------------------------------------- readers

def _check_size(path, height, width, size, resize, max_side):
    """Refuse from the header alone, so a huge file costs nothing to reject."""
    if height < 1 or width < 1:
        raise DataError(f"{path}: image is empty ({height}x{width} pixels)")
    if height > max_side or width > max_side:
        raise DataError(f"{path}: image is {height}x{width} pixels (height x width), above the limit of "
                        f"{max_side}x{max_side}; shrink it first (or raise read_image's max_side)")
    if size is None or (height, width) == size:
        return
    if resize == "refuse":
        raise DataError(f"{path}: image is {height}x{width} (height x width), the model takes {size[0]}x{size[1]}; "
                        f"resize it first or choose a resize filter (--resize bilinear, resize='bilinear')")
    ratio = (width / height) / (size[1] / size[0])
    if resize != "stretch" and max(ratio, 1 / ratio) > 1 + ASPECT_TOLERANCE:
        raise DataError(f"{path}: image is {height}x{width} (height x width), its aspect ratio differs from "
                        f"the model's {size[0]}x{size[1]} by more than {ASPECT_TOLERANCE:.0%}; crop it first, "
                        f"or resize with --resize stretch to distort it")


def _check_float(path, array):
    finite = np.isfinite(array)
    if not finite.all():
        raise DataError(f"{path}: {array.size - int(finite.sum())} of {array.size} values are NaN or Inf; "
                        f"an image needs finite values in [0, 1]")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 1:
        hint = " (0-255 pixels: divide them by 255)" if high <= 255 and low >= 0 else ""
        raise DataError(f"{path}: float image holds values from {low:g} to {high:g}, outside [0, 1]; "
                        f"clcnn does not guess a scale: save it scaled to [0, 1]{hint}")


def _read_npy(path, channels, size, resize, max_side):
    try:
        # A memory map reads only the header, so the shape is checked before the data is read;
        # files it cannot map (empty arrays, some truncated files) are read whole.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError):
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy file (corrupt or truncated): {exc}") from None
    shape = array.shape
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]      # one image with a batch axis: (1, C, H, W)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        hint = "; for (H, W, C) use np.moveaxis(a, -1, 0)" if len(shape) == 3 and shape[-1] in (1, 3, 4) else ""
        raise DataError(f"{path}: expected one image of shape (H, W) or (C, H, W) with C 1 or 3, "
                        f"got shape {array.shape}{hint}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
        raise DataError(f"{path}: .npy of dtype {array.dtype} is not an image; save uint8 or float pixels")
    _check_size(path, shape[1], shape[2], size, resize, max_side)
    array = np.array(array).reshape(shape)
    if array.dtype == np.bool_:
        array = array.astype(np.float64)
    elif np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.dtype == np.uint16 else 255
        if array.min() < 0 or array.max() > top:
            raise DataError(f"{path}: {array.dtype} image holds values from {array.min()} to {array.max()}, "
                            f"outside 0-{top}; save 8-bit pixels as uint8 or floats in [0, 1]")
        array = array.astype(np.float64) / top
    else:
        array = array.astype(np.float64)
        _check_float(path, array)
    return _to_channels(array, channels)


def _read_pillow(path, channels, size, resize, max_side):
    from PIL import Image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)       # reads the header only
    except Exception as exc:  # Pillow raises many types for a file it cannot identify.
        raise DataError(f"{path}: {_pillow_reason(exc, max_side)}") from None
    with image:
        width, height = image.size
        _check_size(path, height, width, size, resize, max_side)
        try:
            image.load()
        except Exception as exc:  # corrupt or truncated data: OSError, SyntaxError, ValueError, ...
            raise DataError(f"{path}: corrupt or truncated {image.format} file ({exc}); "
                            f"save it again or convert it to PNG") from None
        return _pixels(path, image, channels)


def _pillow_reason(exc, max_side):
    from PIL import Image, UnidentifiedImageError
    if isinstance(exc, UnidentifiedImageError):
        return ("not an image file clcnn can read (PNG, JPEG, BMP, GIF, TIFF, PGM/PPM, WebP or .npy), "
                "or one cut short before its header ends")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"image too large ({exc}); the limit is {max_side}x{max_side} pixels"
    return f"corrupt or truncated image header ({exc}); save it again or convert it to PNG"


def _pixels(path, image, channels):
    """(channels, H, W) float64 in [0, 1] from a loaded Pillow image."""
    if image.mode in _HIGH_BIT_MODES:
        if image.mode == "I" and image.format not in ("PNG", "PPM"):
            # Pillow scales 16-bit PNG/PGM to 0..65535; a 32-bit integer TIFF has no known scale.
            raise DataError(f"{path}: 32-bit integer {image.format} image has no known pixel scale; "
                            f"convert it to 8 or 16 bits")
        gray = np.asarray(image, dtype=np.float64)
        if gray.min() < 0 or gray.max() > 65535:
            raise DataError(f"{path}: {image.mode}-mode image holds values from {gray.min():g} to {gray.max():g}, "
                            f"outside 0-65535; convert it to 8 or 16 bits")
        return _to_channels(gray[None] / 65535.0, channels)
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float64)
        _check_float(path, gray)
        return _to_channels(gray[None], channels)
    has_alpha = "A" in image.mode or "transparency" in image.info
    try:
        if has_alpha:
            image = image.convert("RGBA")
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float64) / 255.0
    except ValueError as exc:   # modes Pillow cannot convert (LAB, HSV, ...)
        raise DataError(f"{path}: cannot convert a {image.mode}-mode image ({exc}); save it as RGB "
                        f"or grayscale") from None
    pixels = pixels[None] if channels == 1 else np.moveaxis(pixels, -1, 0)
    if has_alpha:
        pixels = pixels * (np.asarray(image.getchannel("A"), dtype=np.float64) / 255.0)
    return pixels


def _to_channels(array, channels):
    if array.shape[0] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=0)
    return np.tensordot(_LUMINANCE, array, axes=1)[None]


def _resize(image, size, resize):
    from PIL import Image
    filters = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
               "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
               "stretch": Image.Resampling.BILINEAR}
    # Resampling float ("F") planes keeps 16-bit precision; bicubic and Lanczos overshoot, so clip.
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
                         .resize((size[1], size[0]), resample=filters[resize])) for plane in image]
    return np.clip(np.stack(planes), 0.0, 1.0)
