"""Device choice and the program builder."""
import numpy as np
import pytest

import clcnn
from clcnn.errors import DeviceError, KernelBuildError


def test_list_devices_reports_index_platform_name_type():
    found = clcnn.list_devices()
    assert found, "the test environment installs PoCL, so at least one device must exist"
    for index, platform, name, kind in found:
        p, d = index.split(":")
        assert p.isdigit() and d.isdigit() and platform and name
        assert kind in ("CPU", "GPU", "ACCELERATOR", "OTHER")


@pytest.mark.parametrize("spec", ["pocl", "cpu", "0:0", "POCL"])
def test_device_specs_select_the_pocl_cpu(spec):
    if not any("portable" in p.lower() for _, p, _, _ in clcnn.list_devices()):
        pytest.skip("needs PoCL")
    device = clcnn.get_device(spec)
    assert device.type == "CPU" or spec == "0:0"


def test_name_substring_selects_a_device():
    index, platform, name, kind = clcnn.list_devices()[0]
    assert clcnn.get_device(name[:6]).name == name or clcnn.get_device(name[:6]).type in ("CPU", "GPU")


def test_environment_variable_chooses_the_default(monkeypatch):
    index = clcnn.list_devices()[0][0]
    monkeypatch.setenv("CLCNN_DEVICE", index)
    assert clcnn.get_device().index == index


def test_unknown_device_lists_what_exists():
    with pytest.raises(DeviceError) as info:
        clcnn.get_device("no-such-accelerator")
    message = str(info.value)
    assert "no-such-accelerator" in message
    for index, _, name, _ in clcnn.list_devices():
        assert index in message and name in message


def test_same_device_object_is_reused():
    assert clcnn.get_device("cpu") is clcnn.get_device("cpu")


def test_build_failure_carries_the_build_log(device, tmp_path, monkeypatch):
    from clcnn import device as device_module
    real = device_module._read_kernel_source
    monkeypatch.setattr(device_module, "_read_kernel_source",
                        lambda name: "__kernel void broken(__global float *x) { x[0] = undefined_symbol; }"
                        if name == "broken.cl" else real(name))
    with pytest.raises(KernelBuildError) as info:
        device.program("broken.cl")
    assert "broken.cl" in str(info.value) and "undefined_symbol" in str(info.value)


def test_programs_are_built_once_per_defines(device, monkeypatch):
    from clcnn import device as device_module
    real = device_module._read_kernel_source
    reads = []

    def source(name):
        reads.append(name)
        return ("__kernel void put(__global float *x) { x[0] = VALUE; }" if name == "tiny.cl" else real(name))

    monkeypatch.setattr(device_module, "_read_kernel_source", source)
    first = device.program("tiny.cl", VALUE=1.5)
    assert device.program("tiny.cl", VALUE=1.5) is first
    assert device.program("tiny.cl", VALUE=2) is not first
    assert reads.count("tiny.cl") == 2
    out = device.zeros((1,))
    device.kernel("tiny.cl", "put", VALUE=1.5)(device.queue, (1,), None, out.data)
    assert out.get()[0] == 1.5


def test_empty_arrays_of_one_shape_are_independent(device):
    """Arrays of a shape made before are built from a template (Device.empty): each still
    gets its own buffer, the shape, strides and flags of a fresh pyopencl array, and works."""
    import pyopencl.array as cl_array
    first, second = device.empty((3, 5)), device.empty((3, 5))
    fresh = cl_array.empty(device.queue, (3, 5), np.float32)
    assert first.base_data is not second.base_data
    assert (second.shape, second.strides, second.dtype, second.nbytes) == (fresh.shape, fresh.strides, fresh.dtype, fresh.nbytes)
    assert second.flags.c_contiguous and second.events == [] and second.events is not first.events
    values = np.arange(15, dtype=np.float32).reshape(3, 5)
    second.set(values)
    first.fill(np.float32(-1.0))
    np.testing.assert_array_equal(second.get(), values)
    np.testing.assert_array_equal(first.get(), -np.ones((3, 5), np.float32))
    np.testing.assert_array_equal((first + second).get(), values - 1)
    np.testing.assert_array_equal(second.reshape(15).get(), values.ravel())
    assert device.empty((0, 4)).shape == device.empty((0, 4)).shape == (0, 4)
    assert device.empty([2, 2]).shape == (2, 2)      # a list shape takes the plain path


def test_views_share_the_buffer_and_keep_the_offset(device):
    """Device.view: the array with another shape of the same size, on the same buffer and from
    the same offset (a slice of a bigger array too), made from a template from the second view
    of a shape on; other sizes are refused as pyopencl's reshape refuses them."""
    values = np.arange(24, dtype=np.float32)
    whole = device.to_device(values)
    for _ in range(2):      # the first view of (2, 3, 2) makes the template, the second uses it
        part = whole[12:]
        view = device.view(part, (2, 3, 2))
        assert view.shape == (2, 3, 2) and view.strides == (24, 8, 4) and view.flags.c_contiguous
        assert view.base_data is whole.base_data and view.offset == part.offset == 48
        np.testing.assert_array_equal(view.get(), values[12:].reshape(2, 3, 2))
    view.fill(np.float32(-1.0))
    np.testing.assert_array_equal(whole.get(), np.concatenate([values[:12], -np.ones(12, np.float32)]))
    np.testing.assert_array_equal(device.view(device.empty((4, 3)).fill(np.float32(2.0)), (2, 3, 2)).get(),
                                  np.full((2, 3, 2), 2.0, np.float32))
    with pytest.raises(ValueError):
        device.view(whole, (5, 5))


def test_upload_copies_the_host_array_at_once(device):
    """Device.upload returns before the write is done; it must have taken its copy already:
    a host batch reused for the next batch right away must not leak into this one, even with
    a long kernel queued ahead of the write."""
    rng = np.random.default_rng(0)
    big = device.to_device(rng.random((2048, 2048)))
    host = rng.integers(0, 1000, (64, 1, 28, 28)).astype(np.float32)   # exact under += 1
    original = host.copy()
    uploads = []
    for _ in range(3):
        busy = big + big + big    # queued before the write, so the write waits behind it
        uploads.append(device.upload(host))
        host += 1.0               # the caller refills its buffer at once
    for k, array in enumerate(uploads):
        assert array.dtype == np.float32 and array.shape == host.shape
        np.testing.assert_array_equal(array.get(), original + np.float32(k))
    np.testing.assert_allclose(busy.get(), 3 * big.get())
    assert device.upload(np.zeros((0, 3))).shape == (0, 3)


def test_kernels_flush_denormals_and_stay_correct(device):
    """Programs are built with -cl-denorms-are-zero (x86 cores slow down 6-130x on denormal
    operands): a convolution of inputs in the denormal range gives the oracle's result to
    within the denormal range, and on PoCL, which honours the option, exactly zero."""
    from clcnn.ops import conv2d
    from clcnn.oracle import conv2d as oracle
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 8, 8)) * 1e-40).astype(np.float32)
    assert np.count_nonzero(x) > 0, "the inputs must really be denormal, not rounded to zero"
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = conv2d.conv2d_forward(device, device.to_device(x), device.to_device(w), None, (1, 1),
                              (1, 1, 1, 1)).get()
    expected = oracle.conv2d_forward(x.astype(np.float64), w.astype(np.float64), None, (1, 1), (1, 1, 1, 1))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-37)
    if "portable" in device.platform.name.lower():
        assert not np.any(y), "PoCL should flush the denormal inputs to zero"


def test_max_pooling_keeps_denormals_apart(device):
    """pool.cl is built without the flush (device.EXACT_DENORMAL_FILES): max pooling tells
    denormals apart as PyTorch does, argmax included."""
    from clcnn.ops import pool
    x = np.array([[[[1e-40, 3e-40, -2e-40, 0.0]]]], dtype=np.float32)
    assert np.count_nonzero(x) == 3, "the inputs must really be denormal, not rounded to zero"
    y, argmax = pool.maxpool2d_forward(device, device.to_device(x), (1, 2), (1, 2), (0, 0, 0, 0))
    np.testing.assert_array_equal(argmax.get().ravel(), [1, 3])
    np.testing.assert_array_equal(y.get().ravel(), np.array([3e-40, 0.0], np.float32))


def test_prepare_builds_in_the_background_and_program_waits_for_it(monkeypatch):
    """Device.prepare builds a file's define-free program in a thread; program() called while
    that build runs waits for it and returns the same program, built once."""
    import threading
    import time
    from clcnn import device as device_module
    from clcnn.device import Device

    shared = clcnn.get_device()
    fresh = Device(shared.index, shared.platform, shared.cl_device)
    real = device_module._read_kernel_source
    reads, started = [], threading.Event()

    def slow_source(name):
        reads.append((name, threading.current_thread().name))
        if name == "tiny.cl":
            started.set()
            time.sleep(0.3)                 # program() below arrives while this build runs
            return "__kernel void put(__global float *x) { x[0] = 2.5f; }"
        return real(name)

    monkeypatch.setattr(device_module, "_read_kernel_source", slow_source)
    monkeypatch.setattr(device_module, "_binary_cache_dir", lambda: None)
    fresh.prepare("tiny.cl")
    assert started.wait(10)
    program = fresh.program("tiny.cl")
    fresh._preparing.join(10)
    assert fresh.program("tiny.cl") is program
    assert [thread for name, thread in reads if name == "tiny.cl"] == ["clcnn-prepare"]
    out = fresh.zeros((1,))
    program.put(fresh.queue, (1,), None, out.data)
    assert out.get()[0] == 2.5


def test_bundle_files_share_one_define_free_build(monkeypatch):
    """The define-free programs of device.BUNDLE's files are one build holding every kernel
    each file declares; a build of one of them with defines stays its own."""
    import re

    import pyopencl as cl

    from clcnn import device as device_module
    from clcnn.device import Device

    shared = clcnn.get_device()
    fresh = Device(shared.index, shared.platform, shared.cl_device)
    real = device_module._read_kernel_source
    reads = []
    monkeypatch.setattr(device_module, "_read_kernel_source", lambda name: reads.append(name) or real(name))
    monkeypatch.setattr(device_module, "_binary_cache_dir", lambda: None)
    programs = [fresh.program(f) for f in device_module.BUNDLE]
    assert all(p is programs[0] for p in programs)
    assert sorted(reads) == sorted(["common.h", *device_module.BUNDLE])
    built = set(programs[0].get_info(cl.program_info.KERNEL_NAMES).split(";"))
    for f in device_module.BUNDLE:
        declared = set(re.findall(r"__kernel\s+void\s+(\w+)\s*\(", real(f)))
        assert declared and declared <= built, f
    assert fresh.program("activation.cl", ACTIVATION=3) is not programs[0]


_THREAD_AFFINITIES = """
import json, os, sys
if len(sys.argv) > 1 and sys.argv[1] != "fewer-workers":
    os.sched_setaffinity(0, {int(sys.argv[1])})
import clcnn
if sys.argv[1:] == ["fewer-workers"]:   # as if PoCL had started fewer workers than CPUs
    clcnn.device._one_worker_per_cpu = lambda found, cpus: False
device = clcnn.get_device("pocl")
import pyopencl as cl
pocls = sum("portable computing language" in p.name.lower() for p in cl.get_platforms())
print(json.dumps({"units": device.cl_device.max_compute_units, "left_set": "POCL_AFFINITY" in os.environ,
                  "pocl_platforms": pocls,
                  "threads": [sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")]}))
"""


def _thread_affinities(*args, env=None):
    import json
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", _THREAD_AFFINITIES, *args], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def _needs_pocl_and_cpus():
    import os
    if not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux thread affinities")
    if not any("portable" in p.lower() for _, p, _, _ in clcnn.list_devices()):
        pytest.skip("needs PoCL")
    if os.sched_getaffinity(0) != set(range(os.cpu_count())) or os.cpu_count() < 2:
        pytest.skip("needs a process allowed on every CPU of 2 or more")


def test_pocl_workers_are_pinned_one_per_cpu_without_leaving_the_setting():
    import os
    _needs_pocl_and_cpus()
    env = {k: v for k, v in os.environ.items()
           if k not in ("POCL_AFFINITY", "POCL_MAX_PTHREAD_COUNT", "POCL_CPU_MAX_CU_COUNT")}
    found = _thread_affinities(env=env)
    pinned = [t for t in found["threads"] if len(t) == 1]
    # PoCL's workers, one per compute unit, each on its own CPU (the workers of every PoCL
    # platform: pip's and Debian's may both be installed); the Python threads stay free.
    assert sorted(t[0] for t in pinned) == sorted(list(range(found["units"])) * found["pocl_platforms"])
    assert not found["left_set"], "POCL_AFFINITY must not stay in the environment for child processes"


def test_pocl_workers_stay_free_where_the_user_says_so_or_fewer_cpus_or_workers_are_given():
    import os
    _needs_pocl_and_cpus()
    env = {k: v for k, v in os.environ.items()
           if k not in ("POCL_AFFINITY", "POCL_MAX_PTHREAD_COUNT", "POCL_CPU_MAX_CU_COUNT")}
    everywhere = list(range(os.cpu_count()))
    off = _thread_affinities(env=dict(env, POCL_AFFINITY="0"))
    assert all(t == everywhere for t in off["threads"])
    # one worker per process (MPI ranks on one machine): pinned, every rank's would share CPU 0
    one = _thread_affinities(env=dict(env, POCL_MAX_PTHREAD_COUNT="1"))
    assert all(t == everywhere for t in one["threads"])
    last = os.cpu_count() - 1
    narrowed = _thread_affinities(str(last), env=env)
    assert all(t == [last] for t in narrowed["threads"]), "no worker may be moved outside the CPUs given"
    # PoCL counted fewer compute units than CPUs: the workers it pinned get every CPU back
    fewer = _thread_affinities("fewer-workers", env=env)
    assert all(t == everywhere for t in fewer["threads"])
