"""Model files and training checkpoints: a NumPy .npz archive (no pickle) holding the arrays and
one JSON header (format, version, architecture, anything else the caller adds). Written to a
temporary file beside the target, flushed to disk, then renamed over it, so a crash mid-write
leaves the previous file intact."""
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import CheckpointError

FORMAT = "clcnn"
VERSION = 1
_HEADER = "__header__"


def write_archive(path, header, arrays):
    """Atomically write header (JSON-able dict) and arrays (name -> ndarray) to path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    header = {"format": FORMAT, "version": VERSION, **header}
    payload = {_HEADER: np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
    payload.update({name: np.asarray(value) for name, value in arrays.items()})
    # The writer's pid in the name tells a later run whether this temporary is still being
    # written (see rundir.remove_stale_temporaries).
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{os.getpid()}-", suffix=".clcnn", dir=directory)
    try:
        if hasattr(os, "fchmod"):   # mkstemp makes 0600; a checkpoint gets the umask's mode as any file
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def read_archive(path):
    """(header, arrays) from a file write_archive made; CheckpointError on anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a clcnn checkpoint (a clcnn file is a zip archive written by "
                              "model.save or clcnn train); check the file name")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable clcnn file (truncated or corrupt): {exc}") from None
    if _HEADER not in arrays:
        raise CheckpointError(f"{path}: not a clcnn file (no header)")
    try:
        header = json.loads(arrays.pop(_HEADER).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt header: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        kind = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"{path}: not a clcnn file (format {kind!r})")
    if not isinstance(header.get("version"), int) or header["version"] > VERSION:
        raise CheckpointError(f"{path}: written by a newer clcnn (format version {header.get('version')}, "
                              f"this one reads up to {VERSION}); upgrade clcnn")
    return header, arrays
