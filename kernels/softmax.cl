/* softmax.cl: Softmax and LogSoftmax along any axis (ONNX Softmax/LogSoftmax, opset 13 meaning),
 * forward and backward. The tensor is seen as (outer, K, inner): K the size of the axis, outer
 * and inner the products of the axes before and after it, so element (o, k, j) is
 * x[(o*K + k)*inner + j]; for NCHW and axis 1, outer = N, K = C, inner = H*W.
 *   softmax:     y = exp(x - max) / sum exp(x - max)
 *   log_softmax: y = x - max - log(sum exp(x - max))
 *   backward:    softmax gx = y * (gy - sum(gy * y)); log_softmax gx = gy - exp(y) * sum(gy)
 * LOG (a define, 0 or 1) chooses. The max shift keeps exp finite for any finite row; a NaN in a
 * row makes the whole row NaN, as in PyTorch.
 * Work items: one per (o, j), a 1-D range of outer*inner; each makes 3 (forward) or 2
 * (backward) passes over its K elements at stride inner, so for inner > 1 neighbouring items
 * read neighbouring floats. No local memory, no barriers.
 */
#ifndef LOG
#define LOG 0
#endif

__kernel void softmax_axis_forward(__global const float* restrict x, __global float* restrict y,
                                   const int K, const int inner, const int items)
{
    const int id = get_global_id(0);
    if (id >= items) return;
    const size_t base = (size_t)(id / inner) * K * inner + id % inner;
    float m = -INFINITY;
    for (int k = 0; k < K; ++k) {
        const float v = x[base + (size_t)k * inner];
        m = (v > m || isnan(v)) ? v : m;
    }
    float sum = 0.0f;
#if LOG
    for (int k = 0; k < K; ++k)
        sum += exp(x[base + (size_t)k * inner] - m);
    const float shift = m + log(sum);
    for (int k = 0; k < K; ++k)
        y[base + (size_t)k * inner] = x[base + (size_t)k * inner] - shift;
#else
    for (int k = 0; k < K; ++k) {      /* y holds the exponentials until they are scaled */
        const float e = exp(x[base + (size_t)k * inner] - m);
        y[base + (size_t)k * inner] = e;
        sum += e;
    }
    const float inv = 1.0f / sum;
    for (int k = 0; k < K; ++k)
        y[base + (size_t)k * inner] *= inv;
#endif
}

__kernel void softmax_axis_backward(__global const float* restrict y, __global const float* restrict gy,
                                    __global float* restrict gx, const int K, const int inner,
                                    const int items)
{
    const int id = get_global_id(0);
    if (id >= items) return;
    const size_t base = (size_t)(id / inner) * K * inner + id % inner;
    float dot = 0.0f;
    for (int k = 0; k < K; ++k) {
        const size_t at = base + (size_t)k * inner;
#if LOG
        dot += gy[at];
#else
        dot += gy[at] * y[at];
#endif
    }
    for (int k = 0; k < K; ++k) {
        const size_t at = base + (size_t)k * inner;
#if LOG
        gx[at] = gy[at] - exp(y[at]) * dot;
#else
        gx[at] = y[at] * (gy[at] - dot);
#endif
    }
}
