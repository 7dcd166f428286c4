/* optim.cl: in-place SGD and Adam parameter updates, as torch.optim.SGD / torch.optim.Adam.
 *
 * Layout: param, grad and the state buffers are flat arrays of `count` floats (any parameter
 * shape; element i of every buffer belongs to the same weight). One work item per element,
 * 1-D, any local size, no local memory. Hyperparameters are kernel arguments, not defines, so a
 * learning-rate schedule never triggers a rebuild. 1 - beta and 1 - dampening come from the host,
 * computed in double as torch does: 1 - (float)0.999 is 1.3e-5 off 0.001 in float32.
 */

/* SGD: g = grad + wd * p; with momentum, buf = g on the first step else
 * momentum * buf + (1 - dampening) * g, and g = g + momentum * buf (nesterov) or buf;
 * p -= lr * g. use_momentum == 0 leaves momentum_buf untouched (it may be any buffer). */
__kernel void sgd_update(__global float* restrict param, __global const float* restrict grad,
                         __global float* restrict momentum_buf, const int count,
                         const float lr, const float momentum, const float one_minus_dampening,
                         const float weight_decay, const int use_momentum, const int nesterov,
                         const int first_step)
{
    const int i = get_global_id(0);
    if (i >= count) return;
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
