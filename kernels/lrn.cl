/* lrn.cl: local response normalisation across channels (AlexNet, GoogLeNet), as ONNX LRN:
 *   s[n,c,p] = k + alpha / size * sum of x[n,j,p]^2 over j in [c - FRONT, c + BACK] within 0..C-1
 *   y[n,c,p] = x[n,c,p] * s[n,c,p]^-beta
 * with FRONT = (size - 1) / 2 and BACK = size - 1 - FRONT (torch.nn.LocalResponseNorm has the
 * same window for an odd size). p is the pixel h*W + w; x[n,c,p] = x[(n*C + c)*HW + p].
 * The forward also writes s, which the backward reuses with y (x[c] s[c]^(-beta-1) = y[c] / s[c]):
 *   gx[n,i,p] = gy[i] s[i]^-beta - 2 alpha beta / size * x[i] * sum of gy[c] y[c] / s[c]
 *   over c in [i - BACK, i + FRONT] (the channels whose window holds i).
 * s^-beta is exp(-beta * log(s)) (s >= k > 0): PoCL runs pow() 20-50x slower.
 * Work items: one per (n, 8 neighbouring pixels), a 1-D range of N*ceil(HW / 8); each walks
 * the channels of its 8 pixels as float8 vectors (a stride of HW floats between channels; the
 * last group of a plane holds HW % 8 pixels, loaded and stored lane by lane, its empty lanes
 * zero). Measured on PoCL (2 cores, 32x64x28x28, size 5): 1 pixel per item with pow() took
 * 490 ms forward and 2.7 s backward; float8 with exp(-beta * log(s)) 24 ms and 49 ms. Each window is summed
 * afresh (size is small, 3 to 11 in the classic nets): a running sum that subtracts the square
 * leaving the window would lose the small squares next to a large one. No local memory, no
 * barriers.
 */

inline float8 load_part(__global const float* p, int count)
{
    if (count == 8) return ULOAD8(p);
    float8 v = (float8)(0.0f);
    float* lanes = (float*)&v;
    for (int l = 0; l < count; ++l) lanes[l] = p[l];
    return v;
}

inline void store_part(__global float* p, float8 v, int count)
{
    if (count == 8) {
        USTORE8(v, p);
        return;
    }
    const float* lanes = (const float*)&v;
    for (int l = 0; l < count; ++l) p[l] = lanes[l];
}

/* s^-beta for s > 0 */
inline float8 neg_power(float8 s, float beta)
{
    return exp(-beta * log(s));
}

__kernel void lrn_forward(__global const float* restrict x, __global float* restrict y,
                          __global float* restrict s, const int channels, const int hw, const int items,
                          const int front, const int back, const float alpha_n, const float beta,
                          const float k)
{
    const int id = get_global_id(0);
    if (id >= items) return;
    const int groups = (hw + 7) / 8;
    const int p0 = id % groups * 8;
    const int count = min(8, hw - p0);
    const size_t base = (size_t)(id / groups) * channels * hw + p0;
    for (int c = 0; c < channels; ++c) {
        float8 sum = (float8)(0.0f);
        for (int j = max(0, c - front); j <= min(channels - 1, c + back); ++j) {
            const float8 v = load_part(x + base + (size_t)j * hw, count);
            sum += v * v;
        }
        const float8 sc = k + alpha_n * sum;
        const size_t at = base + (size_t)c * hw;
        store_part(s + at, sc, count);
        store_part(y + at, load_part(x + at, count) * neg_power(sc, beta), count);
    }
}

__kernel void lrn_backward(__global const float* restrict x, __global const float* restrict y,
                           __global const float* restrict s, __global const float* restrict gy,
                           __global float* restrict gx, const int channels, const int hw,
                           const int items, const int front, const int back, const float alpha_n,
                           const float beta)
{
    const int id = get_global_id(0);
    if (id >= items) return;
    const int groups = (hw + 7) / 8;
    const int p0 = id % groups * 8;
    const int count = min(8, hw - p0);
    const size_t base = (size_t)(id / groups) * channels * hw + p0;
    for (int i = 0; i < channels; ++i) {
        float8 acc = (float8)(0.0f);
        for (int c = max(0, i - back); c <= min(channels - 1, i + front); ++c) {
            const size_t at = base + (size_t)c * hw;
            /* empty lanes: s is loaded as 0 there; 1 keeps the division finite */
            const float8 sc = load_part(s + at, count);
            acc += load_part(gy + at, count) * load_part(y + at, count) / select(sc, (float8)(1.0f), sc == 0.0f);
        }
        const size_t at = base + (size_t)i * hw;
        const float8 sc = load_part(s + at, count);
        const float8 g = load_part(gy + at, count) * neg_power(select(sc, (float8)(1.0f), sc == 0.0f), beta)
                         - 2.0f * alpha_n * beta * load_part(x + at, count) * acc;
        store_part(gx + at, g, count);
    }
}
