"""CIFAR-10 (Krizhevsky 2009): the official binary archive, found on disk or downloaded once.

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with data_batch_1.bin ..
data_batch_5.bin (the train split), test_batch.bin and batches.meta.txt (the class names). Each
.bin is 10000 records of 1 label byte and 3072 pixel bytes: a 32x32 image as its red, green and
blue planes, each row by row, so a record's pixels reshape to (3, 32, 32) directly.
"""
import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from .download import download

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
FOLDER = "cifar-10-batches-bin"       # the archive's top folder, kept under that name
SPLIT_FILES = {"train": [f"data_batch_{k}.bin" for k in range(1, 6)], "test": ["test_batch.bin"]}
RECORDS_PER_FILE = 10000
RECORD = 1 + 3 * 32 * 32

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# Per-channel mean and standard deviation of the train split's pixels scaled to [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def cache_dir():
    """``~/.cache/clcnn/cifar-10`` (or under $XDG_CACHE_HOME when that is set)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clcnn" / "cifar-10"


def search_dirs(data_dir=None):
    """The folders searched, in order: `data_dir`, ``$CLCNN_DATA/cifar-10``, the cache folder.
    The first of them is where a download goes."""
    dirs = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get("CLCNN_DATA"):
        dirs.append(Path(os.environ["CLCNN_DATA"]) / "cifar-10")
    return dirs + [cache_dir()]


def cifar10(split="train", data_dir=None, download=True, progress=True, url=None):
    """CIFAR-10: (images uint8 (N, 3, 32, 32), labels uint8 (N,)), N = 50000 for "train" and
    10000 for "test"; labels 0-9 name `CIFAR10_CLASSES`.

    Each folder of `search_dirs(data_dir)` in turn may hold the extracted
    ``cifar-10-batches-bin/`` (or its .bin files directly) or ``cifar-10-binary.tar.gz``, which
    is checked by sha256 and extracted beside itself. Failing that, and when `download` is
    true, the archive is downloaded into the first of those folders (progress bar on stderr
    when `progress`) and extracted. Raises `DataError` saying where to put the archive by hand
    when it is neither found nor downloadable, and naming the file when one is damaged."""
    if split not in SPLIT_FILES:
        raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")
    dirs = search_dirs(data_dir)
    for folder in dirs:
        for candidate in (folder / FOLDER, folder):
            if all((candidate / name).is_file() for name in SPLIT_FILES[split]):
                return load_batches(candidate, split)
        if (folder / ARCHIVE).is_file():
            return load_batches(extract(folder / ARCHIVE), split)
    target = dirs[0]
    url = url or os.environ.get("CLCNN_CIFAR10_URL") or CIFAR10_URL
    hint = (f"Download {ARCHIVE} from {url} yourself and put it in {target} "
            "(or in $CLCNN_DATA/cifar-10)")
    if not download:
        raise DataError(f"CIFAR-10 not found in {', '.join(str(d) for d in dirs)}. {hint}")
    try:
        archive = download_archive(url, target / ARCHIVE, progress)
    except DataError as e:
        raise DataError(f"could not download CIFAR-10: {e}. {hint}") from None
    return load_batches(extract(archive), split)


def download_archive(url, dest, progress=True):
    """Download the archive to `dest`, checked against `CIFAR10_SHA256`."""
    return download(url, dest, CIFAR10_SHA256, progress)


def extract(archive):
    """Extract the .bin and meta files of `archive` into ``cifar-10-batches-bin/`` beside it;
    return that folder. The files go to a temporary folder first, renamed into place once all
    are there, so an interrupted extraction never looks like a complete one."""
    archive = Path(archive)
    dest = archive.parent / FOLDER
    digest = _sha256(archive)
    if digest != CIFAR10_SHA256:
        raise DataError(f"{archive} is not the official CIFAR-10 archive: sha256 {digest}, "
                        f"expected {CIFAR10_SHA256}. Delete it and download it again")
    wanted = {name for names in SPLIT_FILES.values() for name in names} | {"batches.meta.txt"}
    tmp = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{FOLDER}."))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                for member in tar:
                    # Only the known file names are written, whatever paths the archive holds.
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in wanted:
                        with tar.extractfile(member) as src, open(tmp / name, "wb") as out:
                            shutil.copyfileobj(src, out)
                # tarfile stops quietly at a cut between members: read the gzip stream to its
                # end, where a cut or a bad CRC shows.
                while tar.fileobj.read(1 << 20):
                    pass
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            # gzip reports a corrupt stream as OSError (BadGzipFile), as it does a full disk.
            raise DataError(f"cannot extract {archive} ({e}): the archive is truncated or "
                            f"corrupt (delete it and download it again), or {archive.parent} "
                            "is not writable or full") from None
        missing = sorted(wanted - {p.name for p in tmp.iterdir()})
        if missing:
            raise DataError(f"{archive} lacks {', '.join(missing)}: it is not the CIFAR-10 binary "
                            "archive. Delete it and download it again")
        try:
            os.rename(tmp, dest)
        except OSError as e:
            if not dest.is_dir():   # else another process extracted it first: use that copy
                raise DataError(f"cannot create {dest}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_batches(folder, split="train"):
    """(images uint8 (N, 3, 32, 32), labels uint8 (N,)) of `split` from a folder of the
    extracted .bin files. Raises `DataError` naming a file that is missing or of the wrong size."""
    images, labels = [], []
    for name in SPLIT_FILES[split]:
        path = Path(folder) / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise DataError(f"cannot read CIFAR-10 file {path}: {e.strerror or e}") from None
        expected = RECORDS_PER_FILE * RECORD
        if len(data) != expected:
            raise DataError(f"{path} is {'truncated' if len(data) < expected else 'too long'}: "
                            f"expected {expected} bytes ({RECORDS_PER_FILE} records of {RECORD}), "
                            f"got {len(data)}. Delete {Path(folder)} and extract or download "
                            "the archive again")
        records = np.frombuffer(data, np.uint8).reshape(RECORDS_PER_FILE, RECORD)
        if records[:, 0].max(initial=0) >= len(CIFAR10_CLASSES):
            raise DataError(f"{path} holds label {records[:, 0].max()}: CIFAR-10 labels are 0-9")
        labels.append(records[:, 0])
        images.append(records[:, 1:].reshape(-1, 3, 32, 32))
    # concatenate copies: the arrays are writable and own their memory.
    return np.concatenate(images), np.concatenate(labels)
