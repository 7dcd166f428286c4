"""The on-disk program binary cache of clcnn.device: a program built in a later process loads
from its binary and computes the same; a damaged binary falls back to a source build."""
import numpy as np
import pyopencl as cl

from clcnn.device import get_device

SOURCE = "__kernel void scale(__global float *x, float a) { x[get_global_id(0)] *= a; }"
OPTIONS = ("-DUNUSED=1",)


def _run(program, dev, values, a):
    x = dev.to_device(values)
    program.scale(dev.queue, (values.size,), None, x.data, np.float32(a))
    return x.get()


def _built(dev):
    return cl.Program(dev.context, SOURCE).build(options=list(OPTIONS))


def _store(dev):
    """A build as clcnn.device makes it, waiting for the background binary writer it starts
    at exit (the session's device may have queued programs of its own). Returns how many
    writers it started."""
    dev.flush_binaries()                       # whatever the session queued before this test
    dev._store_binary(SOURCE, OPTIONS, _built(dev))
    job = dev.flush_binaries()
    if job is not None:
        assert job.wait(timeout=120) == 0
    return int(job is not None)


def test_binary_is_stored_on_second_build_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CLCNN_NO_CACHE", raising=False)
    dev = get_device()
    assert dev._cached_binary(SOURCE, OPTIONS) is None
    assert _store(dev) == 0                                  # first build: a marker only
    assert not list((tmp_path / "programs").glob("*.bin"))
    assert dev._cached_binary(SOURCE, OPTIONS) is None
    assert _store(dev) == 1                                  # built again: a background process keeps it
    assert len(list((tmp_path / "programs").glob("*.bin"))) == 1
    assert not list((tmp_path / "programs").glob("*.pending")) and not list((tmp_path / "programs").glob("*.src"))
    assert _store(dev) == 0                                  # kept: no second writer
    assert len(list((tmp_path / "programs").glob("*"))) == 2
    program = dev._cached_binary(SOURCE, OPTIONS)
    assert program is not None
    values = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(_run(program, dev, values, 3.0), values * np.float32(3.0))
    # Other options are another program.
    assert dev._cached_binary(SOURCE, ("-DUNUSED=2",)) is None


def test_damaged_binary_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(tmp_path))
    dev = get_device()
    _store(dev)
    _store(dev)
    (path,) = (tmp_path / "programs").glob("*.bin")
    path.write_bytes(b"not a binary")
    assert dev._cached_binary(SOURCE, OPTIONS) is None


def test_no_cache_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("CLCNN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CLCNN_NO_CACHE", "1")
    dev = get_device()
    dev._store_binary(SOURCE, OPTIONS, _built(dev))
    dev._store_binary(SOURCE, OPTIONS, _built(dev))
    assert not (tmp_path / "programs").exists()


def test_define_free_kernels_add_no_builds_of_their_own():
    """The packing, padding and reduction kernels use none of their file's -D defines, so they
    come from a program of that file that a layer's shaped kernels built anyway: a convolution's
    forward and backward and a Dense layer's build no define-free conv2d.cl or gemm.cl program
    (each costs PoCL 0.2-0.7 s on a cold start), and the results equal the shared device's."""
    from clcnn.device import Device, _build_options
    from clcnn.ops import conv2d, dense

    shared = get_device()
    fresh = Device(shared.index, shared.platform, shared.cl_device)
    rng = np.random.default_rng(3)
    x, w, gy = (rng.standard_normal(s).astype(np.float32)
                for s in ((4, 6, 14, 14), (16, 6, 5, 5), (4, 16, 10, 10)))
    a, b = rng.standard_normal((5, 120)).astype(np.float32), rng.standard_normal((84, 120)).astype(np.float32)
    results = []
    for dev in (fresh, shared):
        xd, wd, gyd = dev.to_device(x), dev.to_device(w), dev.to_device(gy)
        y = conv2d.conv2d_forward(dev, xd, wd, None, (1, 1), (0, 0, 0, 0), algorithm="direct")
        _, gw, _ = conv2d.conv2d_backward(dev, xd, wd, gyd, (1, 1), (0, 0, 0, 0), need_input_grad=False,
                                          algorithm="direct")
        out = dense.dense_forward(dev, dev.to_device(a), dev.to_device(b), None, "tanh")
        results.append([r.get() for r in (y, gw, out)])
    for filename in ("conv2d.cl", "gemm.cl"):
        built = [options for name, options in fresh._programs if name == filename]
        assert built and tuple(_build_options(filename)) not in built, (filename, built)
    for mine, theirs in zip(*results):
        np.testing.assert_array_equal(mine, theirs)
