"""ops._common.launch: launches through kernel copies with preset scalars give what pyopencl's
own call gives, whatever the order of scalar sets and buffers, queued or not."""
import numpy as np
import pyopencl as cl

from clcnn.ops import _common
from clcnn.ops._common import buf, f32, i32, launch

SOURCE = """
__kernel void axpb(__global const float* x, __global float* y, const float a, const int b, const int n)
{
    const int i = get_global_id(0);
    if (i < n)
        y[i] = a * x[i] + (float)b;
}
"""


def _kernel(device):
    return cl.Kernel(cl.Program(device.context, SOURCE).build(), "axpb")


def test_interleaved_scalar_sets_and_buffers_each_get_their_own(device):
    """Twelve launches queued without a wait, three scalar sets in turn over four inputs: each
    output is a * x + b of its own launch (a launch keeps the arguments it was enqueued with,
    and a preset kernel serves every later launch of its scalars)."""
    kernel = _kernel(device)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(37).astype(np.float32) for _ in range(4)]
    inputs = [device.to_device(x) for x in xs]
    sets = [(2.0, 1), (-0.5, 3), (2.0, 1)]
    expected, outputs = [], []
    for k in range(12):
        a, b = sets[k % 3]
        x = inputs[k % 4]
        y = device.empty((37,))
        launch(device, kernel, (40,), None, buf(x), buf(y), f32(a), i32(b), i32(37))
        outputs.append(y)
        expected.append(np.float32(a) * xs[k % 4] + np.float32(b))
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got.get(), want)
    assert len(kernel._clcnn_args[-1]) == 2      # (2.0, 1) and (-0.5, 3): one preset each


def test_scalars_that_keep_changing_fall_back_to_plain_calls(device):
    """More scalar sets than _PRESETS_PER_KERNEL: no more presets are made, every launch right."""
    kernel = _kernel(device)
    x_host = np.arange(16, dtype=np.float32)
    x = device.to_device(x_host)
    outputs = []
    count = _common._PRESETS_PER_KERNEL + 5
    for k in range(count):
        y = device.empty((16,))
        launch(device, kernel, (16,), (1,), buf(x), buf(y), f32(k * 0.25), i32(-k), i32(16))
        outputs.append(y)
    for k, y in enumerate(outputs):
        np.testing.assert_array_equal(y.get(), np.float32(k * 0.25) * x_host - k)
    assert len(kernel._clcnn_args[-1]) == _common._PRESETS_PER_KERNEL


def test_a_python_number_at_a_scalar_position_takes_the_declared_type(device):
    """The first launch declares the scalars' types (float, int); a later one passing Python
    numbers gets them converted, as pyopencl's typed call would."""
    kernel = _kernel(device)
    x_host = np.arange(-4, 4, dtype=np.float32) * 0.5     # exact products: FMA or not, one result
    x = device.to_device(x_host)
    y = device.empty((8,))
    launch(device, kernel, (8,), None, buf(x), buf(y), f32(1.0), i32(0), i32(8))
    launch(device, kernel, (8,), None, buf(x), buf(y), 3.0, 2, 8)
    np.testing.assert_array_equal(y.get(), np.float32(3.0) * x_host + 2)
