/* lrn.cl: local response normalisation across channels (AlexNet, GoogLeNet), as ONNX LRN:
 *   s[n,c,p] = k + alpha / size * sum of x[n,j,p]^2 over j in [c - FRONT, c + BACK] within 0..C-1
 *   y[n,c,p] = x[n,c,p] * s[n,c,p]^-beta
 * with FRONT = (size - 1) / 2 and BACK = size - 1 - FRONT (torch.nn.LocalResponseNorm has the
 * same window for an odd size). p is the pixel h*W + w; x[n,c,p] = x[(n*C + c)*HW + p].
 * The forward also writes s, which the backward reuses:
 *   gx[n,i,p] = gy[i] s[i]^-beta - 2 alpha beta / size * x[i] * sum of gy[c] x[c] s[c]^(-beta-1)
 *   over c in [i - BACK, i + FRONT] (the channels whose window holds i).
 * Work items: one per (n, p), a 1-D range of N*HW; each walks the channels of its pixel, a
 * stride of HW floats, so neighbouring items read neighbouring floats. Each window is summed
 * afresh (size is small, 3 to 11 in the classic nets): a running sum that subtracts the square
 * leaving the window would lose the small squares next to a large one. No local memory, no
 * barriers.
 */

__kernel void lrn_forward(__global const float* restrict x, __global float* restrict y,
                          __global float* restrict s, const int channels, const int hw, const int items,
                          const int front, const int back, const float alpha_n, const float beta,
                          const float k)
{
    const int id = get_global_id(0);
    if (id >= items) return;
    const size_t base = (size_t)(id / hw) * channels * hw + id % hw;
    for (int c = 0; c < channels; ++c) {
        float sum = 0.0f;
        for (int j = max(0, c - front); j <= min(channels - 1, c + back); ++j) {
            const float v = x[base + (size_t)j * hw];
            sum += v * v;
        }
        const float sc = k + alpha_n * sum;
        const size_t at = base + (size_t)c * hw;
        s[at] = sc;
        y[at] = x[at] * pow(sc, -beta);
    }
}

__kernel void lrn_backward(__global const float* restrict x, __global const float* restrict s,
                           __global const float* restrict gy, __global float* restrict gx,
                           const int channels, const int hw, const int items, const int front,
                           const int back, const float alpha_n, const float beta)
{
    const int id = get_global_id(0);
    if (id >= items) return;
    const size_t base = (size_t)(id / hw) * channels * hw + id % hw;
    for (int i = 0; i < channels; ++i) {
        float acc = 0.0f;
        for (int c = max(0, i - back); c <= min(channels - 1, i + front); ++c) {
            const size_t at = base + (size_t)c * hw;
            acc += gy[at] * x[at] * pow(s[at], -beta - 1.0f);
        }
        const size_t at = base + (size_t)i * hw;
        gx[at] = gy[at] * pow(s[at], -beta) - 2.0f * alpha_n * beta * x[at] * acc;
    }
}
