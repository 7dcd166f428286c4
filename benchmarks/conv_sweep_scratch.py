"""Scratch timing of the Conv2D kernels on the benchmark layers (not part of the test suite).

    python benchmarks/conv_sweep_scratch.py [--algorithm direct|tiled] [case ...]

Per kernel: the minimum over repeated runs of its OpenCL event time (the machine is shared, so
the minimum is the figure least disturbed by other work), GFLOP/s = 2*N*O*OH*OW*C*KH*KW / time
for the convolution kernels (the forward, input- and weight-gradient kernels all do that
many); then the whole forward and backward as wall time after
queue.finish(), host overhead included.
"""
import collections
import sys
import time

import numpy as np

import clcnn
from clcnn.ops import _common
from clcnn.ops import conv2d as K

CASES = {  # N, C, H, W, O, KH, KW, stride, pads
    "lenet1-64": (64, 1, 32, 32, 6, 5, 5, (1, 1), (0, 0, 0, 0)),
    "lenet2-64": (64, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0)),
    "lenet3-64": (64, 16, 5, 5, 120, 5, 5, (1, 1), (0, 0, 0, 0)),
    "lenet1-256": (256, 1, 32, 32, 6, 5, 5, (1, 1), (0, 0, 0, 0)),
    "lenet2-256": (256, 6, 14, 14, 16, 5, 5, (1, 1), (0, 0, 0, 0)),
    "lenet3-256": (256, 16, 5, 5, 120, 5, 5, (1, 1), (0, 0, 0, 0)),
    "3x3-same": (64, 16, 32, 32, 32, 3, 3, (1, 1), (1, 1, 1, 1)),
}
REPS = 10


def main(names, algorithm="direct"):
    dev = clcnn.get_device("cpu", profiling=True)
    events = []
    launch = _common.launch

    def recording_launch(device, kernel, gsize, lsize, *args):
        event = launch(device, kernel, gsize, lsize, *args)
        events.append((kernel.function_name, event))
        return event
    K.launch = recording_launch
    rng = np.random.default_rng(0)
    for name in names:
        n, c, h, w, o, kh, kw, stride, pads = CASES[name]
        x = dev.to_device(rng.standard_normal((n, c, h, w)).astype(np.float32))
        wt = dev.to_device((0.1 * rng.standard_normal((o, c, kh, kw))).astype(np.float32))
        b = dev.to_device(rng.standard_normal(o).astype(np.float32))
        kernel_times = collections.defaultdict(list)
        walls = collections.defaultdict(list)
        for _ in range(REPS):
            events.clear()
            t0 = time.perf_counter()
            y = K.conv2d_forward(dev, x, wt, b, stride, pads, "tanh", algorithm=algorithm)
            dev.queue.finish()
            t1 = time.perf_counter()
            K.conv2d_backward(dev, x, wt, y, stride, pads, algorithm=algorithm)
            dev.queue.finish()
            walls["forward"].append(t1 - t0)
            walls["backward"].append(time.perf_counter() - t1)
            for index, (fn, event) in enumerate(events):
                kernel_times[(index, fn)].append((event.profile.end - event.profile.start) * 1e-9)
        flop = 2.0 * n * o * y.shape[2] * y.shape[3] * c * kh * kw
        print(f"{name} [{algorithm}]: {flop / 1e6:.1f} MFLOP per pass; wall forward {min(walls['forward']) * 1e3:.2f} ms, "
              f"backward (gx, gw, gb) {min(walls['backward']) * 1e3:.2f} ms")
        for (_, fn), times in kernel_times.items():
            t = min(times)
            rate = f"{flop / t / 1e9:7.1f} GFLOP/s" if fn in ("conv2d_forward", "conv2d_backward_weight") or fn.endswith("_tiled") else ""
            print(f"    {fn:32s} {t * 1e3:8.3f} ms {rate}")


if __name__ == "__main__":
    args = sys.argv[1:]
    algo = "direct"
    if args[:1] == ["--algorithm"]:
        algo, args = args[1], args[2:]
    main(args or list(CASES), algo)
