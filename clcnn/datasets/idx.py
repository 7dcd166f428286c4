"""The IDX file format of MNIST and its relatives: read and write, raw or gzip-compressed.

An IDX file is a 4-byte magic number ``00 00 TYPE NDIM``, then NDIM big-endian uint32
dimensions, then the data in C order, big-endian, with nothing after it.
"""
import gzip
import math
import os
import struct
import zlib

import numpy as np

from ..errors import DataError
from .cache import cached_array

# IDX type code -> big-endian NumPy dtype (the codes of the IDX specification).
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# Compressed files from this size on are decoded once into the cache; smaller ones decode in
# less time than a cache entry costs to look up and keep.
_CACHE_FROM = 1 << 20


def read_idx(path):
    """Read an IDX file (raw or gzip, told apart by its first bytes) into a NumPy array.

    Returns a writable array in native byte order of the file's dtype and shape. Raises
    `DataError` naming the file when it is missing, not IDX, corrupt, truncated or too long.
    A large gzip file's decoded array is cached (see clcnn.datasets.cache).
    """
    path = os.fspath(path)

    def decode():
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"cannot read IDX file {path}: {e.strerror or e}") from None
        return decode_idx(data, path)

    try:
        with open(path, "rb") as f:
            gzipped = f.read(2) == _GZIP_MAGIC
        large = os.path.getsize(path) >= _CACHE_FROM
    except OSError:
        return decode()   # its error, from the one place that words it
    return cached_array(path, decode, writable=True) if gzipped and large else decode()


def decode_idx(data, name="<bytes>"):
    """Decode the bytes of an IDX file, raw or gzip; `name` only goes into error messages."""
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"corrupt gzip in {name}: {e}") from None
    if len(data) < 4:
        raise DataError(f"{name} is not an IDX file: only {len(data)} bytes, the header needs 4")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in IDX_DTYPES:
        raise DataError(
            f"{name} is not an IDX file: wrong magic number {data[:4].hex(' ')} "
            f"(expected 00 00 TYPE NDIM, TYPE one of "
            f"{', '.join(f'{c:02x}' for c in IDX_DTYPES)})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated in its header: expected {header} bytes for "
                        f"{ndim} dimensions, got {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + dtype.itemsize * math.prod(shape)  # Python ints: no overflow
    if len(data) < expected:
        raise DataError(f"{name} is truncated: expected {expected} bytes, got {len(data)} "
                        f"(header says {dtype.name} of shape {shape})")
    if len(data) > expected:
        raise DataError(f"{name} has {len(data) - expected} trailing bytes: expected {expected} "
                        f"bytes, got {len(data)} (header says {dtype.name} of shape {shape})")
    # astype copies: the result is writable and in native byte order.
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array, compress=None):
    """Write `array` as an IDX file; gzip it when `compress` is True, or by default when the
    name ends in ``.gz``. Supports uint8, int8, int16, int32, float32 and float64."""
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}: use one of "
                         f"{', '.join(dt.name for dt in codes)}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX holds 1 to 255 dimensions, got an array of {array.ndim}")
    if any(n >= 2 ** 32 for n in array.shape):
        raise ValueError(f"IDX dimensions must fit in 32 bits, got shape {array.shape}")
    data = (struct.pack(">2sBB", b"\x00\x00", codes[native], array.ndim)
            + struct.pack(f">{array.ndim}I", *array.shape)
            + np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[native]]).tobytes())
    path = os.fspath(path)
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        data = gzip.compress(data, mtime=0)  # mtime=0: the same array gives the same file
    with open(path, "wb") as f:
        f.write(data)
