/* optim.cl: in-place SGD and Adam parameter updates, as torch.optim.SGD / torch.optim.Adam.
 *
 * Layout: param, grad and the state buffers are flat arrays of `count` floats (any parameter
 * shape; element i of every buffer belongs to the same weight). One work item per element
 * (sgd_update4: per chunk of CHUNK elements of one of four tensors), 1-D, any local size, no
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

/* The same update for up to four tensors in one launch (a launch costs ~15-100 us of host
 * time on PoCL, more than a LeNet parameter's update). Work item q updates the CHUNK elements
 * [CHUNK * (q - first(t)), ...) of tensor t, first0 = 0 <= q < first1 <= ... <= first4 (chunk
 * counts' running sums; an unused slot has count 0 and any buffers): whole chunks per item
 * keep the branch on t out of the element loop (one element per item ran 2x slower).
 * Global size first4. */
#define CHUNK 16        /* clcnn/ops/optim.py's _CHUNK: this file is built without defines */
__kernel void sgd_update4(__global float* restrict p0, __global const float* restrict g0, __global float* restrict b0,
                          __global float* restrict p1, __global const float* restrict g1, __global float* restrict b1,
                          __global float* restrict p2, __global const float* restrict g2, __global float* restrict b2,
                          __global float* restrict p3, __global const float* restrict g3, __global float* restrict b3,
                          const int n0, const int n1, const int n2, const int n3,
                          const int first1, const int first2, const int first3, const int first4,
                          const float lr, const float momentum, const float one_minus_dampening,
                          const float weight_decay, const int use_momentum, const int nesterov,
                          const int first_step)
{
    const int q = get_global_id(0);
    if (q >= first4) return;
    __global float* p = p0; __global const float* g = g0; __global float* b = b0;
    int n = n0, c = q;
    if (q >= first3) { p = p3; g = g3; b = b3; n = n3; c = q - first3; }
    else if (q >= first2) { p = p2; g = g2; b = b2; n = n2; c = q - first2; }
    else if (q >= first1) { p = p1; g = g1; b = b1; n = n1; c = q - first1; }
    const int begin = c * CHUNK, end = min(begin + CHUNK, n);
    for (int i = begin; i < end; ++i)
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
