/* optim.cl: in-place SGD and Adam parameter updates, as torch.optim.SGD / torch.optim.Adam.
 *
 * Layout: param, grad and the state buffers are flat arrays of `count` floats (any parameter
 * shape; element i of every buffer belongs to the same weight). One work item per element
 * (sgd_update_group: per chunk of CHUNK elements of one of twelve tensors), 1-D, any local size, no
 * local memory. Hyperparameters are kernel arguments, not defines, so a
 * learning-rate schedule never triggers a rebuild. 1 - beta and 1 - dampening come from the host,
 * computed in double as torch does: 1 - (float)0.999 is 1.3e-5 off 0.001 in float32.
 */

/* SGD: g = grad + wd * p; with momentum, buf = g on the first step else
 * momentum * buf + (1 - dampening) * g, and g = g + momentum * buf (nesterov) or buf;
 * p -= lr * g. use_momentum == 0 leaves momentum_buf untouched (it may be any buffer). */
inline void sgd_element(__global float* restrict param, __global const float* restrict grad,
                        __global float* restrict momentum_buf, const int i,
                        const float lr, const float momentum, const float one_minus_dampening,
                        const float weight_decay, const int use_momentum, const int nesterov,
                        const int first_step)
{
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f) g += weight_decay * p;
    if (use_momentum) {
        const float b = first_step ? g : momentum * momentum_buf[i] + one_minus_dampening * g;
        momentum_buf[i] = b;
        g = nesterov ? g + momentum * b : b;
    }
    param[i] = p - lr * g;
}

__kernel void sgd_update(__global float* restrict param, __global const float* restrict grad,
                         __global float* restrict momentum_buf, const int count,
                         const float lr, const float momentum, const float one_minus_dampening,
                         const float weight_decay, const int use_momentum, const int nesterov,
                         const int first_step)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    sgd_element(param, grad, momentum_buf, i, lr, momentum, one_minus_dampening, weight_decay,
                use_momentum, nesterov, first_step);
}

/* The same update for up to GROUP = 12 tensors in one launch (a launch costs ~5-15 us of
 * host and queue time on PoCL, more than a LeNet parameter's update; twelve take LeNet-5's ten
 * tensors in one launch, ResNet-20's 65 in six). Work item q updates the CHUNK elements
 * [CHUNK * (q - first_t), ...) of tensor t, where first_0 = 0 <= q < first_{t+1} (chunk
 * counts' running sums; an unused slot has count 0 and any buffers): whole chunks per item
 * keep the branch on t out of the element loop (one element per item ran 2x slower).
 * Global size first_12. */
#define CHUNK 16        /* clcnn/ops/optim.py's _CHUNK: this file is built without defines */
#define SGD_SLOT_ARGS(t) __global float* restrict p##t, __global const float* restrict g##t, \
                         __global float* restrict b##t, const int n##t, const int first##t,
/* slot t when q lies at or past its first chunk: the slots are tested from the last down */
#define SGD_PICK(t) else if (q >= first##t) { p = p##t; g = g##t; b = b##t; n = n##t; c = q - first##t; }
__kernel void sgd_update_group(SGD_SLOT_ARGS(11) SGD_SLOT_ARGS(10) SGD_SLOT_ARGS(9) SGD_SLOT_ARGS(8)
                               SGD_SLOT_ARGS(7) SGD_SLOT_ARGS(6) SGD_SLOT_ARGS(5) SGD_SLOT_ARGS(4)
                               SGD_SLOT_ARGS(3) SGD_SLOT_ARGS(2) SGD_SLOT_ARGS(1) SGD_SLOT_ARGS(0)
                               const int end, const float lr, const float momentum,
                               const float one_minus_dampening, const float weight_decay,
                               const int use_momentum, const int nesterov, const int first_step)
{
    const int q = get_global_id(0);
    if (q >= end) return;
    __global float* p;
    __global const float* g;
    __global float* b;
    int n, c;
    if (0) {}
    SGD_PICK(11) SGD_PICK(10) SGD_PICK(9) SGD_PICK(8) SGD_PICK(7) SGD_PICK(6)
    SGD_PICK(5) SGD_PICK(4) SGD_PICK(3) SGD_PICK(2) SGD_PICK(1)
    else { p = p0; g = g0; b = b0; n = n0; c = q; }
    const int begin = c * CHUNK, stop = min(begin + CHUNK, n);
    for (int i = begin; i < stop; ++i)
        sgd_element(p, g, b, i, lr, momentum, one_minus_dampening, weight_decay, use_momentum,
                    nesterov, first_step);
}

/* Adam with L2 weight decay (not AdamW), written as torch computes it:
 * m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= step_size * m / (sqrt(v) / bc2_sqrt + eps), with step_size = lr / (1 - b1^t) and
 * bc2_sqrt = sqrt(1 - b2^t) computed on the host in double precision. */
__kernel void adam_update(__global float* restrict param, __global const float* restrict grad,
                          __global float* restrict exp_avg, __global float* restrict exp_avg_sq,
                          const int count, const float beta1, const float beta2,
                          const float one_minus_beta1, const float one_minus_beta2, const float eps,
                          const float weight_decay, const float step_size, const float bc2_sqrt)
{
    const int i = get_global_id(0);
    if (i >= count) return;
    const float p = param[i];
    float g = grad[i];
    if (weight_decay != 0.0f) g += weight_decay * p;
    const float m = beta1 * exp_avg[i] + one_minus_beta1 * g;
    const float v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p - step_size * (m / (sqrt(v) / bc2_sqrt + eps));
}
