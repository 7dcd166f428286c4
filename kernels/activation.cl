/* activation.cl: elementwise activations (ReLU, LeakyReLU, ReLU6, tanh, sigmoid) and row
 * softmax, forward and backward. NaN propagates as in PyTorch (see common.h).
 *
 * Elementwise kernels see the tensor as flat: element i of any NCHW (or (N, K)) array is x[i].
 * The forward's activation is the define ACTIVATION (an ACT_ code of common.h), so its switch
 * folds away; the backward takes it as an argument. LeakyReLU's slope is a runtime argument so
 * every slope shares one build.
 * Work items: each handles 8 consecutive elements as one float8 (ULOAD8 / USTORE8 of common.h
 * need only float alignment); the item owning the ragged end (n not a multiple of 8) does it
 * in scalars.
 * 1-D global size ceil(n / 8), any local size (the host passes None), no barriers. Measured on
 * PoCL (2-core AVX2 host, 16M floats): float8 per item beat float4 per item, 4 float4 per item
 * (contiguous or grid-stride) and 16 scalars per item by 1.5-2x.
 *
 * Softmax: x is (N, K) row-major, x[r * K + k]; one work item per row r, global size N.
 */
/* Vector form of activate() (common.h) for float8: PoCL runs
 * tanh/exp/select on whole float8 vectors (AVX), measured 2-6x faster than the scalar calls it
 * cannot vectorise across work items. The selects let NaN through as the scalar forms do
 * (select(a, b, c) is c ? b : a per lane, and a NaN lane's comparison is false); on PoCL they
 * run as fast as fmax (16M floats: relu forward 6.9 ms before and after). tanh is common.h's
 * tanhv, as in the fused kernels: within 2.4e-7 of PoCL's float8 tanh, and 2.3x faster once
 * the loads were inline (2M floats: 1.07 -> 0.47 ms; with ULOAD8 the builtin took 1.47). */
DEFINE_TANHV(float8)
inline float8 activate8(float8 v, float slope)
{
#if ACTIVATION == ACT_RELU
    return select(v, (float8)(0.0f), v < 0.0f);
#elif ACTIVATION == ACT_LEAKY_RELU
    return select(v * slope, v, v > 0.0f);
#elif ACTIVATION == ACT_RELU6
    return select(select(v, (float8)(6.0f), v > 6.0f), (float8)(0.0f), v < 0.0f);
#elif ACTIVATION == ACT_TANH
    return tanhv(v);
#elif ACTIVATION == ACT_SIGMOID
    return 1.0f / (1.0f + exp(-v));
#else
    return v;
#endif
}

/* activate_backward() on a float8: common.h's vector form. */
DEFINE_ACTIVATE_BACKWARDV(float8)

/* Work item q owns elements [8q, 8q + 8): one float8 when whole, the scalar tail otherwise. */
__kernel void activation_forward(__global const float* restrict x, __global float* restrict y,
                                 const int n, const float slope)
{
    const int q = get_global_id(0);
    if (8 * q + 8 <= n) {
        USTORE8(activate8(ULOAD8(x + 8 * q), slope), y + 8 * q);
    } else {
        for (int i = 8 * q; i < n; ++i) y[i] = activate(x[i], ACTIVATION, slope);
    }
}

/* gx = dL/dx from gy and the forward output y (activate_backward, common.h) of activation
 * `act` (an ACT_ code). The code is an argument, not the ACTIVATION define, so that this
 * kernel comes from the define-free build clcnn makes with data.cl, loss.cl and optim.cl (see
 * device.py's BUNDLE), which spares a cold start a build (~0.3 s). The switch gives each code
 * its own folded body: over 4M floats it ran within 1-5% of the define's build (tanh, medians
 * of 60 alternating launches; minimums 3-14% apart, relu the most), where one body testing
 * `act` per vector was 10-15% slower. */
__kernel void activation_backward(__global const float* restrict y, __global const float* restrict gy,
                                  __global float* restrict gx, const int n, const int act,
                                  const float slope)
{
    const int q = get_global_id(0);
    if (8 * q + 8 <= n) {
#define BACKWARD8(code) \
        USTORE8(activate_backwardv(ULOAD8(gy + 8 * q), ULOAD8(y + 8 * q), (code), slope), gx + 8 * q)
        switch (act) {      /* each case folds activate_backwardv to its one form */
        case ACT_RELU: BACKWARD8(ACT_RELU); break;
        case ACT_LEAKY_RELU: BACKWARD8(ACT_LEAKY_RELU); break;
        case ACT_RELU6: BACKWARD8(ACT_RELU6); break;
        case ACT_TANH: BACKWARD8(ACT_TANH); break;
        case ACT_SIGMOID: BACKWARD8(ACT_SIGMOID); break;
        default: BACKWARD8(ACT_NONE);
        }
#undef BACKWARD8
    } else {
        for (int i = 8 * q; i < n; ++i) gx[i] = activate_backward(gy[i], y[i], act, slope);
    }
}

/* y[r] = exp(x[r] - max x[r]) / sum: shifting by the row max keeps every exp in (0, 1], so
 * logits of +-1000 stay finite and the row sums to 1. */
__kernel void softmax_forward(__global const float* restrict x, __global float* restrict y,
                              const int rows, const int K)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    __global const float* xr = x + (size_t)r * K;
    __global float* yr = y + (size_t)r * K;
    float m = -INFINITY;
    /* fmax skips a NaN, but the NaN's exp, and so the sum, is NaN: the whole row comes out
     * NaN, as in PyTorch. */
    for (int k = 0; k < K; ++k) m = fmax(m, xr[k]);
    const float s = exp_shifted_row(xr, yr, K, m);
    const float inv = 1.0f / s;
    for (int k = 0; k < K; ++k) yr[k] *= inv;
}

/* gx[r] = y[r] * (gy[r] - sum_k gy[r][k] * y[r][k]). */
__kernel void softmax_backward(__global const float* restrict y, __global const float* restrict gy,
                               __global float* restrict gx, const int rows, const int K)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    const size_t base = (size_t)r * K;
    float dot = 0.0f;
    for (int k = 0; k < K; ++k) dot += gy[base + k] * y[base + k];
    for (int k = 0; k < K; ++k) gx[base + k] = y[base + k] * (gy[base + k] - dot);
}
