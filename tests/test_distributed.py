"""Data-parallel training over MPI: real `mpiexec -n 2` runs on PoCL, each rank on one core.

The run file doubles as the ranks' program: `python tests/test_distributed.py worker ...`
trains one epoch with Trainer(distributed=True) and rank 0 saves the weights. The references
train in this process: LeNet-5 with a plain single-process Trainer (same global batch and
seed), the BatchNorm graph with two model copies that each normalise their half of every
batch, gradients combined by share, running statistics averaged at the end (the documented
behaviour of distributed BatchNorm)."""
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

import clcnn
from clcnn import layers as L
from clcnn import recipes

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
N, BATCH = 2000, 63        # an odd global batch: ranks take 32 and 31 images (last batch: 24 and 23)
# Float rounding differs only in summation order; max |a - b| / max |b| per tensor after an epoch.
# BatchNorm divides by batch statistics of 32 images, which magnifies rounding a few times.
RTOL, RTOL_BN = 2e-5, 1e-4

try:
    import mpi4py  # noqa: F401
    HAVE_MPI = shutil.which("mpiexec") is not None
except ImportError:
    HAVE_MPI = False
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason='needs pip install "clcnn[mpi]" (mpi4py and mpiexec)')


def _data(n=N):
    images, labels = recipes.load_split("mnist", "train")
    prep = recipes.preprocess_for("lenet5", "mnist", images)
    return recipes.prepare(images[:n], prep), labels[:n].astype(np.int64)


def _bn_graph(device):
    inp = L.Input((1, 32, 32))
    x = L.Conv2D(1, 6, 5, stride=2, bias=False, name="conv1")(inp)
    x = L.ReLU()(L.BatchNorm2D(6, name="bn1")(x))
    y = L.Conv2D(6, 6, 3, padding=1, bias=False, name="conv2")(x)
    y = L.BatchNorm2D(6, name="bn2")(y)
    z = L.ReLU()(L.Add()([x, y]))
    out = L.Dense(6, 10, name="fc")(L.Flatten()(L.GlobalAvgPool2D()(z)))
    return clcnn.Model(inp, out, device=device)


def _build(kind, device):
    clcnn.seed(0)
    model = recipes.build_model("lenet5", 1, 10, 32, device=device) if kind == "lenet5" else _bn_graph(device)
    return model, clcnn.optim.SGD(model, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _worker(kind, out):
    x, y = _data()
    model, opt = _build(kind, clcnn.get_device("cpu"))
    trainer = clcnn.Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), opt, progress=False, distributed=True)
    history = trainer.fit((x, y), epochs=1, batch_size=BATCH)
    if trainer.comm.rank == 0:
        np.savez(out, loss=history[0]["loss"], accuracy=history[0]["accuracy"], **model.state_dict())


def _mpiexec(args, ranks=2, timeout=120, **kwargs):
    env = dict(os.environ, POCL_MAX_PTHREAD_COUNT="1", PYTHONPATH=ROOT)   # one core per rank
    return subprocess.run(["mpiexec", "-n", str(ranks), *args], env=env, cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True, **kwargs)


def _run_ranks(kind, tmp_path):
    out = str(tmp_path / f"{kind}.npz")
    done = _mpiexec([sys.executable, os.path.join(HERE, "test_distributed.py"), "worker", kind, out])
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(np.load(out))


def _assert_same(got, expected, what, rtol=RTOL):
    for key, value in expected.items():
        value = np.asarray(value, np.float64)
        diff = np.abs(np.asarray(got[key], np.float64) - value).max() / max(np.abs(value).max(), 1e-12)
        assert diff <= rtol, f"{what}: {key} differs by {diff:.3g} (relative to its largest entry)"


@needs_mpi
def test_two_ranks_train_lenet5_as_one_process(tmp_path, device):
    got = _run_ranks("lenet5", tmp_path)
    model, opt = _build("lenet5", device)
    history = clcnn.Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), opt, progress=False).fit(
        _data(), epochs=1, batch_size=BATCH)
    _assert_same(got, model.state_dict(), "LeNet-5 after one epoch, 2 ranks vs 1 process")
    assert abs(float(got["loss"]) - history[0]["loss"]) <= 1e-5 * history[0]["loss"]
    assert abs(float(got["accuracy"]) - history[0]["accuracy"]) <= 2 / N   # an argmax tie may flip


def _half_batch_reference(device):
    """Two copies of the graph, each normalising its half of every global batch (as the two
    ranks do), the gradients summed with weights half size / batch size, the running
    statistics averaged at the end."""
    x, y = _data()
    copies = [_build("bn", device) for _ in range(2)]
    loss = clcnn.losses.SoftmaxCrossEntropy()
    order = np.random.default_rng([0, 0]).permutation(N)   # the Trainer's epoch order for seed 0
    for start in range(0, N, BATCH):
        index = order[start:start + BATCH]
        halves = np.array_split(index, 2)   # sizes differ by one, the first takes the larger
        total = None
        for (model, _), half in zip(copies, halves):
            model.train()
            loss(model(x[half]), y[half])
            model.backward(loss.backward())
            grads = [p.grad.get() * (len(half) / len(index)) for p in model.parameters()]
            total = grads if total is None else [a + b for a, b in zip(total, grads)]
        for model, opt in copies:
            for p, g in zip(model.parameters(), total):
                p.grad.set(g.astype(np.float32))
            opt.step()
    states = [model.state_dict() for model, _ in copies]
    return {key: (value + states[1][key]) / 2 if "running" in key else value for key, value in states[0].items()}


@needs_mpi
def test_two_ranks_batchnorm_graph_normalises_per_rank(tmp_path, device):
    got = _run_ranks("bn", tmp_path)
    expected = _half_batch_reference(device)
    _assert_same(got, expected, "BatchNorm graph after one epoch, 2 ranks vs two half-batch copies", RTOL_BN)
    # The documented difference is real: full-batch statistics give other weights.
    model, opt = _build("bn", device)
    clcnn.Trainer(model, loss=clcnn.losses.SoftmaxCrossEntropy(), optimizer=opt, progress=False).fit(
        _data(), epochs=1, batch_size=BATCH)
    full = model.state_dict()["conv1.weight"]
    assert np.abs(full - got["conv1.weight"]).max() > 100 * RTOL_BN * np.abs(full).max()


def _rank_pid(tag, rank):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if f"CLCNN_TEST_TAG={tag}".encode() in env and f"PMI_RANK={rank}".encode() in env and b"cli.main" in cmd:
            return int(pid)
    return None


@needs_mpi
@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_failed_rank_ends_the_job_and_the_checkpoint_loads(tmp_path, fault):
    """Rank 1 in the middle of epoch 2 is killed (SIGKILL: mpiexec ends the job and says so)
    or hangs (SIGSTOP: rank 0's collective deadline ends the job with clcnn's message)."""
    out, tag = tmp_path / "run", uuid.uuid4().hex
    launcher = ["mpiexec", "-n", "2"]
    env = dict(os.environ, POCL_MAX_PTHREAD_COUNT="1", PYTHONPATH=ROOT, CLCNN_TEST_TAG=tag,
               CLCNN_MPI_TIMEOUT="20")   # long enough for ranks that build kernels at different speeds
    job = subprocess.Popen(launcher + [sys.executable, "-m", "cli.main", "train", "lenet5", "--distributed",
                                       "--limit", "2000", "--epochs", "50", "--batch-size", "16", "--quiet",
                                       "--validation-split", "0", "--out", str(out)],
                           env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "last.clcnn").exists() and job.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if not (out / "last.clcnn").exists():
            job.kill()
            raise AssertionError(f"no checkpoint after the first epoch; the job said:\n{job.communicate()[0]}")
        time.sleep(0.3)   # into epoch 2
        pid = _rank_pid(tag, 1)
        assert pid is not None and job.poll() is None
        os.kill(pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        killed = time.time()
        output, _ = job.communicate(timeout=90)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode != 0
    assert time.time() - killed < 60, "the surviving rank took too long to end"
    if fault == "hung":
        assert "clcnn: rank 0/2:" in output and "ending the job" in output, output   # deadline or lost peer
    else:
        assert "BAD TERMINATION" in output or "clcnn: rank 0/2:" in output, output
    model = clcnn.load(str(out / "last.clcnn"), device="cpu")
    assert model.state_dict()["0.weight"].shape == (6, 1, 5, 5)


def test_distributed_without_mpi4py_is_one_clear_error(tmp_path, monkeypatch):
    hide = "import sys; sys.modules['mpi4py'] = None; from cli.main import main; sys.argv[0] = 'clcnn'; main()"
    done = subprocess.run([sys.executable, "-c", hide, "train", "lenet5", "--distributed", "--limit", "64",
                           "--epochs", "1", "--out", str(tmp_path / "run")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 1
    assert 'pip install "clcnn[mpi]"' in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    model, opt = _build("lenet5", clcnn.get_device("cpu"))
    with pytest.raises(clcnn.distributed.DistributedError, match=r'pip install "clcnn\[mpi\]"'):
        clcnn.Trainer(model, clcnn.losses.SoftmaxCrossEntropy(), opt, distributed=True)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _worker(*sys.argv[2:])
