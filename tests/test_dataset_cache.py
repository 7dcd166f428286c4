"""The .npy cache of decoded IDX files (clcnn.datasets.cache): the cached array equals the
decoded file, a changed file is decoded again, a damaged entry or an unwritable cache folder
falls back to decoding, and CLCNN_NO_CACHE keeps nothing."""
import os

import numpy as np
import pytest

from clcnn.datasets import read_idx, write_idx
from clcnn.datasets.cache import cache_dir
from clcnn.datasets.idx import _CACHE_FROM, decode_idx


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CLCNN_NO_CACHE", raising=False)
    return tmp_path / "cache" / "datasets"


def _big_gz(path, seed):
    # Random bytes do not compress: the .gz is over the cache threshold.
    array = np.random.default_rng(seed).integers(0, 256, (_CACHE_FROM // 784 + 10, 28, 28), dtype=np.uint8)
    write_idx(path, array)
    assert os.path.getsize(path) >= _CACHE_FROM
    return array


def _entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_second_read_comes_from_the_cache_and_equals_the_file(cache, tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    array = _big_gz(path, 0)
    first = read_idx(path)
    assert len(_entries(cache)) == 1
    second = read_idx(path)
    np.testing.assert_array_equal(first, array)
    np.testing.assert_array_equal(second, array)
    # Writable as promised, and a change stays in the caller's copy.
    second[0, 0, 0] ^= 0xFF
    np.testing.assert_array_equal(read_idx(path), array)


def test_changed_file_is_decoded_again(cache, tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    _big_gz(path, 1)
    read_idx(path)
    replaced = _big_gz(path, 2)
    np.testing.assert_array_equal(read_idx(path), replaced)


def test_damaged_entry_falls_back_to_decoding(cache, tmp_path):
    path = tmp_path / "x-idx3-ubyte.gz"
    array = _big_gz(path, 3)
    read_idx(path)
    entry = cache / _entries(cache)[0]
    entry.write_bytes(b"not an npy file")
    np.testing.assert_array_equal(read_idx(path), array)


def test_no_cache_and_small_files_keep_nothing(cache, tmp_path, monkeypatch):
    small = tmp_path / "small-idx1-ubyte.gz"
    write_idx(small, np.arange(10, dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(small), np.arange(10))
    assert _entries(cache) == []
    monkeypatch.setenv("CLCNN_NO_CACHE", "1")
    assert cache_dir() is None
    path = tmp_path / "x-idx3-ubyte.gz"
    array = _big_gz(path, 4)
    np.testing.assert_array_equal(read_idx(path), array)
    assert _entries(cache) == []


def test_unwritable_cache_folder_still_reads(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(blocker))
    path = tmp_path / "x-idx3-ubyte.gz"
    array = _big_gz(path, 5)
    np.testing.assert_array_equal(read_idx(path), array)


def test_embedded_mnist_cached_equals_the_gzip(cache):
    from importlib import resources

    from clcnn.datasets import mnist
    from clcnn.datasets.mnist import _embedded_mnist
    _embedded_mnist.cache_clear()
    try:
        for _ in range(2):   # decoded and stored, then mapped from the entry
            _embedded_mnist.cache_clear()
            images, labels = mnist("test")
            assert not images.flags.writeable
        folder = resources.files("clcnn.datasets") / "data" / "mnist"
        np.testing.assert_array_equal(images, decode_idx((folder / "t10k-images-idx3-ubyte.gz").read_bytes()))
        np.testing.assert_array_equal(labels, decode_idx((folder / "t10k-labels-idx1-ubyte.gz").read_bytes()))
        assert len(_entries(cache)) == 2
    finally:
        _embedded_mnist.cache_clear()
