/* merge.cl: the merge ops of the layer graph: elementwise Add of several tensors (with an
 * optional fused activation, ReLU for residual blocks), in-place gradient accumulation at
 * fan-out, and Concat with its backward (split).
 *
 * Add sees every tensor as flat: element i of an NCHW array is x[i] = x[((n*C + c)*H + h)*W + w].
 * add_forward takes INPUTS (1..8, a define) inputs and sums them left to right in float32:
 * y = act(((x0 + x1) + x2) + ...). With ACCUMULATE=1 the sum starts from y's own contents,
 * y = act(((y + x0) + x1) + ...), which is both the gradient accumulation (total += g) and the
 * continuation of a sum over more than 8 inputs, so chunked sums keep the left-to-right order.
 * ACT_RELU here is "x < 0 ? 0 : x" rather than fmax(x, 0): fmax returns 0 for a NaN, while
 * PyTorch's relu (and NumPy's maximum) pass the NaN on, and a NaN must not vanish in a sum.
 * No pointer is restrict: y may be one of the inputs (accumulating in place, out = a + b into
 * a), which is safe because every element is read before it is written by the same item.
 * Work items: item q owns the run of elements [q * R, q * R + R) (R from clcnn/ops/merge.py,
 * ~1024), streamed in float8 steps through LOAD8 / STORE8 with a scalar tail (n need not be a
 * multiple of 8). LOAD8 / STORE8 are scalar accesses PoCL's compiler merges into vector ones:
 * on PoCL vload8 / vstore8 are out-of-line calls, and one float8 per item added an item's
 * start-up per 8 elements. 1-D global size ceil(n / R), any local size, no barriers, no
 * local memory.
 *
 * Concat along axis a of a C-contiguous tensor is a copy of row runs: with rows = the product
 * of the axes before a and inner = the product of the axes after it, input i (size s_i on a)
 * is `rows` runs of s_i * inner contiguous floats, and its run r lands in the output at
 * r * S * inner + o_i * inner (S = sum of s_i, o_i = s_0 + ... + s_{i-1}). For NCHW and axis 1
 * a run is one image's C_i*H*W block. concat_copy copies runs between any two such layouts
 * (src run r at src_off + r * src_stride, dst run r at dst_off + r * dst_stride), so the
 * forward (into the wide tensor) and the backward (out of it) are the same kernel.
 * Work items: a 2-D range (ceil(run / 8), rows); item (q, r) copies floats [8q, 8q + 8) of
 * run r as one float8, scalars for the ragged end. Dimension 0 runs along the contiguous run
 * so PoCL's work-group loop streams memory; any local size, no barriers.
 */
#ifndef INPUTS
#define INPUTS 2
#endif
#ifndef ACCUMULATE
#define ACCUMULATE 0
#endif


inline float8 merge_act8(float8 v)
{
#if ACTIVATION == ACT_RELU
    return v < 0.0f ? (float8)(0.0f) : v;
#else
    return v;
#endif
}

inline float merge_act(float v)
{
#if ACTIVATION == ACT_RELU
    return v < 0.0f ? 0.0f : v;
#else
    return v;
#endif
}

/* START8(i) / START1(i): the start of the left-to-right sum at elements [i, i + 8) / i. */
#if ACCUMULATE
#define START8(i) LOAD8(y + (i)) + LOAD8(x0 + (i))
#define START1(i) y[i] + x0[i]
#else
#define START8(i) LOAD8(x0 + (i))
#define START1(i) x0[i]
#endif

__kernel void add_forward(__global float* y, const int n, const int R, __global const float* x0
#if INPUTS > 1
                          , __global const float* x1
#endif
#if INPUTS > 2
                          , __global const float* x2
#endif
#if INPUTS > 3
                          , __global const float* x3
#endif
#if INPUTS > 4
                          , __global const float* x4
#endif
#if INPUTS > 5
                          , __global const float* x5
#endif
#if INPUTS > 6
                          , __global const float* x6
#endif
#if INPUTS > 7
                          , __global const float* x7
#endif
                          )
{
    const int e0 = get_global_id(0) * R;
    if (e0 >= n) return;
    const int len = min(R, n - e0);
    y += e0;
    x0 += e0;
#if INPUTS > 1
    x1 += e0;
#endif
#if INPUTS > 2
    x2 += e0;
#endif
#if INPUTS > 3
    x3 += e0;
#endif
#if INPUTS > 4
    x4 += e0;
#endif
#if INPUTS > 5
    x5 += e0;
#endif
#if INPUTS > 6
    x6 += e0;
#endif
#if INPUTS > 7
    x7 += e0;
#endif
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        float8 s = START8(i);
#if INPUTS > 1
        s += LOAD8(x1 + i);
#endif
#if INPUTS > 2
        s += LOAD8(x2 + i);
#endif
#if INPUTS > 3
        s += LOAD8(x3 + i);
#endif
#if INPUTS > 4
        s += LOAD8(x4 + i);
#endif
#if INPUTS > 5
        s += LOAD8(x5 + i);
#endif
#if INPUTS > 6
        s += LOAD8(x6 + i);
#endif
#if INPUTS > 7
        s += LOAD8(x7 + i);
#endif
        s = merge_act8(s);
        STORE8(s, y + i);
    }
    for (; i < len; ++i) {
        float s = START1(i);
#if INPUTS > 1
        s += x1[i];
#endif
#if INPUTS > 2
        s += x2[i];
#endif
#if INPUTS > 3
        s += x3[i];
#endif
#if INPUTS > 4
        s += x4[i];
#endif
#if INPUTS > 5
        s += x5[i];
#endif
#if INPUTS > 6
        s += x6[i];
#endif
#if INPUTS > 7
        s += x7[i];
#endif
        y[i] = merge_act(s);
    }
}

/* dst[dst_off + r * dst_stride + j] = src[src_off + r * src_stride + j] for j < run, r < rows
 * (rows is the global size of dimension 1). */
__kernel void concat_copy(__global const float* restrict src, __global float* restrict dst,
                          const int run, const int src_stride, const int src_off,
                          const int dst_stride, const int dst_off)
{
    const int q = get_global_id(0);
    const int r = get_global_id(1);
    __global const float* s = src + src_off + (size_t)r * src_stride;
    __global float* d = dst + dst_off + (size_t)r * dst_stride;
    if (8 * q + 8 <= run) {
        USTORE8(ULOAD8(s + 8 * q), d + 8 * q);
    } else {
        for (int j = 8 * q; j < run; ++j) d[j] = s[j];
    }
}
