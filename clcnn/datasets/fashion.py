"""Fashion-MNIST (Xiao, Rasul, Vollgraf; Zalando Research, MIT licence): found on disk, or
downloaded once into a cache folder. Same IDX files and naming as MNIST."""
import os
from pathlib import Path

from ..errors import DataError
from .download import download_files
from .mnist import find_split, load_folder, split_files

# The upstream copy; the argument url= or the environment variable CLCNN_FASHION_MNIST_URL
# overrides it (a mirror, or a local server in the tests).
FASHION_MNIST_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"

# sha256 of the upstream .gz files (the same files as on the project's S3 mirror). Downloads
# are checked against these. Files found on disk are only checked as IDX: Debian's package
# holds the same IDX content re-gzipped, so its .gz digests differ.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}

# The names of labels 0-9 (the dataset's own README).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# Folders that system packages fill, searched last: Debian's dataset-fashion-mnist.
SYSTEM_DIRS = [Path("/usr/share/datasets/fashion-mnist")]


def cache_dir():
    """``~/.cache/clcnn/fashion-mnist`` (or under $XDG_CACHE_HOME when that is set)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clcnn" / "fashion-mnist"


def search_dirs(data_dir=None):
    """The folders searched, in order: `data_dir`, ``$CLCNN_DATA/fashion-mnist``, the cache
    folder, then `SYSTEM_DIRS`. The first of them is where a download goes."""
    dirs = [Path(data_dir)] if data_dir is not None else []
    if os.environ.get("CLCNN_DATA"):
        dirs.append(Path(os.environ["CLCNN_DATA"]) / "fashion-mnist")
    dirs.append(cache_dir())
    return dirs + [Path(d) for d in SYSTEM_DIRS]


def fashion_mnist(split="train", data_dir=None, download=True, progress=True, url=None):
    """Fashion-MNIST: (images uint8 (N, 28, 28), labels uint8 (N,)), N = 60000 for "train"
    and 10000 for "test"; labels 0-9 are T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal,
    Shirt, Sneaker, Bag, Ankle boot.

    Loads the split from the first folder of `search_dirs(data_dir)` that holds both of its
    files (raw or .gz). Failing that, and when `download` is true, downloads the two .gz files
    of the split into the first of those folders, checking their sha256, with a progress bar
    on stderr when `progress` is true. Raises `DataError` saying where to put the files by hand
    when they are neither found nor downloadable.
    """
    names = [name + ".gz" for name in split_files(split)]
    dirs = search_dirs(data_dir)
    for folder in dirs:
        if find_split(folder, split) is not None:
            return load_folder(folder, split)
    target = dirs[0]
    url = url or os.environ.get("CLCNN_FASHION_MNIST_URL") or FASHION_MNIST_URL
    hint = (f"Download {' and '.join(names)} from {url} yourself and put them in {target} "
            "(or in $CLCNN_DATA/fashion-mnist, or install Debian's dataset-fashion-mnist package)")
    if not download:
        raise DataError(f"Fashion-MNIST {split} split not found in "
                        f"{', '.join(str(d) for d in dirs)}. {hint}")
    missing = [n for n in names if not (target / n).is_file() and not (target / n[:-3]).is_file()]
    try:
        download_files(url, missing, target, FASHION_MNIST_SHA256, progress)
    except DataError as e:
        raise DataError(f"could not download Fashion-MNIST: {e}. {hint}") from None
    return load_folder(target, split)
