"""Replayed training steps (clcnn.replay) against plain ones: the same launches on the same
data must give bit-identical weights and statistics, every change of signature must record
anew, and what a recording cannot reproduce must never be replayed."""
import numpy as np
import pyopencl as cl
import pytest

import clcnn
import clcnn.init
from clcnn import layers as L
from clcnn import losses, models, optim
from clcnn.train import Trainer


def _relu_net(device):
    """Max pooling, a strided and a padded convolution, ReLU: other kernels than LeNet-5's."""
    return clcnn.Sequential([
        L.Conv2D(1, 8, 3), L.ReLU(), L.MaxPool2D(2),
        L.Conv2D(8, 16, 3, padding=1), L.ReLU(), L.AvgPool2D(2),
        L.Flatten(), L.Dense(16 * 3 * 3, 32), L.ReLU(), L.Dense(32, 10)], device=device)


def _residual_net(device):
    """A graph: a residual Add (its gradient shared by two branches) and global pooling."""
    inp = L.Input((3, 8, 8), name="input")
    x = L.ReLU()(L.Conv2D(3, 8, 3, padding=1)(inp))
    y = L.Conv2D(8, 8, 3, padding=1)(L.ReLU()(L.Conv2D(8, 8, 3, padding=1)(x)))
    x = L.ReLU()(L.Add()([x, y]))
    out = L.Dense(8, 10)(L.Flatten()(L.GlobalAvgPool2D()(x)))
    return clcnn.Model(inp, out, device=device)


def _batchnorm_net(device):
    """BatchNorm in training mode: running statistics on the device, a batch count on the host
    (a replayed step must count too), a BatchNorm fused with an Add."""
    inp = L.Input((3, 8, 8), name="input")
    x = L.ReLU()(L.BatchNorm2D(8)(L.Conv2D(3, 8, 3, padding=1, bias=False)(inp)))
    y = L.BatchNorm2D(8)(L.Conv2D(8, 8, 3, padding=1, bias=False)(x))
    x = L.ReLU()(L.Add()([x, y]))
    x = L.ReLU()(L.Conv2D(8, 8, 1, stride=2)(x))   # a 1x1 stride-2 shortcut: its input gradient fills zeros
    out = L.Dense(8, 10)(L.Flatten()(L.GlobalAvgPool2D()(x)))
    return clcnn.Model(inp, out, device=device)


def _dropout_net(device):
    """Dropout draws a new mask every step (a varying argument of the recording); one layer
    called twice draws two."""
    inp = L.Input((1, 12, 12), name="input")
    drop = L.Dropout(0.3)
    x = drop(L.ReLU()(L.Conv2D(1, 4, 3)(inp)))
    x = drop(L.ReLU()(L.Conv2D(4, 4, 3)(x)))
    out = L.Dense(4 * 8 * 8, 10)(L.Flatten()(x))
    return clcnn.Model(inp, out, device=device)


BUILDERS = {"lenet5": (lambda d: models.lenet5(device=d), (1, 32, 32)),
            "dropout": (_dropout_net, (1, 12, 12)),
            "relu": (_relu_net, (1, 14, 14)),
            "residual": (_residual_net, (3, 8, 8)),
            "batchnorm": (_batchnorm_net, (3, 8, 8))}


def _train(device, build, shape, replay, batches, lr_at=None, optimizer=None, reuse_buffer=True):
    """Weights and per-step statistics after train_step over `batches` (sizes), replay on or
    off; lr_at: {step: new lr}. The host batch buffer is refilled right after each call, as a
    data loader reusing its buffer would."""
    clcnn.init.seed(0)
    net = build(device)
    opt = optimizer(net) if optimizer else optim.SGD(net, lr=0.05, momentum=0.9, weight_decay=1e-4)
    trainer = Trainer(net, losses.SoftmaxCrossEntropy(), opt, progress=False)
    trainer.replay = replay
    rng = np.random.default_rng(1)
    buffer = None
    for step, size in enumerate(batches):
        if lr_at and step in lr_at:
            opt.lr = lr_at[step]
        x = rng.standard_normal((size, *shape)).astype(np.float32)
        y = rng.integers(0, 10, size)
        if reuse_buffer and buffer is not None and buffer.shape == x.shape:
            buffer[...] = x
            x = buffer
        trainer.batch = step
        trainer.train_step(x, y)
        if reuse_buffer:
            buffer = x
            buffer[...] = np.nan       # the step must have taken its copy already
    device.synchronize()
    weights = [p.value() for layer in net.layers            # in order: auto names differ between builds
               for p in list(layer.params.values()) + list(layer.buffers.values())]
    grads = [p.grad.get() for p in net.parameters()]
    return weights, grads, trainer.step_stats(0, len(batches)), trainer


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_replayed_steps_equal_plain_steps_bit_for_bit(device, name):
    build, shape = BUILDERS[name]
    batches = [16] * 6 + [9] + [16] * 4 + [12] * 4      # a short batch, then a new batch size
    lr_at = {8: 0.02}                                  # a schedule's change records anew
    plain_w, plain_g, plain_stats, plain = _train(device, build, shape, False, batches, lr_at)
    replay_w, replay_g, replay_stats, replayed = _train(device, build, shape, True, batches, lr_at)
    assert plain._replay.replays == 0
    # A run of one signature: a plain step, a recorded one, then replays. Step 0 is alone (the
    # optimizer's first step fills its momentum buffers), 1-5 replay 3-5; 6 (9 images) is
    # alone; 7 differs from 8-10 in lr, which replay 10; 11-14 replay 13-14.
    assert replayed._replay.replays == 6, replayed._replay.refused
    assert plain_stats == replay_stats
    assert len(plain_w) == len(replay_w) and len(plain_g) == len(replay_g)
    for k in range(len(plain_w)):     # weights and buffers (BatchNorm's running values, count)
        np.testing.assert_array_equal(replay_w[k], plain_w[k], err_msg=f"weight or buffer {k}")
    for k in range(len(plain_g)):
        np.testing.assert_array_equal(replay_g[k], plain_g[k], err_msg=f"gradient {k}")
    assert all(np.isfinite(loss) for loss, _ in replay_stats)
    assert [getattr(layer, "step", None) for layer in replayed.model.layers] == \
        [getattr(layer, "step", None) for layer in plain.model.layers]      # Dropout's steps


@pytest.mark.parametrize("name", ["lenet5", "batchnorm"])
def test_adam_steps_replay_bit_for_bit(device, name):
    """Adam's bias corrections change every step: a replay sets them as arguments that vary
    (Recorder.vary), from the step it is, as a plain step computes them."""
    build, shape = BUILDERS[name]
    batches = [12] * 7
    make = lambda net: optim.Adam(net, lr=1e-3, weight_decay=1e-4)    # noqa: E731
    plain_w, _, plain_stats, _ = _train(device, build, shape, False, batches, optimizer=make)
    replay_w, _, replay_stats, replayed = _train(device, build, shape, True, batches, optimizer=make)
    assert replayed._replay.replays == 5, replayed._replay.refused     # steps 2-6
    assert replayed.optimizer.step_count == len(batches)
    assert plain_stats == replay_stats
    for k in range(len(plain_w)):
        np.testing.assert_array_equal(replay_w[k], plain_w[k], err_msg=f"weight or buffer {k}")


def _plain_and_replayed(device, run_steps, count):
    """LeNet-5 trained by run_steps(trainer, replay) with replay off, then on (the same seed):
    the replayed run made `count` replays and gives the same weights and statistics."""
    build, _ = BUILDERS["lenet5"]
    results = []
    for replay in (False, True):
        clcnn.init.seed(0)
        net = build(device)
        trainer = Trainer(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, lr=0.1), progress=False)
        trainer.replay = replay
        steps = run_steps(trainer, replay)
        results.append(([p.value() for p in net.parameters()], trainer.step_stats(0, steps), trainer._replay.replays))
    assert results[1][2] == count and results[0][2] == 0
    assert results[0][1] == results[1][1]
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_array_equal(a, b)


def test_replay_takes_device_batches(device):
    """fit's own batches live on the device: a replay copies them into its input buffers."""
    _, shape = BUILDERS["lenet5"]
    rng = np.random.default_rng(2)
    data = [(rng.standard_normal((8, *shape)).astype(np.float32), rng.integers(0, 10, 8)) for _ in range(5)]

    def run_steps(trainer, replay):
        for step, (x, y) in enumerate(data):
            trainer.batch = step
            trainer.train_step(device.to_device(x), device.to_device(y, np.int32))
        return len(data)
    _plain_and_replayed(device, run_steps, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_replay_copies_host_batches_as_a_plain_step(device, dtype):
    """A replay copies a NumPy batch into a staging array of its own (clcnn.replay._Staging,
    used in turn), so the caller may refill its batch as soon as train_step returns, even
    while the upload still waits in the queue (held here behind a barrier on a user event at
    one replay). float64 and non-contiguous batches arrive as a plain step converts them."""
    _, shape = BUILDERS["lenet5"]
    rng = np.random.default_rng(5)
    wide = rng.standard_normal((7, 8, *shape)).astype(dtype)     # [:, k] is not contiguous
    labels = [rng.integers(0, 10, 7) for _ in range(8)]

    def run_steps(trainer, replay):
        batches = wide.copy()       # each step overwrites its batch with NaN
        for step in range(8):
            trainer.batch = step
            x = batches[:, step] if step % 2 else np.ascontiguousarray(batches[:, step])
            gate = cl.UserEvent(device.context)
            if replay and step == 6:     # (a plain step uploads with a wait)
                cl.enqueue_barrier(device.queue, wait_for=[gate])
            trainer.train_step(x, labels[step])
            x[...] = np.nan
            gate.set_status(cl.command_execution_status.COMPLETE)
        return 8
    _plain_and_replayed(device, run_steps, 5)       # steps 3-7 (as in the tests above)


def test_fit_with_replay_matches_fit_without(device):
    rng = np.random.default_rng(3)
    images = rng.random((160, 1, 14, 14)).astype(np.float32)
    labels = (images.reshape(160, -1).mean(1) > 0.5).astype(np.int64) + 2 * (images[:, 0, 0, 0] > 0.5)
    runs = []
    for replay in (False, True):
        clcnn.init.seed(0)
        net = _relu_net(device)
        trainer = Trainer(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, lr=0.05, momentum=0.9), progress=False)
        trainer.replay = replay
        history = trainer.fit((images, labels), epochs=2, batch_size=16)
        runs.append((history, [p.value() for p in net.parameters()], trainer._replay.replays))
    assert runs[1][2] > 0 and runs[0][2] == 0
    for h0, h1 in zip(runs[0][0], runs[1][0]):
        assert (h0["loss"], h0["accuracy"]) == (h1["loss"], h1["accuracy"])
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)


class _ZeroingIdentity(L.Identity):
    """Says it is replayable but makes a device command around launch(): the recorder must
    catch it."""

    def forward(self, ctx, x):
        self.device.zeros((4,))
        return super().forward(ctx, x)


@pytest.mark.parametrize("case", ["cumulative batchnorm", "untracked command"])
def test_what_a_recording_cannot_reproduce_is_not_replayed(device, case):
    shape = (1, 14, 14)
    layers = [L.Conv2D(1, 4, 3), L.ReLU(), L.Flatten(), L.Dense(4 * 12 * 12, 10)]
    if case == "cumulative batchnorm":
        layers.insert(1, L.BatchNorm2D(4, momentum=None))    # its factor is 1 / the batch count
    elif case == "untracked command":
        layers.insert(2, _ZeroingIdentity())

    def build(dev):
        return clcnn.Sequential([layer for layer in layers], device=dev)

    _, _, _, trainer = _train(device, build, shape, True, [8] * 6)
    assert trainer._replay.replays == 0 and trainer._replay.recording is None
    assert len(trainer._replay.refused) == 1
    reason = next(iter(trainer._replay.refused.values()))
    assert {"cumulative batchnorm": "BatchNorm2D", "untracked command": "Device.zeros"}[case] in reason


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_replayed_eval_forward_equals_plain_forward(device, name):
    """Inference replays from the third call of a signature: each output equals a plain
    pass, earlier outputs and the caller's device inputs stay as they were, and weights
    changed in place between calls (training steps, set_value; BatchNorm's statistics, folded
    into the convolution on the device at each pass) are read anew."""
    build, shape = BUILDERS[name]
    clcnn.init.seed(0)
    net = build(device)
    trainer = Trainer(net, losses.SoftmaxCrossEntropy(), optim.SGD(net, lr=0.1), progress=False)
    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((6, *shape)).astype(np.float32) for _ in range(5)]

    def plain(x):
        net.replay = False
        try:
            return net.forward(x).get()
        finally:
            net.replay = True

    net.eval()
    outputs = [net.forward(x) for x in batches]                  # plain, recorded, 3 replays
    assert net._forward_replay.replays == 3
    for x, y in zip(batches, outputs):
        np.testing.assert_array_equal(y.get(), plain(x))
    net.train()
    for x in batches[:3]:
        trainer.train_step(x, rng.integers(0, 10, 6))
    net.eval()
    after_training = net.forward(batches[2])                     # replayed on the new weights
    np.testing.assert_array_equal(after_training.get(), plain(batches[2]))
    assert not np.array_equal(after_training.get(), outputs[2].get())   # the weights did change
    first = net.parameters()[0]
    first.set_value(first.value() * 0.5)
    np.testing.assert_array_equal(net.forward(batches[3]).get(), plain(batches[3]))
    assert net._forward_replay.replays == 5
    device_inputs = [device.to_device(x) for x in batches[:3]]   # plain, recorded, replayed
    for x, array in zip(batches, device_inputs):
        np.testing.assert_array_equal(net.forward(array).get(), plain(x))
    for x, array in zip(batches, device_inputs):
        np.testing.assert_array_equal(array.get(), x)            # the caller's arrays are untouched
    assert net._forward_replay.replays == 6


def test_staging_reuses_an_array_once_its_upload_ran(device):
    """replay._Staging: one host array while each upload runs before the next (inference that
    reads its output), a second only while the first's upload is still queued; the target
    ends with the last source, converted."""
    from clcnn.replay import _Staging
    target = device.empty((3, 5))
    staging = _Staging(target)
    rng = np.random.default_rng(6)
    for _ in range(3):
        source = rng.standard_normal((3, 5))          # float64: converted as np.array(..., float32)
        staging.upload(device.queue, target, source)
        device.synchronize()
        np.testing.assert_array_equal(target.get(), source.astype(np.float32))
    assert len(staging.arrays) == 1
    gate = cl.UserEvent(device.context)
    cl.enqueue_barrier(device.queue, wait_for=[gate])
    held = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(2)]
    second = held[1].copy()
    for source in held:
        staging.upload(device.queue, target, source)
        source[...] = np.nan                           # the caller's arrays are free at once
    assert len(staging.arrays) == 2
    gate.set_status(cl.command_execution_status.COMPLETE)
    device.synchronize()
    np.testing.assert_array_equal(target.get(), second)
    last = rng.standard_normal((3, 5)).astype(np.float32)
    staging.upload(device.queue, target, last)
    device.synchronize()
    assert len(staging.arrays) == 2
    np.testing.assert_array_equal(target.get(), last)


def _count_copies(monkeypatch):
    """A list that grows by one at each cl.enqueue_copy (uploads and device copies)."""
    copies, enqueue_copy = [], cl.enqueue_copy

    def counted(*args, **kwargs):
        copies.append(args[1:3])
        return enqueue_copy(*args, **kwargs)
    monkeypatch.setattr(cl, "enqueue_copy", counted)
    return copies


def test_replay_reads_host_batches_in_place_on_cpus(device, monkeypatch):
    """On a PoCL CPU device a replayed step reads a NumPy batch where it was copied to on the host
    (replay._InPlace): no upload command, and every step equals a plain step bit for bit
    (the tests above); device batches are still copied into the recorded inputs."""
    from clcnn.replay import reads_host_arrays
    if not reads_host_arrays(device):
        pytest.skip("host batches are read in place only on PoCL's CPU devices")
    _, shape = BUILDERS["lenet5"]
    rng = np.random.default_rng(7)
    data = [(rng.standard_normal((8, *shape)).astype(np.float32), rng.integers(0, 10, 8)) for _ in range(6)]
    copies = _count_copies(monkeypatch)

    def run_steps(trainer, replay):
        for on_device in (False, True):
            for step, (x, y) in enumerate(data):
                trainer.batch = step
                if on_device:
                    x, y = device.to_device(x), device.to_device(y, np.int32)
                before, replays = len(copies), trainer._replay.replays
                trainer.train_step(x, y)
                if trainer._replay.replays > replays:   # host batches: no copy; device ones: two
                    assert len(copies) - before == (2 if on_device else 0), (on_device, step)
        return 2 * len(data)
    _plain_and_replayed(device, run_steps, 7)    # host: steps 3-5; device: 2-5 (labels known)


def test_backward_after_a_replayed_eval_forward_reads_its_input(device):
    """A replayed eval forward reads a NumPy input in place, not from the recorded input
    array: a backward pass after it (gradients in eval mode) must still see that input, in
    the weight gradients of the first layer and the input gradient."""
    build, shape = BUILDERS["relu"]
    rng = np.random.default_rng(8)
    batches = [rng.standard_normal((5, *shape)).astype(np.float32) for _ in range(5)]
    gys = [rng.standard_normal((5, 10)).astype(np.float32) for _ in range(5)]
    results = []
    for replay in (False, True):
        clcnn.init.seed(0)
        net = build(device)
        net.replay = replay
        net.eval()
        run = []
        for x, gy in zip(batches, gys):
            y = net.forward(x).get()
            gx = net.backward(gy).get()
            run.append((y, gx, [p.grad.get() for p in net.parameters()]))
        results.append(run)
        assert net._forward_replay.replays == (3 if replay else 0)
    for step, (plain, replayed) in enumerate(zip(*results)):
        np.testing.assert_array_equal(replayed[0], plain[0], err_msg=f"output {step}")
        np.testing.assert_array_equal(replayed[1], plain[1], err_msg=f"input gradient {step}")
        for k, (a, b) in enumerate(zip(replayed[2], plain[2])):
            np.testing.assert_array_equal(a, b, err_msg=f"gradient {k} at call {step}")


def test_in_place_input_reuses_an_array_once_its_step_ran(device):
    """replay._InPlace: the launches that read the input take the buffer of the array the
    source was copied into; one array while each step runs before the next, a second while
    the first's step is still queued, and at `most` the oldest step is waited for."""
    from clcnn.replay import _InPlace
    program = cl.Program(device.context, "__kernel void twice(__global const float* x, __global float* y)"
                                         "{ y[get_global_id(0)] = 2.0f * x[get_global_id(0)]; }").build()
    target, out = device.empty((3, 5)), device.empty((3, 5))
    kernel = program.twice
    kernel.set_args(target.base_data, out.base_data)
    in_place = _InPlace(device.context, target, [(kernel, 0)], most=2)
    rng = np.random.default_rng(9)

    def step(source):
        slot = in_place.place(source)
        slot[2] = cl.enqueue_nd_range_kernel(device.queue, kernel, (15,), None)

    for _ in range(3):
        source = rng.standard_normal((3, 5))          # float64: converted as np.array(..., float32)
        expected = 2 * source.astype(np.float32)
        step(source)
        source[...] = np.nan                           # the caller's array is free at once
        device.synchronize()
        np.testing.assert_array_equal(out.get(), expected)
    assert len(in_place.slots) == 1
    gate = cl.UserEvent(device.context)
    cl.enqueue_barrier(device.queue, wait_for=[gate])
    held = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(2)]
    for source in held:
        step(source)
    assert len(in_place.slots) == 2 and in_place.slots[0][0].ctypes.data != in_place.slots[1][0].ctypes.data
    gate.set_status(cl.command_execution_status.COMPLETE)
    device.synchronize()
    np.testing.assert_array_equal(out.get(), 2 * held[1])
    last = rng.standard_normal((3, 5)).astype(np.float32)
    step(last)          # two arrays in use: the oldest one's step has run, so it is reused
    device.synchronize()
    assert len(in_place.slots) == 2
    np.testing.assert_array_equal(out.get(), 2 * last)
    assert all(slot[0].ctypes.data % 128 == 0 for slot in in_place.slots)   # PoCL's alignment
    in_place.restore()      # a device source: the launches read the input array again
    source = rng.standard_normal((3, 5)).astype(np.float32)
    target.set(source)
    cl.enqueue_nd_range_kernel(device.queue, kernel, (15,), None)
    np.testing.assert_array_equal(out.get(), 2 * source)
