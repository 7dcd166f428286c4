"""Bad input and faults: each gives one clear error (type, the thing that was wrong, what to
do), never a traceback at the command line, and never loses a checkpoint.

Cases already covered elsewhere are not repeated here: IDX files (test_datasets), corrupt,
truncated, future-format and other-architecture checkpoints and NaN loss (test_train), build
failures and unknown devices (test_device), the basic CLI mistakes (test_cli)."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import types

import numpy as np
import pyopencl as cl
import pyopencl._cl as _cl
import pytest
from click.testing import CliRunner

import clcnn
from clcnn import layers as L
from clcnn import serialization
from clcnn.cli.main import cli
from clcnn.device import capability_problems
from clcnn.errors import (CheckpointError, DeviceError, DeviceOutOfMemory, NonFiniteError,
                          ShapeError)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cl_error(code, routine="clCreateBuffer"):
    kind = cl.MemoryError if code == cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE else cl.RuntimeError
    return kind(_cl._ErrorRecord(routine, code, "simulated"))


def _one_clean_line(result):
    """Exit code 1 and one "Error: ..." line, the last (CliRunner mixes in stderr, where the
    train verb announces its run first)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert [line for line in lines if line.startswith("Error")] == lines[-1:], result.output


# ---------------------------------------------------------------------------- tensors

def test_shape_mismatch_at_first_call_names_both_layers_and_both_shapes(device):
    model = clcnn.Sequential([L.Conv2D(1, 2, 3), L.ReLU(), L.Flatten(), L.Dense(10, 3)], device=device)
    with pytest.raises(ShapeError) as info:
        model(np.zeros((2, 1, 8, 8), np.float32))
    message = str(info.value)
    assert "layer 3 (Dense)" in message and "layer 2 (Flatten)" in message
    assert "(2, 72)" in message and "10 input features" in message


def test_missing_channel_axis_names_the_layer_and_layout(device):
    model = clcnn.models.lenet5(device=device)
    with pytest.raises(ShapeError, match=r"layer 0 \(Conv2D\).*model input.*\(2, 32, 32\).*\(C, H, W\)"):
        model(np.zeros((2, 32, 32), np.float32))


def test_dtypes_converted_or_refused_explicitly(device):
    model = clcnn.Sequential([L.Flatten(), L.Dense(4, 2)], device=device)
    x = np.random.default_rng(0).standard_normal((3, 4))
    want = model(x.astype(np.float32)).get()
    assert np.array_equal(model(x.astype(np.float16).astype(np.float32)).get(),
                          model(x.astype(np.float16)).get())           # float16 widened
    assert np.allclose(model(x).get(), want)                           # float64 narrowed
    for bad in (x.astype(np.int32), x > 0, x.astype(np.complex64)):
        with pytest.raises(TypeError, match="float"):
            model(bad)
    with pytest.raises(TypeError, match="float32.*float64"):           # device arrays are not copied
        model(cl.array.to_device(device.queue, x))


@pytest.mark.parametrize("where", ["numpy", "device"])
def test_nan_and_inf_refused_when_a_check_is_asked_for(device, where):
    model = clcnn.Sequential([L.Flatten(), L.Dense(4, 2)], device=device, check_finite=True)
    x = np.ones((2, 4), np.float32)
    x[1, 2], x[0, 3] = np.nan, np.inf
    data = device.to_device(x) if where == "device" else x
    with pytest.raises(NonFiniteError, match=r"1 NaN and 1 Inf.*\(0, 3\).*check_finite=False"):
        model(data)
    assert np.isnan(model(data, check_finite=False).get()).any()    # the check is optional
    plain = clcnn.Sequential([L.Flatten(), L.Dense(4, 2)], device=device)
    with pytest.raises(ValueError):                                 # NonFiniteError is a ValueError
        plain(data, check_finite=True)
    assert plain(np.ones((2, 4), np.float32), check_finite=True).shape == (2, 2)


def test_empty_batch_is_refused_before_any_upload(device):
    model = clcnn.models.lenet5(device=device)
    for bad in (np.zeros((0, 1, 32, 32), np.float32), np.zeros((4, 1, 0, 32), np.float32),
                np.zeros((5,), np.float32)):
        with pytest.raises(ShapeError, match="non-empty batch"):
            model(bad)
    with pytest.raises(ShapeError, match="output gradient must be a non-empty batch"):
        model.backward(np.zeros((0, 10), np.float32))


def test_predict_of_no_images_is_a_clear_error(device):
    with pytest.raises(ShapeError, match="no images"):
        clcnn.train.predict(clcnn.models.lenet5(device=device), np.zeros((0, 1, 32, 32), np.float32))


# ---------------------------------------------------------------------------- device memory

def test_buffer_above_the_device_limit_is_device_out_of_memory(device):
    too_big = device.cl_device.max_mem_alloc_size // 4 + 1024
    with pytest.raises(DeviceOutOfMemory, match=r"MiB.*smaller --batch-size"):
        device.empty((too_big,))
    assert isinstance(DeviceOutOfMemory("x"), DeviceError)


class _FlakyPool:
    """Stands in for the pyopencl MemoryPool: fails `failures` times, then allocates."""

    def __init__(self, real, failures, code=cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE, above=0):
        self.real, self.failures, self.code, self.above = real, failures, code, above
        self.freed = 0

    def __call__(self, nbytes):
        if nbytes > self.above and self.failures > 0:
            self.failures -= 1
            raise _cl_error(self.code)
        return self.real(nbytes)

    def free_held(self):
        self.freed += 1
        self.real.free_held()


@pytest.mark.parametrize("code", [cl.status_code.MEM_OBJECT_ALLOCATION_FAILURE, cl.status_code.OUT_OF_RESOURCES])
def test_out_of_memory_frees_the_pool_and_retries_once(device, monkeypatch, code):
    pool = _FlakyPool(device.pool, failures=1, code=code)
    monkeypatch.setattr(device, "pool", pool)
    assert device.zeros((1000,)).get().sum() == 0
    assert pool.freed == 1
    pool.failures = 2                                  # fails again after the release: an error
    with pytest.raises(DeviceOutOfMemory, match="3.8 MiB"):
        device.zeros((1000, 1000))
    assert pool.freed == 2 and pool.failures == 0     # released once more, tried exactly twice


def test_out_of_memory_twice_is_an_error_naming_layer_batch_and_fix(device, monkeypatch):
    model = clcnn.models.lenet5(device=device)
    pool = _FlakyPool(device.pool, failures=10 ** 9, above=4 << 20)   # nothing above 4 MiB fits
    monkeypatch.setattr(device, "pool", pool)
    with pytest.raises(DeviceOutOfMemory) as info:
        model(np.zeros((512, 1, 32, 32), np.float32))      # input 2 MiB fits, conv1's 9.2 MiB not
    message = str(info.value)
    assert "layer 0 (Conv2D) at batch size 512" in message and "smaller --batch-size" in message
    assert pool.freed >= 1
    with pytest.raises(DeviceOutOfMemory, match="input of batch size 2048"):
        model(np.zeros((2048, 1, 32, 32), np.float32))     # the 8 MiB upload itself
    monkeypatch.undo()
    assert model(np.zeros((2, 1, 32, 32), np.float32)).shape == (2, 10)   # the device still works


def test_out_of_resources_at_enqueue_time_is_retried_then_reported(device, monkeypatch):
    model = clcnn.Sequential([L.Flatten(), L.Dense(4, 2)], device=device)
    dense = model.layers[1]
    real, calls = dense.forward, []

    def enqueue_fails(ctx, x, **kwargs):
        calls.append(1)
        if len(calls) <= failures:
            raise _cl_error(cl.status_code.OUT_OF_RESOURCES, "clEnqueueNDRangeKernel")
        return real(ctx, x, **kwargs)

    monkeypatch.setattr(dense, "forward", enqueue_fails)
    failures = 1
    assert model(np.ones((3, 4), np.float32)).shape == (3, 2) and len(calls) == 2
    calls.clear()
    failures = 2
    with pytest.raises(DeviceOutOfMemory, match=r"layer 1 \(Dense\) at batch size 3.*OUT_OF_RESOURCES"):
        model(np.ones((3, 4), np.float32))
    assert len(calls) == 2


def test_out_of_memory_in_training_is_one_line_at_the_cli(device, monkeypatch, tmp_path):
    pool = _FlakyPool(device.pool, failures=10 ** 9, above=4 << 20)
    monkeypatch.setattr(device, "pool", pool)
    monkeypatch.setattr(clcnn, "get_device", lambda spec=None: device)
    result = CliRunner().invoke(cli, ["train", "lenet5", "--epochs", "1", "--limit", "1024", "--batch-size", "1024",
                                      "--quiet", "--out", str(tmp_path)])
    _one_clean_line(result)
    assert "out of device memory" in result.output and "--batch-size" in result.output


def test_device_lacking_float32_features_is_refused():
    fp = cl.device_fp_config
    good = types.SimpleNamespace(single_fp_config=fp.INF_NAN | fp.ROUND_TO_NEAREST | fp.FMA,
                                 compiler_available=True)
    assert capability_problems(good) == []
    embedded = types.SimpleNamespace(single_fp_config=fp.ROUND_TO_ZERO, compiler_available=False)
    problems = " ".join(capability_problems(embedded))
    assert "CL_FP_INF_NAN" in problems and "ROUND_TO_NEAREST" in problems and "COMPILER" in problems


# ---------------------------------------------------------------------------- models

@pytest.mark.parametrize("layers, input_shape, fragments", [
    ([L.Conv2D(1, 4, 3), L.Conv2D(3, 8, 3)], (1, 8, 8), ["layer 1 (Conv2D)", "layer 0, Conv2D", "(4, 6, 6)"]),
    ([L.Conv2D(1, 4, 3), L.MaxPool2D(2), L.Conv2D(4, 4, 5)], (1, 9, 9),
     ["layer 2 (Conv2D)", "layer 1, MaxPool2D", "kernel 5x5 is larger than the padded input 3x3"]),
    ([L.Conv2D(1, 4, 3), L.Dense(144, 2)], (1, 8, 8), ["layer 1 (Dense)", "layer 0, Conv2D", "Flatten"]),
])
def test_layers_that_do_not_chain_are_found_by_summary(device, layers, input_shape, fragments):
    model = clcnn.Sequential(layers, device=device)
    with pytest.raises(ShapeError) as info:
        model.summary(input_shape, print_fn=None)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("build, fragment", [
    (lambda: L.Conv2D(1, 2, 3, stride=-1), "stride must be >= 1"),
    (lambda: L.Conv2D(1, 2, 0), "kernel_size must be >= 1"),
    (lambda: L.MaxPool2D(2, stride=0), "stride must be >= 1"),
    (lambda: L.AvgPool2D(3, stride=(1, -2)), "stride must be >= 1"),
    (lambda: L.AvgPool2D(3, padding=2), "half the kernel"),
    (lambda: L.MaxPool2D(3, padding=(0, 0, 0, 2)), "half the kernel"),
    (lambda: L.Conv2D(1, 2, 3, padding=-1), "padding must be >= 0"),
    (lambda: L.Conv2D(1, 2, 3, activation="swish"), "unknown activation 'swish'"),
    (lambda: L.MaxPool2D(2, padding="same"), "not 'same'"),
    (lambda: L.Conv2D(1, 2, 3, padding="full"), "'valid', 'same'"),
    (lambda: L.LeakyReLU(-0.1), "negative_slope"),
])
def test_bad_layer_arguments_are_value_errors_naming_the_argument(build, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build()


# ---------------------------------------------------------------------------- files

def test_checkpoint_weights_of_the_wrong_shape_are_a_checkpoint_error(device, tmp_path):
    path = tmp_path / "m.clcnn"
    model = clcnn.models.lenet5(device=device)
    state = model.state_dict()
    state["3.weight"] = np.zeros((16, 6, 3, 3), np.float32)
    serialization.write_archive(path, {"architecture": model.architecture()},
                                {f"param/{k}": v for k, v in state.items()})
    with pytest.raises(CheckpointError, match=r"m.clcnn.*3.weight"):
        clcnn.load(path, device=device)


def test_checkpoint_with_an_unknown_layer_type_is_a_checkpoint_error(device, tmp_path):
    path = tmp_path / "m.clcnn"
    serialization.write_archive(path, {"architecture": [{"type": "Transformer", "config": {}}]}, {})
    with pytest.raises(CheckpointError, match="unknown layer type 'Transformer'"):
        clcnn.load(path, device=device)


def test_checkpoint_with_a_bad_layer_config_is_a_checkpoint_error(device, tmp_path):
    path = tmp_path / "m.clcnn"
    serialization.write_archive(path, {"architecture": [
        {"type": "Conv2D", "config": {"in_channels": 1, "out_channels": 2, "kernel_size": [3, 3],
                                      "stride": [0, 1], "dilation": 2}}]}, {})
    with pytest.raises(CheckpointError, match="m.clcnn"):
        clcnn.load(path, device=device)


def test_truncated_idx_dataset_is_one_line_at_the_cli(tmp_path):
    from clcnn.datasets import mnist, write_idx
    images, labels = mnist("test")
    data = tmp_path / "digits"
    data.mkdir()
    for split, n in (("train", 100), ("t10k", 50)):
        write_idx(data / f"{split}-images-idx3-ubyte", images[:n])
        write_idx(data / f"{split}-labels-idx1-ubyte", labels[:n])
    path = data / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    result = CliRunner().invoke(cli, ["train", "lenet5", "--dataset", str(data), "--epochs", "1", "--quiet",
                                      "--device", "cpu", "--out", str(tmp_path / "run")])
    _one_clean_line(result)
    assert "train-images-idx3-ubyte" in result.output and "truncated" in result.output


# ---------------------------------------------------------------------------- training

_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from clcnn.serialization import write_archive
    path, size = sys.argv[1], int(sys.argv[2])
    version = 0
    while True:
        # Every version is self-consistent: header, and arrays all equal to the version.
        write_archive(path, {"written": version}, {"a": np.full(size, version, np.float32),
                                                   "b": np.full(7, version, np.int64)})
        print(version, flush=True)
        version += 1
""")


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one_loadable(tmp_path):
    """A writer process rewrites one checkpoint in a loop and is killed with SIGKILL at random
    times (seeded): the file must always load and be exactly one of the versions written,
    never older than the last one the writer reported finished."""
    rng = np.random.default_rng(20240521)
    trials, torn = 24, 0
    for trial in range(trials):
        path = tmp_path / f"t{trial}" / "last.clcnn"
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(200_000)],
                                stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert proc.stdout.readline().strip() == "0"     # one complete version exists
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        finished = [0] + [int(line) for line in proc.stdout.read().split()]
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        header, arrays = serialization.read_archive(path)
        version = header["written"]
        assert version >= finished[-1], (version, finished[-1])
        assert np.all(arrays["a"] == version) and np.all(arrays["b"] == version)
        torn += any(name.startswith(".tmp-") for name in os.listdir(path.parent))
    # Most kills land inside a write (a temporary file is left beside the target): the test
    # exercised the case it is about, not only kills between writes.
    assert torn >= trials // 4, torn


def _train_cmd(out, *extra):
    # Six short epochs: after the first checkpoint appears, about two seconds of training remain for
    # the SIGINT to land in, however fast the device.
    return ["train", "lenet5", "--epochs", "6", "--limit", "1024", "--batch-size", "64", "--device", "cpu",
            "--seed", "3", "--quiet", "--out", str(out), *extra]


def test_ctrl_c_saves_exits_0_and_resume_equals_an_uninterrupted_run(tmp_path):
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "-m", "clcnn.cli.main", *_train_cmd(interrupted)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.time() + 120
    while not (interrupted / "last.clcnn").exists():       # epoch 1 done: now in epoch 2
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted: checkpoint saved" in out and "--resume" in out and "Traceback" not in err

    resumed = CliRunner().invoke(cli, _train_cmd(interrupted, "--resume", str(interrupted / "last.clcnn")))
    assert resumed.exit_code == 0, resumed.output
    straight = tmp_path / "straight"
    result = CliRunner().invoke(cli, _train_cmd(straight))
    assert result.exit_code == 0, result.output
    _, want = serialization.read_archive(straight / "last.clcnn")
    _, got = serialization.read_archive(interrupted / "last.clcnn")
    for name in want:
        if name.startswith("param/") or name.startswith("optim/"):
            assert np.array_equal(got[name], want[name]), name


# ---------------------------------------------------------------------------- command line

@pytest.mark.parametrize("args, fragment", [
    (["train", "lenet5", "--epochs", "0"], "--epochs"),
    (["train", "lenet5", "--epochs", "two"], "--epochs"),
    (["train", "lenet5", "--batch-size", "-8"], "--batch-size"),
    (["train", "lenet5", "--lr", "0"], "--lr"),
    (["train", "lenet5", "--lr", "-1e-3"], "--lr"),
    (["train", "lenet5", "--limit", "0"], "--limit"),
    (["train", "lenet5", "--momentum", "-0.5"], "--momentum"),
    (["train", "lenet5", "--optimizer", "rmsprop"], "--optimizer"),
    (["train", "lenet5", "--schedule", "linear"], "--schedule"),
    (["train", "lenet5", "--seed", "abc"], "--seed"),
    (["train", "lenet5", "--dataset", "imagenet"], "imagenet"),
    (["summary", "vgg16"], "vgg16"),
    (["predict", "/no/such.clcnn", "x.png"], "does not exist"),
    (["bench", "--batch-size", "0"], "--batch-size"),
    (["bench", "--repeat", "1"], "--repeat"),
    (["check", "--device", "no-such-device"], "no-such-device"),
])
def test_bad_option_values_are_one_line(args, fragment):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code != 0 and fragment in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_predict_missing_image_and_bad_top(tmp_path, device):
    ckpt = tmp_path / "m.clcnn"
    clcnn.models.lenet5(device=device).save(ckpt)
    result = CliRunner().invoke(cli, ["predict", str(ckpt), str(tmp_path / "nope.png")])
    assert result.exit_code == 2 and "nope.png" in result.output
    np.save(tmp_path / "d.npy", np.zeros((28, 28), np.uint8))
    result = CliRunner().invoke(cli, ["predict", str(ckpt), str(tmp_path / "d.npy"), "--top", "0"])
    assert result.exit_code == 2 and "--top" in result.output
