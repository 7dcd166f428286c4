"""clcnn.datasets: IDX files, the embedded MNIST, folders, Fashion-MNIST lookup and download
(against a local HTTP server), and the batching helpers. NumPy only, no OpenCL device."""
import gzip
import hashlib
import os
import socket
import struct
import time
from importlib import resources
from types import SimpleNamespace

import numpy as np
import pytest

from clcnn.datasets import (background_value, dataset, fashion, fashion_mnist, iterate_batches,
                            load_folder, mnist, prepare_images, random_shift, read_idx,
                            shift_images, write_idx)
from clcnn.errors import DataError
from tests.helpers import serve_folder

# sha256 of the uncompressed embedded MNIST files: the values published with the project's
# copy (shared/datasets/mnist/README.md), whose md5 sums are the canonical MNIST ones.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


# ---------------------------------------------------------------- IDX format

def idx_bytes(code, shape, payload):
    """An IDX file built by hand, independently of write_idx."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("shape", [(7,), (3, 4, 5), (2, 1, 3, 2), (0, 4)])
@pytest.mark.parametrize("dtype", ["uint8", "int8", ">i2", "int32", "float32", ">f8"])
def test_idx_round_trip(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:  # the extremes must survive too
        a = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    else:
        a = (rng.standard_normal(shape) * 1e3).astype(dtype)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, a)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    b = read_idx(path)
    assert b.shape == a.shape and b.dtype == np.dtype(dtype).newbyteorder("=")
    assert b.dtype.isnative and b.flags.writeable
    np.testing.assert_array_equal(b, a)


def test_idx_exact_bytes(tmp_path):
    write_idx(tmp_path / "a", np.array([[1, -2, 258]], dtype=np.int16))
    assert (tmp_path / "a").read_bytes() == bytes.fromhex("00000b02 00000001 00000003 0001 fffe 0102")
    values = np.array([1.5, -2.25, 1e-3], dtype=">f4")
    (tmp_path / "b").write_bytes(idx_bytes(0x0D, (3,), values.tobytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "b"), [1.5, -2.25, np.float32(1e-3)])
    (tmp_path / "c").write_bytes(idx_bytes(0x08, (2, 2), bytes([0, 1, 254, 255])))
    np.testing.assert_array_equal(read_idx(tmp_path / "c"), [[0, 1], [254, 255]])


def test_idx_gzip_told_by_magic_not_name(tmp_path):
    raw = idx_bytes(0x08, (2, 3), bytes(range(6)))
    (tmp_path / "gzipped.idx").write_bytes(gzip.compress(raw))
    (tmp_path / "plain.gz").write_bytes(raw)
    expected = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(read_idx(tmp_path / "gzipped.idx"), expected)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), expected)


def _flip_deflate_byte(raw):
    data = bytearray(gzip.compress(raw))
    data[len(data) // 2] ^= 0xFF
    return bytes(data)


GOOD = idx_bytes(0x08, (3, 4), bytes(12))
BAD_FILES = {
    "wrong magic": (b"\x01\x00" + GOOD[2:], "wrong magic"),
    "unknown type": (idx_bytes(0x0A, (3, 4), bytes(12)), "wrong magic"),
    "empty": (b"", "not an IDX file"),
    "short header": (GOOD[:9], "truncated in its header"),
    "truncated": (GOOD[:-1], "truncated: expected 24 bytes, got 23"),
    "trailing": (GOOD + b"\x00\x00", "2 trailing bytes"),
    "dims too big": (idx_bytes(0x08, (4, 4), bytes(12)), "expected 28 bytes, got 24"),
    "dims too small": (idx_bytes(0x0C, (2,), bytes(12)), "trailing bytes"),
    "gz truncated": (gzip.compress(GOOD * 50)[:-12], "corrupt gzip"),
    "gz corrupt": (_flip_deflate_byte(bytes(range(256)) * 8), "corrupt gzip"),
    "gz bad content": (gzip.compress(GOOD[:-3]), "truncated"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_idx_bad_file_raises_data_error(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "bad-file-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothing-here"):
        read_idx(tmp_path / "nothing-here")


@pytest.mark.parametrize("array", [np.zeros(3, np.int64), np.zeros(3, bool), np.float32(1.0)])
def test_write_idx_rejects_what_idx_cannot_hold(tmp_path, array):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "x", array)


# ---------------------------------------------------------------- embedded MNIST

def test_embedded_mnist_test_split():
    images, labels = mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels.max() == 9 and np.all(np.bincount(labels) > 800)
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first digits
    # The shipped bytes are the published ones, and the arrays are exactly those bytes.
    folder = resources.files("clcnn.datasets") / "data" / "mnist"
    for name, array, header in [("t10k-images-idx3-ubyte", images, 16),
                                ("t10k-labels-idx1-ubyte", labels, 8)]:
        raw = gzip.decompress((folder / (name + ".gz")).read_bytes())
        assert hashlib.sha256(raw).hexdigest() == MNIST_SHA256[name]
        assert raw[header:] == array.tobytes()


def test_embedded_mnist_readme_beside_the_copy():
    readme = (resources.files("clcnn.datasets") / "data" / "mnist" / "README.md").read_text()
    assert "CC BY-SA 3.0" in readme and "LeCun" in readme
    for digest in MNIST_SHA256.values():
        assert digest in readme


def test_embedded_mnist_train_split_and_cache():
    start = time.perf_counter()
    images, labels = mnist("train")
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"decoding the train split took {elapsed:.1f} s"
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842,
                                            5421, 5918, 6265, 5851, 5949]
    again = mnist("train")
    assert again[0] is images and again[1] is labels  # cached: no second decode
    assert not images.flags.writeable  # shared by every caller, so read-only


def test_embedded_mnist_bad_split():
    with pytest.raises(ValueError, match="split"):
        mnist("validation")


# ---------------------------------------------------------------- folders

def write_split(folder, split, images, labels, gz=True):
    prefix = {"train": "train", "test": "t10k"}[split]
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)


def small_set(n=5, label=None, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.full(n, label) if label is not None else rng.integers(0, 10, n)).astype(np.uint8)
    return images, labels


def test_load_folder_raw_and_gz(tmp_path):
    train, test = small_set(6, seed=1), small_set(4, seed=2)
    write_split(tmp_path, "train", *train, gz=False)
    write_split(tmp_path, "test", *test, gz=True)
    for split, expected in [("train", train), ("test", test)]:
        got = load_folder(tmp_path, split)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(dataset(str(tmp_path), "test")[0], test[0])


def test_load_folder_missing_files(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", small_set()[0])
    with pytest.raises(DataError) as e:
        load_folder(tmp_path, "test")
    assert "t10k-images-idx3-ubyte" in str(e.value) and "t10k-labels-idx1-ubyte" in str(e.value)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere", "train")


def test_load_folder_inconsistent_files(tmp_path):
    images, labels = small_set(5)
    write_split(tmp_path / "a", "test", images, labels[:4])
    with pytest.raises(DataError, match="5 images but 4 labels"):
        load_folder(tmp_path / "a", "test")
    write_split(tmp_path / "b", "test", images.reshape(5, 784), labels)
    with pytest.raises(DataError, match="images"):
        load_folder(tmp_path / "b", "test")
    write_split(tmp_path / "c", "test", images, labels.astype(np.int32))
    with pytest.raises(DataError, match="labels"):
        load_folder(tmp_path / "c", "test")


def test_dataset_dispatch():
    assert dataset("mnist", "test")[0] is mnist("test")[0]
    with pytest.raises(DataError, match="unknown dataset"):
        dataset("no-such-set-or-folder", "test")


# ---------------------------------------------------------------- Fashion-MNIST lookup

@pytest.fixture
def fashion_env(tmp_path, monkeypatch):
    """Fashion-MNIST search confined to tmp_path; any download goes to a closed port."""
    dirs = SimpleNamespace(system=tmp_path / "debian", cache=tmp_path / "xdg" / "clcnn" / "fashion-mnist",
                           data=tmp_path / "clcnn-data", arg=tmp_path / "arg")
    monkeypatch.setattr(fashion, "SYSTEM_DIRS", [dirs.system])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CLCNN_DATA", raising=False)
    monkeypatch.setenv("CLCNN_FASHION_MNIST_URL", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    return dirs


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fashion_search_order(fashion_env, monkeypatch):
    d = fashion_env
    for label, folder in enumerate([d.arg, d.data / "fashion-mnist", d.cache, d.system]):
        write_split(folder, "test", *small_set(3, label=label))
    monkeypatch.setenv("CLCNN_DATA", str(d.data))
    assert fashion.search_dirs(d.arg) == [d.arg, d.data / "fashion-mnist", d.cache, d.system]
    assert fashion_mnist("test", data_dir=d.arg, download=False)[1].tolist() == [0, 0, 0]
    assert fashion_mnist("test", download=False)[1].tolist() == [1, 1, 1]
    assert dataset("fashion-mnist", "test")[1].tolist() == [1, 1, 1]
    monkeypatch.delenv("CLCNN_DATA")
    assert fashion_mnist("test", download=False)[1].tolist() == [2, 2, 2]
    for f in d.cache.iterdir():
        f.unlink()
    assert fashion_mnist("test", download=False)[1].tolist() == [3, 3, 3]  # Debian's folder


def test_fashion_debian_raw_files(fashion_env):
    images, labels = small_set(4, seed=3)
    write_split(fashion_env.system, "train", images, labels, gz=False)
    got = fashion_mnist("train", download=False)
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)


def test_fashion_not_found_without_download(fashion_env):
    with pytest.raises(DataError) as e:
        fashion_mnist("test", download=False)
    for folder in (fashion_env.cache, fashion_env.system):
        assert str(folder) in str(e.value)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_real_debian_package():
    images, labels = load_folder("/usr/share/datasets/fashion-mnist", "test")
    assert images.shape == (10000, 28, 28) and np.bincount(labels).tolist() == [1000] * 10


# ---------------------------------------------------------------- download

@pytest.fixture
def server(tmp_path, fashion_env):
    root = tmp_path / "served"
    root.mkdir()
    with serve_folder(root) as httpd:
        yield SimpleNamespace(url=f"http://127.0.0.1:{httpd.server_address[1]}/", root=root,
                              truncate=httpd.truncate)


def serve_split(server, split, images, labels):
    """Write a split as .gz files into the served folder; return their sha256 table."""
    write_split(server.root, split, images, labels)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in server.root.iterdir()}


def test_download_into_cache(server, fashion_env, monkeypatch, capsys):
    images, labels = small_set(7, seed=4)
    monkeypatch.setattr(fashion, "FASHION_MNIST_SHA256", serve_split(server, "test", images, labels))
    monkeypatch.setenv("CLCNN_FASHION_MNIST_URL", server.url)
    got = fashion_mnist("test")
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    assert sorted(p.name for p in fashion_env.cache.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]  # no temporary left over
    err = capsys.readouterr().err  # the progress bar: name and percentage
    assert "t10k-images-idx3-ubyte.gz" in err and "100%" in err
    # Found in the cache from now on: no server needed.
    monkeypatch.setenv("CLCNN_FASHION_MNIST_URL", f"http://127.0.0.1:{closed_port()}/")
    np.testing.assert_array_equal(fashion_mnist("test")[1], labels)


def test_download_progress_and_sha(server, tmp_path, capsys):
    table = serve_split(server, "train", *small_set(3))
    names = sorted(table)
    dest = tmp_path / "dest"
    paths = fashion.download_files(server.url, names, dest, table, progress=True)
    assert [p.name for p in paths] == names
    for p in paths:
        assert p.read_bytes() == (server.root / p.name).read_bytes()
    err = capsys.readouterr().err
    assert all(name in err for name in names) and "100%" in err


@pytest.mark.parametrize("failure", ["truncated", "checksum", "missing on server"])
def test_download_failure_leaves_nothing(server, tmp_path, failure):
    table = serve_split(server, "test", *small_set(50))
    name = "t10k-images-idx3-ubyte.gz"
    if failure == "truncated":
        server.truncate.add(name)
    elif failure == "checksum":
        table[name] = hashlib.sha256(b"something else").hexdigest()
    else:
        (server.root / name).unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as e:
        fashion.download_files(server.url, [name], dest, table, progress=False)
    expected = {"truncated": "cut short", "checksum": "checksum mismatch", "missing on server": "404"}
    assert expected[failure] in str(e.value) and name in str(e.value)
    assert list(dest.iterdir()) == []  # neither the file nor a temporary


def test_download_failure_through_fashion_mnist(server, fashion_env, monkeypatch):
    table = serve_split(server, "test", *small_set(5))
    table["t10k-labels-idx1-ubyte.gz"] = "0" * 64
    monkeypatch.setattr(fashion, "FASHION_MNIST_SHA256", table)
    with pytest.raises(DataError, match="checksum mismatch"):
        fashion_mnist("test", url=server.url, progress=False)
    # The images came through and stay; of the labels, neither the file nor a temporary.
    assert [p.name for p in fashion_env.cache.iterdir()] == ["t10k-images-idx3-ubyte.gz"]


def test_download_without_server_says_where_to_put_files(fashion_env):
    with pytest.raises(DataError) as e:
        fashion_mnist("train", progress=False)
    message = str(e.value)
    assert "cannot reach" in message and str(fashion_env.cache) in message
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    with pytest.raises(DataError) as e:
        fashion_mnist("train", data_dir=fashion_env.arg, progress=False)
    assert str(fashion_env.arg) in str(e.value)


# ---------------------------------------------------------------- batching

def test_iterate_batches():
    n, bs = 103, 16
    a = list(iterate_batches(n, bs, shuffle=True, rng=7))
    b = list(iterate_batches(n, bs, shuffle=True, rng=np.random.default_rng(7)))
    c = list(iterate_batches(n, bs, shuffle=True, rng=8))
    assert [len(x) for x in a] == [16] * 6 + [7]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # same seed, same epoch
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(n))  # every index once
    assert not np.array_equal(np.concatenate(a), np.arange(n))
    rng = np.random.default_rng(1)
    first, second = (np.concatenate(list(iterate_batches(n, bs, rng=rng))) for _ in range(2))
    assert not np.array_equal(first, second)  # a new order each epoch from one generator
    assert np.array_equal(np.concatenate(list(iterate_batches(n, bs, shuffle=False))), np.arange(n))
    assert list(iterate_batches(0, bs)) == []
    with pytest.raises(ValueError):
        list(iterate_batches(n, 0))


@pytest.mark.parametrize("pad", [0, 2])
def test_prepare_images(pad):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 27), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    mean, std = 0.1307, 0.3081
    out = prepare_images(images, pad=pad)
    assert out.shape == (5, 1, 28 + 2 * pad, 27 + 2 * pad) and out.dtype == np.float32
    reference = (images.astype(np.float64) / 255.0 - mean) / std
    inner = out[:, 0, pad:pad + 28, pad:pad + 27]
    # float32 result of values up to |2.9|: a few ulps (ulp 2.4e-7 there)
    np.testing.assert_allclose(inner, reference, rtol=0, atol=1e-6)
    assert abs(out[0, 0, pad, pad] - (-mean / std)) < 1e-6 and abs(out[0, 0, pad, pad + 1] - (1 - mean) / std) < 1e-6
    border = np.ones(out.shape, bool)
    border[:, :, pad:pad + 28, pad:pad + 27] = False
    assert np.all(out[border] == np.float32(-mean / std))  # padding is background
    other = prepare_images(images[:, None], pad=pad, mean=0.5, std=0.25)
    np.testing.assert_allclose(other[:, 0, pad:pad + 28, pad:pad + 27],
                               (images / 255.0 - 0.5) / 0.25, rtol=0, atol=1e-6)
    assert background_value(0.5, 0.25) == -2.0
    with pytest.raises(ValueError):
        prepare_images(images.astype(np.float32))


def roll_with_fill(image, dy, dx, fill):
    """The plain reference: np.roll, then overwrite what wrapped around."""
    out = np.roll(image, (dy, dx), axis=(-2, -1))
    h, w = image.shape[-2:]
    if dy > 0:
        out[..., :min(dy, h), :] = fill
    elif dy < 0:
        out[..., max(h + dy, 0):, :] = fill
    if dx > 0:
        out[..., :, :min(dx, w)] = fill
    elif dx < 0:
        out[..., :, max(w + dx, 0):] = fill
    return out


@pytest.mark.parametrize("max_shift", [0, 1, 3])
def test_random_shift_matches_reference(max_shift):
    batch = np.random.default_rng(0).standard_normal((64, 2, 9, 11)).astype(np.float32)
    fill = -0.42
    out = random_shift(batch, max_shift, rng=5, fill=fill)
    shifts = np.random.default_rng(5).integers(-max_shift, max_shift + 1, size=(64, 2))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    if max_shift:
        assert len({tuple(s) for s in shifts}) > 3  # the amounts do vary per image
    for i, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(out[i], roll_with_fill(batch[i], dy, dx, np.float32(fill)))


def test_shift_images_given_amounts():
    batch = np.arange(2 * 1 * 4 * 5, dtype=np.float32).reshape(2, 1, 4, 5) + 1
    out = shift_images(batch, [(1, -2), (-5, 0)], fill=0.0)
    np.testing.assert_array_equal(out[0, 0], [[0, 0, 0, 0, 0],
                                              [3, 4, 5, 0, 0],
                                              [8, 9, 10, 0, 0],
                                              [13, 14, 15, 0, 0]])
    assert np.all(out[1] == 0)  # moved out of the frame entirely
    default = random_shift(batch, 2, rng=0)  # default fill: MNIST background
    shifts = np.random.default_rng(0).integers(-2, 3, size=(2, 2))
    for i, (dy, dx) in enumerate(shifts):
        np.testing.assert_array_equal(default[i], roll_with_fill(batch[i], dy, dx, np.float32(background_value())))
