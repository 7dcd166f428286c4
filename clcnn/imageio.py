"""Read grayscale images (PNG, PGM, .npy) for prediction and write PNGs (training curves),
with NumPy and zlib only."""
import struct
import zlib

import numpy as np

from .errors import DataError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_image(path):
    """A 2-D float array in [0, 1] (grayscale) from a PNG, PGM or .npy file."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from None
    if path.endswith(".npy"):
        return _from_npy(path)
    if data.startswith(_PNG_SIGNATURE):
        return _decode_png(data, path)
    if data[:2] in (b"P5", b"P2"):
        return _decode_pgm(data, path)
    raise DataError(f"{path}: not a PNG, PGM or .npy image")


def _from_npy(path):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable .npy file: {exc}") from None
    array = np.squeeze(array)
    if array.ndim != 2:
        raise DataError(f"{path}: expected one 2-D grayscale image, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float64) / 255.0
    return array.astype(np.float64)


def _decode_pgm(data, path):
    tokens, pos = [], 2
    while len(tokens) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos)
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        tokens.append(int(data[start:pos]))
    width, height, maxval = tokens
    if data[:2] == b"P2":
        pixels = np.array(data[pos:].split()[:width * height], dtype=np.float64)
    else:
        dtype = np.uint8 if maxval < 256 else ">u2"
        pixels = np.frombuffer(data, dtype=dtype, count=width * height, offset=pos + 1).astype(np.float64)
    if pixels.size != width * height:
        raise DataError(f"{path}: truncated PGM ({pixels.size} of {width * height} pixels)")
    return pixels.reshape(height, width) / maxval


def _decode_png(data, path):
    pos, idat, header = 8, [], None
    while pos < len(data):
        if pos + 12 > len(data):
            raise DataError(f"{path}: truncated PNG (cut inside a chunk header)")
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length:
            raise DataError(f"{path}: truncated PNG ({kind.decode('latin-1')} chunk cut short)")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise DataError(f"{path}: corrupt PNG (no header)")
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise DataError(f"{path}: unsupported PNG (need 8-bit grayscale/RGB/RGBA, non-interlaced; "
                        f"got depth {depth}, color type {color}, interlace {interlace}); convert it to 8-bit")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DataError(f"{path}: corrupt PNG data: {exc}") from None
    stride = width * channels
    if len(raw) != height * (stride + 1):
        raise DataError(f"{path}: truncated PNG")
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, stride + 1)
    image = np.zeros((height, stride), dtype=np.int32)
    for y in range(height):
        _unfilter(rows[y, 0], rows[y, 1:].astype(np.int32), image, y, channels)
    pixels = image.reshape(height, width, channels).astype(np.float64) / 255.0
    if channels >= 3:  # RGB(A) to luminance: converting is safe, the digit survives.
        return pixels[..., :3] @ np.array([0.299, 0.587, 0.114])
    return pixels[..., 0]


def _unfilter(kind, row, image, y, bpp):
    prior = image[y - 1] if y else np.zeros_like(row)
    if kind == 0:
        image[y] = row
    elif kind == 2:
        image[y] = (row + prior) & 255
    else:
        out = image[y]
        for i in range(len(row)):
            left = out[i - bpp] if i >= bpp else 0
            up = prior[i]
            if kind == 1:
                out[i] = (row[i] + left) & 255
            elif kind == 3:
                out[i] = (row[i] + (left + up) // 2) & 255
            else:
                upleft = prior[i - bpp] if i >= bpp else 0
                p = left + up - upleft
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else upleft)
                out[i] = (row[i] + pred) & 255


def write_png(path, rgb):
    """Write an (H, W, 3) uint8 array as a PNG."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    with open(path, "wb") as f:
        f.write(_PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))
