/* loss.cl: softmax cross-entropy and mean squared error, forward and backward.
 *
 * Layout: logits and probs (N, K) row-major, element (n, k) at n*K + k; labels int32 (N,);
 * MSE reads pred and target as flat arrays of `count` elements (any NCHW shape).
 * Means are taken without float atomics, in a fixed order, so they are deterministic:
 *   cross-entropy: one work item per row writes that row's loss, then loss_mean_finish (a single
 *   work item) sums the N row losses in order and divides by N;
 *   MSE: mse_forward_partial has PARTS work items, each summing a fixed contiguous chunk of
 *   squared differences, then loss_mean_finish sums the PARTS partials and divides by count.
 * Work-group assumptions: none (1-D, any local size, no local memory).
 */

/* Row n: probs = softmax(logits), row_loss = logsumexp - logits[label], both shifted by the row
 * maximum so logits of +-1000 stay finite. A label outside [0, K) gives a NaN row loss. */
__kernel void softmax_cross_entropy_forward(__global const float* restrict logits,
                                            __global const int* restrict labels,
                                            __global float* restrict probs,
                                            __global float* restrict row_loss,
                                            const int N, const int K)
{
    const int n = get_global_id(0);
    if (n >= N) return;
    __global const float* z = logits + (size_t)n * K;
    __global float* p = probs + (size_t)n * K;
    float zmax = z[0];
    for (int k = 1; k < K; ++k) zmax = z[k] > zmax ? z[k] : zmax;
    const float sum = exp_shifted_row(z, p, K, zmax);
    const float inv = 1.0f / sum;
    for (int k = 0; k < K; ++k) p[k] *= inv;
    const int label = labels[n];
    row_loss[n] = (label >= 0 && label < K) ? log(sum) - (z[label] - zmax) : NAN;
}

/* dlogits = (probs - onehot(labels)) / N, one work item per element. */
__kernel void softmax_cross_entropy_backward(__global const float* restrict probs,
                                             __global const int* restrict labels,
                                             __global float* restrict dlogits,
                                             const int N, const int K, const float inv_n)
{
    const int i = get_global_id(0);
    if (i >= N * K) return;
    const int n = i / K, k = i - n * K;
    dlogits[i] = (probs[i] - (labels[n] == k ? 1.0f : 0.0f)) * inv_n;
}

/* partial[p] = sum of (pred - target)^2 over elements [p * chunk, min((p + 1) * chunk, count)). */
__kernel void mse_forward_partial(__global const float* restrict pred,
                                  __global const float* restrict target,
                                  __global float* restrict partial,
                                  const int count, const int chunk, const int parts)
{
    const int p = get_global_id(0);
    if (p >= parts) return;
    const int start = p * chunk;
    const int end = start + chunk < count ? start + chunk : count;
    float s = 0.0f;
    for (int i = start; i < end; ++i) {
        const float d = pred[i] - target[i];
        s += d * d;
    }
    partial[p] = s;
}

/* out[0] = (sum of values[0 .. count)) * scale, in order, by a single work item. */
__kernel void loss_mean_finish(__global const float* restrict values, __global float* restrict out,
                               const int count, const float scale)
{
    if (get_global_id(0) != 0) return;
    float s = 0.0f;
    for (int i = 0; i < count; ++i) s += values[i];
    out[0] = s * scale;
}

/* grad = 2 * (pred - target) / count, one work item per element. */
__kernel void mse_backward(__global const float* restrict pred, __global const float* restrict target,
                           __global float* restrict grad, const int count, const float scale)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    grad[i] = (pred[i] - target[i]) * scale;
}

/* ---- training step statistics, kept on the device ----
 * The Trainer keeps one (loss, correct count) pair per batch of an epoch in `stats`
 * (float32, stats[2 * slot], stats[2 * slot + 1]) and reads the buffer only now and then, so a
 * step needs no host round trip. Counts stay exact in float32 up to 2^24 per batch. */

/* Fused softmax cross-entropy forward and backward for training, one work item per row n:
 * dlogits = (softmax(z) - onehot(label)) / N, row_loss as softmax_cross_entropy_forward, and
 * row_correct = 1 when the first maximum of the row (numpy argmax) is the label. */
__kernel void softmax_cross_entropy_train(__global const float* restrict logits,
                                          __global const int* restrict labels,
                                          __global float* restrict dlogits,
                                          __global float* restrict row_loss,
                                          __global float* restrict row_correct,
                                          const int N, const int K, const float inv_n)
{
    const int n = get_global_id(0);
    if (n >= N) return;
    __global const float* z = logits + (size_t)n * K;
    __global float* d = dlogits + (size_t)n * K;
    float zmax = z[0];
    int best = 0;
    for (int k = 1; k < K; ++k) {
        if (z[k] > zmax) { zmax = z[k]; best = k; }
    }
    const float sum = exp_shifted_row(z, d, K, zmax);
    const float inv = 1.0f / sum;
    const int label = labels[n];
    for (int k = 0; k < K; ++k) d[k] = (d[k] * inv - (k == label ? 1.0f : 0.0f)) * inv_n;
    row_loss[n] = (label >= 0 && label < K) ? log(sum) - (z[label] - zmax) : NAN;
    row_correct[n] = best == label ? 1.0f : 0.0f;
}

/* stats[2 slot] = (sum of row_loss[0 .. N)) * scale and stats[2 slot + 1] = sum of
 * row_correct, both in order, by a single work item (deterministic). */
__kernel void step_stats_rows(__global const float* restrict row_loss,
                              __global const float* restrict row_correct,
                              __global float* restrict stats, const int slot, const int N,
                              const float scale)
{
    if (get_global_id(0) != 0) return;
    float s = 0.0f, c = 0.0f;
    for (int i = 0; i < N; ++i) {
        s += row_loss[i];
        c += row_correct[i];
    }
    stats[2 * slot] = s * scale;
    stats[2 * slot + 1] = c;
}

/* For any other loss: stats[2 slot] = loss[0], stats[2 slot + 1] = the rows of logits (N, K)
 * whose first maximum is the label (labels NULL-free: pass has_labels = 0 to count none). */
__kernel void step_stats_generic(__global const float* restrict loss,
                                 __global const float* restrict logits,
                                 __global const int* restrict labels,
                                 __global float* restrict stats, const int slot, const int N,
                                 const int K, const int has_labels)
{
    if (get_global_id(0) != 0) return;
    float c = 0.0f;
    for (int n = 0; has_labels && n < N; ++n) {
        __global const float* z = logits + (size_t)n * K;
        int best = 0;
        for (int k = 1; k < K; ++k) best = z[k] > z[best] ? k : best;
        c += best == labels[n] ? 1.0f : 0.0f;
    }
    stats[2 * slot] = loss[0];
    stats[2 * slot + 1] = c;
}
