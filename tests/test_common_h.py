"""kernels/common.h helpers that index arithmetic relies on, checked on the device against
exact integer arithmetic."""
import numpy as np
import pyopencl as cl

from clcnn.device import _read_kernel_source

_SOURCE = _read_kernel_source("common.h") + """
__kernel void quotients(__global const int* a, __global const int* d, __global int* q)
{
    const int i = get_global_id(0);
    q[i] = quotient(a[i], d[i]);
}
"""


def test_quotient_is_exact_over_its_range(device):
    """quotient(a, d) == a // d for 0 <= a < 2**31 and quotients below 2**20: random pairs,
    plus the edges where a float estimate rounds across a multiple of d (a = k*d - 1, k*d,
    k*d + 1 near the largest quotients and dividends)."""
    rng = np.random.default_rng(0)
    d = rng.integers(1, 5000, 20000)
    q = rng.integers(0, 2**20, 20000)
    a = np.minimum(q * d + rng.integers(0, d), 2**31 - 1)
    edges_d = np.array([1, 2, 3, 7, 16, 36, 100, 2047, 2048, 2049, 4095])
    edges_q = np.minimum(2**20 - 1, (2**31 - 2) // edges_d)
    edge_a = np.concatenate([edges_q * edges_d + k for k in (-1, 0, 1)])
    a = np.concatenate([a, edge_a, [0, 1, 2**31 - 1]]).astype(np.int32)
    d = np.concatenate([d, np.tile(edges_d, 3), [1, 2**11, 2**12]]).astype(np.int32)
    keep = a // d < 2**20
    a, d = a[keep], d[keep]
    program = cl.Program(device.context, _SOURCE).build()
    mf = cl.mem_flags
    a_buf = cl.Buffer(device.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=a)
    d_buf = cl.Buffer(device.context, mf.READ_ONLY | mf.COPY_HOST_PTR, hostbuf=d)
    q_buf = cl.Buffer(device.context, mf.WRITE_ONLY, a.nbytes)
    program.quotients(device.queue, (a.size,), None, a_buf, d_buf, q_buf)
    got = np.empty_like(a)
    cl.enqueue_copy(device.queue, got, q_buf)
    wrong = np.flatnonzero(got != a // d)
    assert wrong.size == 0, f"{wrong.size} wrong, e.g. {a[wrong[0]]} / {d[wrong[0]]} gave {got[wrong[0]]}"
