"""Decoded data files kept as .npy beside clcnn's program cache, so a second start maps the
arrays instead of decompressing them again (60,000 MNIST digits: 0.3 s of gunzip and copying
down to a few milliseconds).

An entry is named by the source file's absolute path, inode, size and modification time: a
changed, replaced or moved file gets a new entry. Entries are written whole to a temporary name and renamed, so
a reader never sees half a file; any failure to read or write one falls back to decoding.
"""
import hashlib
import os
import tempfile

import numpy as np


def cache_dir():
    """datasets/ in the folder clcnn.device keeps its programs in ($CLCNN_CACHE_DIR, else
    $XDG_CACHE_HOME/clcnn or ~/.cache/clcnn); None when CLCNN_NO_CACHE is set."""
    if os.environ.get("CLCNN_NO_CACHE", "").strip() not in ("", "0"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.environ.get("CLCNN_CACHE_DIR") or os.path.join(base, "clcnn"), "datasets")


def cached_array(path, decode, writable):
    """decode() of the file at `path`, from the cache when an entry for the file as it is now
    exists (a read-only memory map, or a copy-on-write one when `writable`), else decoded and
    stored. Errors of decode() propagate; cache errors only cost the decoding."""
    folder = cache_dir()
    try:
        stat = os.stat(path)
    except OSError:
        folder = None
    if folder is None:
        return decode()
    key = hashlib.sha256(f"{os.path.abspath(path)}\0{stat.st_ino}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    entry = os.path.join(folder, f"{os.path.basename(path)}-{key[:24]}.npy")
    try:
        return np.load(entry, mmap_mode="c" if writable else "r", allow_pickle=False).view(np.ndarray)
    except (OSError, ValueError):
        pass
    array = decode()
    _store(folder, entry, array)
    return array


def _store(folder, entry, array):
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, entry)
    except OSError:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
