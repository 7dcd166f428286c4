"""CIFAR-10: the binary archive found on disk, or downloaded from a local 127.0.0.1 server (a
tiny generated archive of a few records per file, its sha256 patched in), checked, extracted
atomically, decoded; every failure one DataError naming the file and what to do."""
import hashlib
import io
import socket
import tarfile
from types import SimpleNamespace

import numpy as np
import pytest

from clcnn.datasets import CIFAR10_CLASSES, cifar, cifar10, class_names, dataset
from clcnn.errors import DataError
from tests.helpers import serve_folder

RECORDS = 3        # records per .bin in the generated archives
FILES = [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]
META = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n"


def records(seed, label=None):
    """RECORDS raw records and the (images (n, 3, 32, 32), labels) they stand for, decoded by
    the format's definition: byte 0 the label, then 1024 red, 1024 green, 1024 blue bytes,
    each plane row by row."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, (RECORDS, 3073), dtype=np.uint8)
    raw[:, 0] = rng.integers(0, 10, RECORDS) if label is None else label
    images = np.zeros((RECORDS, 3, 32, 32), np.uint8)
    for i in range(RECORDS):
        for c in range(3):
            for y in range(32):
                images[i, c, y] = raw[i, 1 + 1024 * c + 32 * y: 1 + 1024 * c + 32 * (y + 1)]
    return raw.tobytes(), images, raw[:, 0].copy()


def make_archive(path, label=None, change=None):
    """Write a CIFAR-10-like archive; return {split: (images, labels)}. change: {name: bytes}
    replaces a member's content (None drops it)."""
    members, expected = {"batches.meta.txt": META.encode()}, {"train": ([], []), "test": ([], [])}
    for k, name in enumerate(FILES):
        data, images, labels = records(k, label)
        members[name] = data
        split = "test" if name == "test_batch.bin" else "train"
        expected[split][0].append(images)
        expected[split][1].append(labels)
    for name, content in (change or {}).items():
        members.pop(name) if content is None else members.__setitem__(name, content)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return {s: (np.concatenate(i), np.concatenate(l)) for s, (i, l) in expected.items()}


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Search confined to tmp_path, records per file patched; downloads go to a closed port."""
    monkeypatch.setattr(cifar, "RECORDS_PER_FILE", RECORDS)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CLCNN_DATA", raising=False)
    monkeypatch.setenv("CLCNN_CIFAR10_URL", f"http://127.0.0.1:{closed_port()}/{cifar.ARCHIVE}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    return SimpleNamespace(cache=tmp_path / "xdg" / "clcnn" / "cifar-10", tmp=tmp_path)


@pytest.fixture
def server(env, monkeypatch):
    root = env.tmp / "served"
    root.mkdir()
    expected = make_archive(root / cifar.ARCHIVE)
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", sha(root / cifar.ARCHIVE))
    with serve_folder(root) as httpd:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{cifar.ARCHIVE}"
        monkeypatch.setenv("CLCNN_CIFAR10_URL", url)
        yield SimpleNamespace(url=url, httpd=httpd, expected=expected)


def assert_split(got, expected):
    assert got[0].dtype == np.uint8 and got[1].dtype == np.uint8
    assert got[0].shape == (len(expected[1]), 3, 32, 32)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_download_extract_and_load(server, env, capsys):
    assert_split(cifar10("train"), server.expected["train"])
    err = capsys.readouterr().err
    assert cifar.ARCHIVE in err and "100%" in err         # the progress bar
    # The archive and its folder, no temporary left.
    assert sorted(p.name for p in env.cache.iterdir()) == sorted([cifar.ARCHIVE, cifar.FOLDER])
    assert sorted(p.name for p in (env.cache / cifar.FOLDER).iterdir()) == sorted(FILES + ["batches.meta.txt"])
    server.httpd.truncate.add(cifar.ARCHIVE)          # found in the cache from now on
    assert_split(cifar10("test"), server.expected["test"])
    assert_split(dataset("cifar10", "test"), server.expected["test"])
    assert len(cifar10("train")[0]) == 5 * RECORDS


def test_class_names_are_the_archive_meta():
    assert class_names("cifar10") == [line for line in META.split("\n") if line]
    assert tuple(class_names("CIFAR-10")) == CIFAR10_CLASSES


@pytest.mark.parametrize("failure", ["truncated", "checksum"])
def test_bad_download_leaves_nothing(server, env, monkeypatch, failure):
    if failure == "truncated":
        server.httpd.truncate.add(cifar.ARCHIVE)
    else:
        monkeypatch.setattr(cifar, "CIFAR10_SHA256", hashlib.sha256(b"other").hexdigest())
    with pytest.raises(DataError) as e:
        cifar10("test", progress=False)
    message = str(e.value)
    assert {"truncated": "cut short", "checksum": "checksum mismatch"}[failure] in message
    assert cifar.ARCHIVE in message and str(env.cache) in message   # where to put it by hand
    assert list(env.cache.iterdir()) == []


def test_no_server_says_where_to_put_the_archive(env):
    with pytest.raises(DataError) as e:
        cifar10("train", progress=False)
    message = str(e.value)
    assert "cannot reach" in message and cifar.ARCHIVE in message and str(env.cache) in message
    with pytest.raises(DataError, match=str(env.tmp / "mine")):
        cifar10("train", data_dir=env.tmp / "mine", progress=False)
    with pytest.raises(DataError, match="not found in"):
        cifar10("train", download=False)


def test_truncated_bin_inside_names_file_and_size(env, monkeypatch):
    folder = env.tmp / "data"
    folder.mkdir()
    good, _, _ = records(2)
    make_archive(folder / cifar.ARCHIVE, change={"data_batch_3.bin": good[:-100]})
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", sha(folder / cifar.ARCHIVE))
    with pytest.raises(DataError) as e:
        cifar10("train", data_dir=folder)
    message = str(e.value)
    assert "data_batch_3.bin" in message and "truncated" in message
    assert f"expected {RECORDS * 3073} bytes" in message and f"got {RECORDS * 3073 - 100}" in message
    assert_split(cifar10("test", data_dir=folder), (records(5)[1], records(5)[2]))  # its own file is whole


def test_archive_on_disk_checked_and_extracted_once(env, monkeypatch):
    folder = env.tmp / "data"
    folder.mkdir()
    expected = make_archive(folder / cifar.ARCHIVE)
    with pytest.raises(DataError, match="not the official CIFAR-10 archive"):
        cifar10("test", data_dir=folder)                  # the real sha256: this one differs
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", sha(folder / cifar.ARCHIVE))
    assert_split(cifar10("test", data_dir=folder), expected["test"])
    (folder / cifar.ARCHIVE).unlink()                     # the extracted folder serves now
    assert_split(cifar10("train", data_dir=folder), expected["train"])


def test_corrupt_archive_leaves_no_folder(env, monkeypatch):
    folder = env.tmp / "data"
    folder.mkdir()
    make_archive(folder / "whole.tar.gz")
    data = (folder / "whole.tar.gz").read_bytes()
    for cut in (data[: len(data) // 2], data[:-20]):
        (folder / cifar.ARCHIVE).write_bytes(cut)
        monkeypatch.setattr(cifar, "CIFAR10_SHA256", sha(folder / cifar.ARCHIVE))
        with pytest.raises(DataError) as e:
            cifar10("train", data_dir=folder)
        assert str(folder / cifar.ARCHIVE) in str(e.value) and "truncated or corrupt" in str(e.value)
        assert sorted(p.name for p in folder.iterdir()) == [cifar.ARCHIVE, "whole.tar.gz"]


def test_archive_missing_a_file(env, monkeypatch):
    folder = env.tmp / "data"
    folder.mkdir()
    make_archive(folder / cifar.ARCHIVE, change={"test_batch.bin": None})
    monkeypatch.setattr(cifar, "CIFAR10_SHA256", sha(folder / cifar.ARCHIVE))
    with pytest.raises(DataError, match="lacks test_batch.bin"):
        cifar10("train", data_dir=folder)
    assert sorted(p.name for p in folder.iterdir()) == [cifar.ARCHIVE]


def test_search_order(env, monkeypatch):
    arg, data = env.tmp / "arg", env.tmp / "clcnn-data"
    folders = [arg / cifar.FOLDER, data / "cifar-10" / cifar.FOLDER, env.cache]   # the cache: files directly
    for label, folder in enumerate(folders):
        folder.mkdir(parents=True)
        for name in FILES:
            (folder / name).write_bytes(records(0, label)[0])
    monkeypatch.setenv("CLCNN_DATA", str(data))
    assert cifar.search_dirs(arg) == [arg, data / "cifar-10", env.cache]
    assert set(cifar10("test", data_dir=arg)[1]) == {0}
    assert set(cifar10("test")[1]) == {1}
    monkeypatch.delenv("CLCNN_DATA")
    assert set(cifar10("train")[1]) == {2}


def test_bad_label_and_split(env):
    env.cache.mkdir(parents=True)
    for name in FILES:
        (env.cache / name).write_bytes(records(0, 10)[0])
    with pytest.raises(DataError, match="label 10"):
        cifar10("test")
    with pytest.raises(ValueError, match="split"):
        cifar10("validation")
