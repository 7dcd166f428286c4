/* batchnorm.cl: BatchNorm2D as torch.nn.BatchNorm2d, forward and backward, train and eval mode:
 * per-channel statistics, the running-statistics update, normalisation and its gradients.
 *
 * Layout: x, y, gy, gx are NCHW float32 with HW = H * W; element (n, c, h, w) is
 * x[(n * C + c) * HW + h * W + w]. Channel c owns M = N * HW elements, numbered
 * j = n * HW + i (i < HW); that sequence is cut into S chunks of L elements (the last may be
 * shorter), so chunk s holds j in [s * L, min(s * L + L, M)).
 *
 * Reductions run in two passes so that a few channels still spread over every core:
 *   pass 1 (*_partial): 2-D range (S, C), one work item per (chunk, channel), writes its
 *     chunk's partial results to part[(c * S + s) * 2 + {0, 1}];
 *   pass 2 (*_combine): 1-D range C, one work item per channel, combines the S partials and
 *     does the per-channel arithmetic (invstd, running statistics, gradient coefficients).
 * On CPUs with enough channels the train-mode passes instead run a channel per work item
 * (batchnorm_forward_train_channel, batchnorm_backward_channel): the same chunks and
 * combination in one item, then the channel's elementwise pass while its values are still in
 * the core's L2; on small planes a block of adjacent channels per item, walked in step image
 * by image (the _block kernels), so that each image's planes are read as one contiguous run.
 * Elementwise passes: 1-D range ceil(N * C * HW / R); item q owns the run of elements
 * [q * R, q * R + R) of the flat array (R from clcnn/ops/batchnorm.py, ~1024), walked plane
 * segment by plane segment: one division per segment finds the plane and its channel, whose
 * scale and shift are read once, and the segment streams in float8 steps with a scalar tail
 * (H * W need not be a multiple of 8: 7x7 and 1x1 maps work; a small plane is one of several
 * segments of a run).
 * PoCL's CPU driver calls builtins such as vload8, vstore8 and fma out of line, a call per use
 * that also stops unrolling around it: loads and stores go through LOAD8 / STORE8 (scalar
 * accesses it merges into vector ones) and products are written a * b + c, which contracts to
 * an FMA all the same. Measured on 64x16x32x32 (medians of 20): normalize + ReLU 0.69 ms with
 * vload8 in one float8 per item, 0.29 ms (about a plain 4 MB copy's time) in runs.
 * No local memory, no barriers, any local size.
 *
 * Accuracy: a chunk's statistics are two-pass (its mean, then the sum of squared deviations
 * from that mean, the chunk still in cache), the mean's sum shifted by the chunk's first value;
 * chunks combine by Chan's parallel formula. So variance never comes from E[x^2] - E[x]^2 (no
 * cancellation when |mean| >> std) and a float lane sums at most L / 16 terms (L / 8 in the
 * backward sums), L <= MAX_CHUNK of clcnn/ops/batchnorm.py.
 *
 * Defines: AFFINE (1: weight and bias given), UPDATE_RUNNING (1: the train forward updates the
 * running statistics in place), FROM_VAR (1: `istat` holds a variance and invstd is computed
 * from it with eps, as eval mode does with running_var; 0: `istat` holds invstd), TRAIN (1: the
 * input gradient carries the batch-statistics terms), ACTIVATION / NEG_SLOPE (common.h: a
 * piecewise-linear activation fused after the normalisation, ACT_NONE, ACT_RELU, ACT_RELU6 or
 * ACT_LEAKY_RELU). With an activation, gy is the gradient w.r.t. the activation's output; the
 * backward kernels recompute the pre-activation v = (x - mean) * invstd * weight + bias with
 * the forward's expression (the same value, unless the compiler contracted the two kernels
 * differently, which could only move an element lying on the kink itself) and mask gy by its
 * sign: a few per-channel reads instead of a pass over y. The expression is written a * b + c,
 * not fma(): PoCL calls vector builtins out of line, which cost the fused backward passes
 * 20-25% (a * b + c contracts to an FMA all the same).
 *
 * RESIDUAL (1: BatchNorm2D + Add (+ activation) as one step, a residual block's bn2 and its
 * shortcut): the normalising pass adds `res` before the activation, y = act(bn(x) + res), so
 * the BatchNorm output is never written and read back. The pre-activation then depends on res
 * too, so the backward sums take the activation's mask from the step's output y (as an Add's
 * backward does: y <= 0 exactly when its input is) and write the masked gradient g once: it is
 * both the residual's gradient and the BatchNorm's, and batchnorm_backward_input reads it
 * with no activation of its own.
 */
#ifndef AFFINE
#define AFFINE 1
#endif
#ifndef UPDATE_RUNNING
#define UPDATE_RUNNING 1
#endif
#ifndef FROM_VAR
#define FROM_VAR 0
#endif
#ifndef TRAIN
#define TRAIN 1
#endif
#ifndef RESIDUAL
#define RESIDUAL 0
#endif

/* Eight consecutive floats in and out: LOAD8 / STORE8 of common.h. */
#define HSUM8(a) ((((a).s0 + (a).s1) + ((a).s2 + (a).s3)) + (((a).s4 + (a).s5) + ((a).s6 + (a).s7)))

inline float inv_std(__global const float* istat, int c, float eps)
{
#if FROM_VAR
    return 1.0f / sqrt(istat[c] + eps);
#else
    return istat[c];
#endif
}

/* The normalisation's scale and shift of channel c (the forward's arithmetic, reused by the
 * backward kernels to recompute the pre-activation). */
inline float bn_scale(__global const float* istat, __global const float* weight, int c, float eps)
{
#if AFFINE
    return inv_std(istat, c, eps) * weight[c];
#else
    return inv_std(istat, c, eps);
#endif
}

inline float bn_shift(__global const float* bias, int c)
{
#if AFFINE
    return bias[c];
#else
    return 0.0f;
#endif
}

/* The fused activation of a pre-activation v (float8, per lane), and the gradient through it:
 * gy where the activation passes, selected as common.h's activate_backward does from y, here
 * from v (y <= 0 exactly when v <= 0, y >= 6 exactly when v >= 6; NaN passes gy). */
inline float8 act8(float8 v)
{
#if ACTIVATION == ACT_RELU
    return v < 0.0f ? (float8)(0.0f) : v;
#elif ACTIVATION == ACT_RELU6
    return v < 0.0f ? (float8)(0.0f) : (v > 6.0f ? (float8)(6.0f) : v);
#elif ACTIVATION == ACT_LEAKY_RELU
    return v > 0.0f ? v : v * NEG_SLOPE;
#else
    return v;
#endif
}

inline float8 act_grad8(float8 g, float8 v)
{
    /* Masks of the comparisons (all ones where true) rather than selects: PoCL's vector
     * selects cost the fused backward passes 20-25% more time than the masks do. */
#if ACTIVATION == ACT_RELU
    return as_float8(as_int8(g) & ~(v <= 0.0f));
#elif ACTIVATION == ACT_RELU6
    return as_float8(as_int8(g) & ~((v <= 0.0f) | (v >= 6.0f)));
#elif ACTIVATION == ACT_LEAKY_RELU
    return v > 0.0f ? g : g * NEG_SLOPE;
#else
    return g;
#endif
}

inline float act_grad1(float g, float v)
{
    return activate_backward(g, activate(v, ACTIVATION, NEG_SLOPE), ACTIVATION, NEG_SLOPE);
}

/* The reductions' segment helpers add into the caller's float8 accumulators (lane sums) and a
 * scalar one for the tail, which the caller sums across lanes once at the end: with a sum
 * across lanes per segment, small planes (4x4 and 8x8 maps: one or two vectors a segment)
 * spent more on those sums than on their loads. */

/* acc += p[i] - k for i < len: shifting by a nearby value keeps the terms at the size of the
 * spread, not of the mean. */
inline void seg_add_shifted(__global const float* p, int len, float k, float8* acc, float8* acc2, float* tail)
{
    int i = 0;
    for (; i + 16 <= len; i += 16) {
        *acc += LOAD8(p + i) - k;
        *acc2 += LOAD8(p + i + 8) - k;
    }
    for (; i + 8 <= len; i += 8) *acc += LOAD8(p + i) - k;
    for (; i < len; ++i) *tail += p[i] - k;
}

/* acc += (p[i] - m)^2 for i < len */
inline void seg_add_sq(__global const float* p, int len, float m, float8* acc, float8* acc2, float* tail)
{
    int i = 0;
    for (; i + 16 <= len; i += 16) {
        const float8 d = LOAD8(p + i) - m, d2 = LOAD8(p + i + 8) - m;
        *acc = d * d + *acc;
        *acc2 = d2 * d2 + *acc2;
    }
    for (; i + 8 <= len; i += 8) {
        const float8 d = LOAD8(p + i) - m;
        *acc = d * d + *acc;
    }
    for (; i < len; ++i) {
        const float d = p[i] - m;
        *tail = d * d + *tail;
    }
}

/* (sg, sgx) += (g[i], g[i] * (x[i] - m)) for i < len, all pointers at element offset off, g =
 * gy masked by the fused activation at the pre-activation (x - m) * scale + shift, or with
 * RESIDUAL by its mask at the output y, g then written to gres. */
inline void seg_add_grad(__global const float* x, __global const float* gy, __global const float* y,
                         __global float* gres, size_t off, int len, float m, float scale, float shift,
                         float8* sg, float8* sgx, float2* tail)
{
    x += off;
    gy += off;
#if RESIDUAL
    y += off;
    gres += off;
#endif
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        const float8 d = LOAD8(x + i) - m;
#if RESIDUAL
        const float8 gv = act_grad8(LOAD8(gy + i), LOAD8(y + i));
        STORE8(gv, gres + i);
#else
        const float8 gv = act_grad8(LOAD8(gy + i), d * scale + shift);
#endif
        *sg += gv;
        *sgx = gv * d + *sgx;
    }
    for (; i < len; ++i) {
        const float d = x[i] - m;
#if RESIDUAL
        const float g = activate_backward(gy[i], y[i], ACTIVATION, NEG_SLOPE);
        gres[i] = g;
#else
        const float g = act_grad1(gy[i], d * scale + shift);
#endif
        *tail += (float2)(g, g * d);
    }
}

/* (mean, sum of squared deviations from it) of values j0 .. j1 - 1 of channel c: a run of whole
 * or partial planes, each plane segment contiguous; two passes, the second reading the chunk
 * from cache. */
inline float2 chunk_stats(__global const float* x, int c, int C, int HW, int j0, int j1)
{
    const float k = x[((size_t)(j0 / HW) * C + c) * HW + j0 % HW];
    float8 acc = (float8)(0.0f), acc2 = (float8)(0.0f);
    float tail = 0.0f;
    for (int j = j0; j < j1;) {
        const int n = j / HW, i = j - n * HW, len = min(HW - i, j1 - j);
        seg_add_shifted(x + ((size_t)n * C + c) * HW + i, len, k, &acc, &acc2, &tail);
        j += len;
    }
    const float mean = k + (tail + HSUM8(acc + acc2)) / (float)(j1 - j0);
    acc = acc2 = (float8)(0.0f);
    tail = 0.0f;
    for (int j = j0; j < j1;) {
        const int n = j / HW, i = j - n * HW, len = min(HW - i, j1 - j);
        seg_add_sq(x + ((size_t)n * C + c) * HW + i, len, mean, &acc, &acc2, &tail);
        j += len;
    }
    return (float2)(mean, tail + HSUM8(acc + acc2));
}

/* Pass 1 of the train-mode statistics: chunk s of channel c gets (its mean, its sum of squared
 * deviations from that mean). Range (S, C). */
__kernel void batchnorm_stats_partial(__global const float* restrict x, __global float* restrict part,
                                      const int C, const int HW, const int M, const int L, const int S)
{
    const int s = get_global_id(0), c = get_global_id(1);
    if (s >= S || c >= C) return;
    const float2 stats = chunk_stats(x, c, C, HW, s * L, min(s * L + L, M));
    part[((size_t)c * S + s) * 2] = stats.x;
    part[((size_t)c * S + s) * 2 + 1] = stats.y;
}

/* Chan et al.'s pairwise update: (count, mean, m2) of a channel so far joined by a chunk of nb
 * values with mean cm and squared deviations cm2. */
inline void chan_merge(float* count, float* mean, float* m2, float nb, float cm, float cm2)
{
    const float n = *count + nb, delta = cm - *mean;
    *mean += delta * (nb / n);
    *m2 += cm2 + delta * delta * (*count * (nb / n));
    *count = n;
}

/* save_mean, save_invstd and with UPDATE_RUNNING the running statistics of channel c from its
 * mean and M2 over M values: running = (1 - factor) * running + factor * batch, running_var
 * taking the unbiased variance M2 / (M - 1) (M > 1: the host refuses M == 1). The invstd. */
inline float finish_stats(int c, float mean, float m2, int M, float eps, float factor, __global float* save_mean,
                          __global float* save_invstd, __global float* running_mean, __global float* running_var)
{
    const float invstd = 1.0f / sqrt(m2 / (float)M + eps);
    save_mean[c] = mean;
    save_invstd[c] = invstd;
#if UPDATE_RUNNING
    running_mean[c] = (1.0f - factor) * running_mean[c] + factor * mean;
    running_var[c] = (1.0f - factor) * running_var[c] + factor * (m2 / (float)(M - 1));
#endif
    return invstd;
}

/* The residual at element e (only read with RESIDUAL; the host passes none otherwise). */
#if RESIDUAL
#define RES_AT(e) (res + (e))
#else
#define RES_AT(e) res
#endif

/* y[i] = act((x[i] - m) * scale + shift (+ res[i] with RESIDUAL)) for i < len. */
inline void normalize_segment(__global const float* xp, __global const float* rp, __global float* yp, int len,
                              float m, float scale, float shift)
{
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        float8 v = (LOAD8(xp + i) - m) * scale + shift;
#if RESIDUAL
        v += LOAD8(rp + i);
#endif
        v = act8(v);
        STORE8(v, yp + i);
    }
    for (; i < len; ++i) {
        float v = (xp[i] - m) * scale + shift;
#if RESIDUAL
        v += rp[i];
#endif
        yp[i] = activate(v, ACTIVATION, NEG_SLOPE);
    }
}

/* Pass 2: channel c's mean and biased variance from its S chunks (Chan et al.'s pairwise
 * update), save_mean and save_invstd, and with UPDATE_RUNNING the running statistics in place:
 * running = (1 - factor) * running + factor * batch, running_var taking the unbiased variance
 * M2 / (M - 1) (M > 1: the host refuses M == 1). Range C. */
__kernel void batchnorm_stats_combine(__global const float* restrict part, __global float* restrict save_mean,
                                      __global float* restrict save_invstd, __global float* restrict running_mean,
                                      __global float* restrict running_var, const int C, const int S,
                                      const int L, const int M, const float eps, const float factor)
{
    const int c = get_global_id(0);
    if (c >= C) return;
    __global const float* p = part + (size_t)c * S * 2;
    float count = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int s = 0; s < S; ++s)
        chan_merge(&count, &mean, &m2, (float)min(L, M - s * L), p[2 * s], p[2 * s + 1]);
    finish_stats(c, mean, m2, M, eps, factor, save_mean, save_invstd, running_mean, running_var);
}

/* The whole train-mode forward of channel c in one work item (CPUs, where a channel's N*H*W
 * values fit in the core's L2): its S chunks' statistics as pass 1 makes them, combined as
 * pass 2 does, then the normalisation of its N planes, which reads them from the L2 rather than
 * memory and saves the two other launches. Range C. */
__kernel void batchnorm_forward_train_channel(__global const float* restrict x, __global const float* restrict res,
                                              __global const float* restrict weight,
                                              __global const float* restrict bias,
                                              __global float* restrict save_mean, __global float* restrict save_invstd,
                                              __global float* restrict running_mean,
                                              __global float* restrict running_var, __global float* restrict y,
                                              const int C, const int HW, const int M, const int L, const int S,
                                              const float eps, const float factor)
{
    const int c = get_global_id(0);
    if (c >= C) return;
    float count = 0.0f, mean = 0.0f, m2 = 0.0f;
    for (int s = 0; s < S; ++s) {
        const float2 chunk = chunk_stats(x, c, C, HW, s * L, min(s * L + L, M));
        chan_merge(&count, &mean, &m2, (float)min(L, M - s * L), chunk.x, chunk.y);
    }
    const float invstd = finish_stats(c, mean, m2, M, eps, factor, save_mean, save_invstd, running_mean,
                                      running_var);
#if AFFINE
    const float scale = invstd * weight[c], shift = bias[c];
#else
    const float scale = invstd, shift = 0.0f;
#endif
    for (int n = 0; n < M / HW; ++n) {
        const size_t e = ((size_t)n * C + c) * HW;
        normalize_segment(x + e, RES_AT(e), y + e, HW, mean, scale, shift);
    }
}

#define CB_MAX 16       /* channels per work item of the _block kernels */

/* Per channel c < cn of the block at c0, over the N images, the lane sums of x - centre[c]
 * (squares 0: seg_add_shifted) or of its squares (1: seg_add_sq) into acc, acc2 and tail. */
inline void block_sums(__global const float* x, int C, int HW, int N, int c0, int cn, const float* centre,
                       int squares, float8* acc, float8* acc2, float* tail)
{
    for (int c = 0; c < cn; c++) {
        acc[c] = acc2[c] = (float8)(0.0f);
        tail[c] = 0.0f;
    }
    for (int n = 0; n < N; n++) {
        __global const float* p = x + ((size_t)n * C + c0) * HW;
        for (int c = 0; c < cn; c++) {
            if (squares)
                seg_add_sq(p + c * HW, HW, centre[c], &acc[c], &acc2[c], &tail[c]);
            else
                seg_add_shifted(p + c * HW, HW, centre[c], &acc[c], &acc2[c], &tail[c]);
        }
    }
}

/* batchnorm_forward_train_channel for small planes (a channel one chunk, S == 1): work item b
 * owns the CB channels b*CB .. (at most CB_MAX), walked in step image by image, so that its
 * reads are one contiguous run of CB planes per image (a channel's 4x4 or 8x8 planes alone lie
 * 24 KB apart and left the walk latency-bound); the same per-channel sums in the same order, the
 * second and third passes reading the block back from the core's L2. Range ceil(C / CB). */
__kernel void batchnorm_forward_train_block(__global const float* restrict x, __global const float* restrict res,
                                            __global const float* restrict weight,
                                            __global const float* restrict bias,
                                            __global float* restrict save_mean, __global float* restrict save_invstd,
                                            __global float* restrict running_mean,
                                            __global float* restrict running_var, __global float* restrict y,
                                            const int C, const int HW, const int M, const int CB,
                                            const float eps, const float factor)
{
    const int c0 = get_global_id(0) * CB;
    if (c0 >= C) return;
    const int cn = min(CB, C - c0), N = M / HW;
    float8 acc[CB_MAX], acc2[CB_MAX];
    float tail[CB_MAX], shift_by[CB_MAX], mean[CB_MAX], scale[CB_MAX], shift[CB_MAX];
    for (int c = 0; c < cn; c++)
        shift_by[c] = x[(size_t)(c0 + c) * HW];
    block_sums(x, C, HW, N, c0, cn, shift_by, 0, acc, acc2, tail);
    for (int c = 0; c < cn; c++)
        mean[c] = shift_by[c] + (tail[c] + HSUM8(acc[c] + acc2[c])) / (float)M;
    block_sums(x, C, HW, N, c0, cn, mean, 1, acc, acc2, tail);
    for (int c = 0; c < cn; c++) {
        const float invstd = finish_stats(c0 + c, mean[c], tail[c] + HSUM8(acc[c] + acc2[c]), M, eps, factor,
                                          save_mean, save_invstd, running_mean, running_var);
#if AFFINE
        scale[c] = invstd * weight[c0 + c];
        shift[c] = bias[c0 + c];
#else
        scale[c] = invstd;
        shift[c] = 0.0f;
#endif
    }
    for (int n = 0; n < N; n++) {
        const size_t e = ((size_t)n * C + c0) * HW;
        for (int c = 0; c < cn; c++)
            normalize_segment(x + e + c * HW, RES_AT(e + c * HW), y + e + c * HW, HW, mean[c], scale[c], shift[c]);
    }
}

/* y = act((x - mean[c]) * invstd[c] * weight[c] + bias[c]), with RESIDUAL
 * y = act((x - mean[c]) * invstd[c] * weight[c] + bias[c] + res). Train mode passes the batch
 * mean and invstd; eval mode the running mean and running variance (FROM_VAR).
 * Range ceil(total / R): item q owns the run [q * R, q * R + R) of elements. */
__kernel void batchnorm_forward_normalize(__global const float* restrict x, __global const float* restrict res,
                                          __global const float* restrict mean,
                                          __global const float* restrict istat, __global const float* restrict weight,
                                          __global const float* restrict bias, __global float* restrict y,
                                          const int total, const int C, const int HW, const int R, const float eps)
{
    const int e0 = get_global_id(0) * R;
    if (e0 >= total) return;
    const int e1 = e0 + min(R, total - e0);
    for (int e = e0; e < e1;) {
        const int plane = e / HW, len = min(HW - (e - plane * HW), e1 - e), c = plane % C;
        normalize_segment(x + e, RES_AT(e), y + e, len, mean[c], bn_scale(istat, weight, c, eps), bn_shift(bias, c));
        e += len;
    }
}

/* (sum g, sum g * (x - m)) over values j0 .. j1 - 1 of channel c (seg_add_grad's g). */
inline float2 chunk_grad_sums(__global const float* x, __global const float* gy, __global const float* y,
                              __global float* gres, int c, int C, int HW, int j0, int j1, float m, float scale,
                              float shift)
{
    float8 sg = (float8)(0.0f), sgx = (float8)(0.0f);
    float2 tail = (float2)(0.0f);
    for (int j = j0; j < j1;) {
        const int n = j / HW, i = j - n * HW, len = min(HW - i, j1 - j);
        seg_add_grad(x, gy, y, gres, ((size_t)n * C + c) * HW + i, len, m, scale, shift, &sg, &sgx, &tail);
        j += len;
    }
    return (float2)(tail.x + HSUM8(sg), tail.y + HSUM8(sgx));
}

/* Pass 1 of the backward sums: chunk s of channel c gets (sum g, sum g * (x - mean[c])), g = gy
 * through the fused activation (istat, weight, bias only read for it; with RESIDUAL its mask
 * comes from y and g is written to gres). Range (S, C). */
__kernel void batchnorm_backward_partial(__global const float* restrict x, __global const float* restrict gy,
                                         __global const float* restrict y, __global float* restrict gres,
                                         __global const float* restrict mean, __global const float* restrict istat,
                                         __global const float* restrict weight, __global const float* restrict bias,
                                         __global float* restrict part, const int C, const int HW, const int M,
                                         const int L, const int S, const float eps)
{
    const int s = get_global_id(0), c = get_global_id(1);
    if (s >= S || c >= C) return;
    const int j0 = s * L, j1 = min(j0 + L, M);
    const float m = mean[c];
#if ACTIVATION != ACT_NONE && !RESIDUAL
    const float scale = bn_scale(istat, weight, c, eps), shift = bn_shift(bias, c);
#else
    const float scale = 0.0f, shift = 0.0f;
#endif
    const float2 sums = chunk_grad_sums(x, gy, y, gres, c, C, HW, j0, j1, m, scale, shift);
    part[((size_t)c * S + s) * 2] = sums.x;
    part[((size_t)c * S + s) * 2 + 1] = sums.y;
}

/* Channel c's gweight and gbias (AFFINE) from its sums, and its (k1, k2, k3): see pass 2. */
inline float3 grad_coefficients(int c, float sg, float sgx, int M, __global const float* istat,
                                __global const float* weight, float eps, __global float* gweight,
                                __global float* gbias)
{
    const float is = inv_std(istat, c, eps);
    const float sgxhat = sgx * is;
#if AFFINE
    gweight[c] = sgxhat;
    gbias[c] = sg;
    const float k1 = weight[c] * is;
#else
    const float k1 = is;
#endif
#if TRAIN
    return (float3)(k1, -k1 * is * sgxhat / (float)M, -k1 * sg / (float)M);
#else
    return (float3)(k1, 0.0f, 0.0f);
#endif
}

/* Pass 2: gbias[c] = sum gy, gweight[c] = sum gy * xhat (xhat = (x - mean) * invstd), and the
 * input gradient's coefficients coef[3c..3c+2] = (k1, k2, k3) with
 *   gx = k1 * gy + k2 * (x - mean) + k3.
 * Train (batch statistics): gx = weight * invstd / M * (M gy - sum gy - xhat * sum(gy xhat)),
 * so k1 = weight * invstd, k2 = -k1 * invstd * sum(gy xhat) / M, k3 = -k1 * sum(gy) / M.
 * Eval (running statistics are constants): k1 = weight * invstd, k2 = k3 = 0. Range C. */
__kernel void batchnorm_backward_combine(__global const float* restrict part, __global const float* restrict istat,
                                         __global const float* restrict weight, __global float* restrict gweight,
                                         __global float* restrict gbias, __global float* restrict coef,
                                         const int C, const int S, const int M, const float eps)
{
    const int c = get_global_id(0);
    if (c >= C) return;
    __global const float* p = part + (size_t)c * S * 2;
    float sg = 0.0f, sgx = 0.0f;
    for (int s = 0; s < S; ++s) {
        sg += p[2 * s];
        sgx += p[2 * s + 1];
    }
    const float3 k = grad_coefficients(c, sg, sgx, M, istat, weight, eps, gweight, gbias);
    coef[3 * c] = k.x;
    coef[3 * c + 1] = k.y;
    coef[3 * c + 2] = k.z;
}

/* gx = k1 * g + k2 * (x - m) + k3 for i < len, g = gy through the fused activation at the
 * pre-activation (x - m) * scale + shift (INPUT_FUSED; with RESIDUAL gy is the sums pass's
 * already masked g); eval mode without an activation reads no x. */
#define INPUT_FUSED (ACTIVATION != ACT_NONE && !RESIDUAL)
inline void input_grad_segment(__global const float* xp, __global const float* gp, __global float* op, int len,
                               float m, float scale, float shift, float k1, float k2, float k3)
{
    int i = 0;
    for (; i + 8 <= len; i += 8) {
        float8 g = LOAD8(gp + i);
#if TRAIN || INPUT_FUSED
        const float8 d = LOAD8(xp + i) - m;
#endif
#if INPUT_FUSED
        g = act_grad8(g, d * scale + shift);
#endif
#if TRAIN
        const float8 r = g * k1 + (d * k2 + k3);
#else
        const float8 r = g * k1;
#endif
        STORE8(r, op + i);
    }
    for (; i < len; ++i) {
        float g = gp[i];
#if TRAIN || INPUT_FUSED
        const float d = xp[i] - m;
#endif
#if INPUT_FUSED
        g = act_grad1(g, d * scale + shift);
#endif
#if TRAIN
        op[i] = g * k1 + (d * k2 + k3);
#else
        op[i] = g * k1;
#endif
    }
}

/* gx = k1 * g + k2 * (x - mean) + k3 per channel (coefficients from batchnorm_backward_combine),
 * g = gy through the fused activation; eval mode without an activation reads neither x nor mean.
 * Range ceil(total / R), runs as batchnorm_forward_normalize's. */
__kernel void batchnorm_backward_input(__global const float* restrict x, __global const float* restrict gy,
                                       __global const float* restrict mean, __global const float* restrict istat,
                                       __global const float* restrict weight, __global const float* restrict bias,
                                       __global const float* restrict coef, __global float* restrict gx,
                                       const int total, const int C, const int HW, const int R, const float eps)
{
    const int e0 = get_global_id(0) * R;
    if (e0 >= total) return;
    const int e1 = e0 + min(R, total - e0);
    for (int e = e0; e < e1;) {
        const int plane = e / HW, len = min(HW - (e - plane * HW), e1 - e), c = plane % C;
#if TRAIN || INPUT_FUSED
        const float m = mean[c];
#else
        const float m = 0.0f;
#endif
#if INPUT_FUSED
        const float scale = bn_scale(istat, weight, c, eps), shift = bn_shift(bias, c);
#else
        const float scale = 0.0f, shift = 0.0f;
#endif
        input_grad_segment(x + e, gy + e, gx + e, len, m, scale, shift, coef[3 * c], coef[3 * c + 1],
                           coef[3 * c + 2]);
        e += len;
    }
}

/* The whole train-mode backward of channel c in one work item (CPUs, as
 * batchnorm_forward_train_channel): its chunks' sums as pass 1 makes them (with RESIDUAL
 * writing the masked g to gres), added as pass 2 adds them, the coefficients, and with need_gx
 * the input gradient of its N planes, which reads x and g back from the core's L2. Range C. */
__kernel void batchnorm_backward_channel(__global const float* restrict x, __global const float* restrict gy,
                                         __global const float* restrict y, __global float* restrict gres,
                                         __global const float* restrict mean, __global const float* restrict istat,
                                         __global const float* restrict weight, __global const float* restrict bias,
                                         __global float* restrict gweight, __global float* restrict gbias,
                                         __global float* restrict gx, const int need_gx, const int C, const int HW,
                                         const int M, const int L, const int S, const float eps)
{
    const int c = get_global_id(0);
    if (c >= C) return;
    const float m = mean[c];
#if ACTIVATION != ACT_NONE && !RESIDUAL
    const float scale = bn_scale(istat, weight, c, eps), shift = bn_shift(bias, c);
#else
    const float scale = 0.0f, shift = 0.0f;
#endif
    float sg = 0.0f, sgx = 0.0f;
    for (int s = 0; s < S; ++s) {
        const float2 sums = chunk_grad_sums(x, gy, y, gres, c, C, HW, s * L, min(s * L + L, M), m, scale, shift);
        sg += sums.x;
        sgx += sums.y;
    }
    const float3 k = grad_coefficients(c, sg, sgx, M, istat, weight, eps, gweight, gbias);
    if (!need_gx)
        return;
#if RESIDUAL
    __global const float* g = gres;     /* masked by the sums pass */
#else
    __global const float* g = gy;
#endif
    for (int n = 0; n < M / HW; ++n) {
        const size_t e = ((size_t)n * C + c) * HW;
        input_grad_segment(x + e, g + e, gx + e, HW, m, scale, shift, k.x, k.y, k.z);
    }
}

/* batchnorm_backward_channel for small planes (a channel one chunk), CB channels per work item
 * walked in step image by image as batchnorm_forward_train_block walks them: the same sums in
 * the same order, then the input gradient. Range ceil(C / CB). */
__kernel void batchnorm_backward_block(__global const float* restrict x, __global const float* restrict gy,
                                       __global const float* restrict y, __global float* restrict gres,
                                       __global const float* restrict mean, __global const float* restrict istat,
                                       __global const float* restrict weight, __global const float* restrict bias,
                                       __global float* restrict gweight, __global float* restrict gbias,
                                       __global float* restrict gx, const int need_gx, const int C, const int HW,
                                       const int M, const int CB, const float eps)
{
    const int c0 = get_global_id(0) * CB;
    if (c0 >= C) return;
    const int cn = min(CB, C - c0), N = M / HW;
    float8 sg[CB_MAX], sgx[CB_MAX];
    float2 tail[CB_MAX];
    float m[CB_MAX], scale[CB_MAX], shift[CB_MAX];
    float3 k[CB_MAX];
    for (int c = 0; c < cn; c++) {
        m[c] = mean[c0 + c];
#if ACTIVATION != ACT_NONE && !RESIDUAL
        scale[c] = bn_scale(istat, weight, c0 + c, eps);
        shift[c] = bn_shift(bias, c0 + c);
#else
        scale[c] = shift[c] = 0.0f;
#endif
        sg[c] = sgx[c] = (float8)(0.0f);
        tail[c] = (float2)(0.0f);
    }
    for (int n = 0; n < N; n++)
        for (int c = 0; c < cn; c++)
            seg_add_grad(x, gy, y, gres, ((size_t)n * C + c0 + c) * HW, HW, m[c], scale[c], shift[c], &sg[c], &sgx[c],
                         &tail[c]);
    for (int c = 0; c < cn; c++)
        k[c] = grad_coefficients(c0 + c, tail[c].x + HSUM8(sg[c]), tail[c].y + HSUM8(sgx[c]), M, istat, weight,
                                 eps, gweight, gbias);
    if (!need_gx)
        return;
#if RESIDUAL
    __global const float* g = gres;     /* masked by the sums pass */
#else
    __global const float* g = gy;
#endif
    for (int n = 0; n < N; n++)
        for (int c = 0; c < cn; c++) {
            const size_t e = ((size_t)n * C + c0 + c) * HW;
            input_grad_segment(x + e, g + e, gx + e, HW, m[c], scale[c], shift[c], k[c].x, k[c].y, k[c].z);
        }
}

/* An eval-mode BatchNorm folded into the convolution before it, on the device (no read-back of
 * the statistics, and a recorded eval pass can replay it): with s = gamma / sqrt(var + eps)
 * per output channel, wf = w * s and bf = (b - mean) * s + beta. Work item o: output channel
 * o's per_channel weights, eight at a time, and bf[o] (an item per weight, each working out
 * its s, ran at 5 GB/s: 3.6 ms for a 512 x 512 x 3 x 3 weight, a quarter of ResNet-50's batch-1
 * inference in folds). No bias: b counts as zeros; not affine: gamma as ones, beta as zeros. */
__kernel void batchnorm_fold(__global const float* restrict w, __global const float* restrict b,
                             __global const float* restrict gamma, __global const float* restrict beta,
                             __global const float* restrict mean, __global const float* restrict var,
                             __global float* restrict wf, __global float* restrict bf,
                             const int per_channel, const int channels, const float eps,
                             const int has_bias, const int affine)
{
    const int o = get_global_id(0);
    if (o >= channels) return;
    const float s = (affine ? gamma[o] : 1.0f) / sqrt(var[o] + eps);
    bf[o] = ((has_bias ? b[o] : 0.0f) - mean[o]) * s + (affine ? beta[o] : 0.0f);
    const __global float* src = w + (size_t)o * per_channel;
    __global float* dst = wf + (size_t)o * per_channel;
    int i = 0;
    for (; i + 8 <= per_channel; i += 8)
        STORE8(LOAD8(src + i) * s, dst + i);
    for (; i < per_channel; ++i)
        dst[i] = src[i] * s;
}
