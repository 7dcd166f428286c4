/* elementwise.cl: the elementwise ops ONNX models need beyond the activations: binary ops with
 * NumPy broadcasting (add, sub, mul, div) and the sum over broadcast axes that their backward
 * needs, Clip, and PReLU (a learnable slope per channel).
 *
 * Broadcasting (binary_forward): the host collapses the output shape and the operands' strides
 * (stride 0 on a broadcast axis) to exactly 6 axes S0..S5 (leading axes of size 1 added), so
 * output element (c0, ..., c5) is flat index ((c0*S1 + c1)*S2 + ...)*S5 + c5 and reads
 * a[sum ci*Ai] and b[sum ci*Bi]. geo holds S0..S5, A0..A5, B0..B5.
 * Work items: a 2-D range (ceil(S5 / 8), S0*S1*S2*S3*S4); item (q, o) decomposes o once and
 * writes elements [8q, 8q + 8) of the innermost run as one float8, so the divisions are paid
 * once per 8. After merging, an operand's innermost stride is 1 or 0 (the merge keeps only
 * axes of size > 1, and a contiguous operand's last such axis has stride 1).
 *
 * sum_to_shape: out (the operand's shape) = scale * the sum of g (the output's shape) over the
 * broadcast axes. The host collapses g's axes into at most 3 kept axes (sizes K0..K2, strides
 * KS0..KS2 in g) and 3 reduced ones (R0..R2, RS0..RS2); one work item per element of out (1-D
 * range, K0*K1*K2 items) loops over the reduced axes, summing in float32 with a compensated
 * (Kahan) sum, since one item may add up a whole tensor (a scalar operand's gradient).
 *
 * Clip and PReLU see the tensor as flat, x[i]; PReLU's channel is (i / inner) % C with inner =
 * H*W (the product of the axes after the channel axis) and C = 1 for one shared slope. Wide
 * 1-D ranges, one element per item, no local memory, no barriers. NaN propagates as in
 * PyTorch: every comparison with NaN is false and each select falls through to the NaN.
 */
#ifndef OP
#define OP 0
#endif
#define OP_ADD 0
#define OP_SUB 1
#define OP_MUL 2
#define OP_DIV 3

inline float binary_op(float a, float b)
{
#if OP == OP_ADD
    return a + b;
#elif OP == OP_SUB
    return a - b;
#elif OP == OP_MUL
    return a * b;
#else
    return a / b;
#endif
}

inline float8 binary_op8(float8 a, float8 b)
{
#if OP == OP_ADD
    return a + b;
#elif OP == OP_SUB
    return a - b;
#elif OP == OP_MUL
    return a * b;
#else
    return a / b;
#endif
}

__kernel void binary_forward(__global const float* a, __global const float* b, __global float* y,
                             __global const int* geo)
{
    const int q = get_global_id(0);
    int o = get_global_id(1);
    const int s5 = geo[5];
    int offa = 0, offb = 0;
    for (int ax = 4; ax >= 0 && o; --ax) {      /* o == 0 (one run, same shapes): nothing to add */
        const int c = o % geo[ax];
        o /= geo[ax];
        offa += c * geo[6 + ax];
        offb += c * geo[12 + ax];
    }
    const int a5 = geo[11], b5 = geo[17];
    __global float* out = y + (size_t)get_global_id(1) * s5;
    if (8 * q + 8 <= s5) {
        /* The innermost stride is 1 or 0 (broadcast): a float8 load or one value, so PoCL
         * runs whole vectors (4-5x faster than 8 scalars at strides it cannot see). */
        const float8 va = a5 ? ULOAD8(a + offa + 8 * q) : (float8)(a[offa]);
        const float8 vb = b5 ? ULOAD8(b + offb + 8 * q) : (float8)(b[offb]);
        USTORE8(binary_op8(va, vb), out + 8 * q);
    } else {
        for (int j = 8 * q; j < s5; ++j)
            out[j] = binary_op(a[offa + j * a5], b[offb + j * b5]);
    }
}

__kernel void sum_to_shape(__global const float* g, __global float* out, __global const int* geo,
                           const float scale)
{
    const int t = get_global_id(0);
    const int k0 = geo[0], k1 = geo[1], k2 = geo[2];
    const int r0 = geo[6], r1 = geo[7], r2 = geo[8];
    if (t >= k0 * k1 * k2) return;
    const int base = (t / (k1 * k2)) * geo[3] + (t / k2 % k1) * geo[4] + (t % k2) * geo[5];
    float sum = 0.0f, comp = 0.0f;
    for (int i = 0; i < r0; ++i)
        for (int j = 0; j < r1; ++j) {
            __global const float* p = g + base + i * geo[9] + j * geo[10];
            for (int l = 0; l < r2; ++l) {
                const float v = p[l * geo[11]] - comp;
                const float s = sum + v;
                comp = (s - sum) - v;
                sum = s;
            }
        }
    out[t] = scale * sum;
}

/* y[0 .. n) = value: an array that starts as zeros inside a training step, as a kernel of
 * clcnn's so that a recorded step (clcnn.replay) replays it too. */
__kernel void fill(__global float* y, const int n, const float value)
{
    const int i = get_global_id(0);
    if (i < n) y[i] = value;
}

/* y = min(max(x, lo), hi), NaN kept; gx = gy where lo <= x <= hi, else 0 (as torch.clamp). */
__kernel void clip_forward(__global const float* x, __global float* y, const int n,
                           const float lo, const float hi)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float v = x[i];
    y[i] = v < lo ? lo : (v > hi ? hi : v);
}

__kernel void clip_backward(__global const float* x, __global const float* gy, __global float* gx,
                            const int n, const float lo, const float hi)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float v = x[i];
    gx[i] = (v >= lo && v <= hi) ? gy[i] : 0.0f;
}

/* y = x > 0 ? x : w[c] * x (a NaN x gives w * NaN = NaN, as torch.prelu). */
__kernel void prelu_forward(__global const float* x, __global const float* w, __global float* y,
                            const int n, const int inner, const int channels)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float v = x[i];
    y[i] = v > 0.0f ? v : w[(i / inner) % channels] * v;
}

/* gx = x > 0 ? gy : w[c] * gy; gwf = x > 0 ? 0 : x * gy, the slope's gradient before
 * sum_to_shape adds it up per channel. */
__kernel void prelu_backward(__global const float* x, __global const float* w, __global const float* gy,
                             __global float* gx, __global float* gwf, const int n, const int inner,
                             const int channels)
{
    const int i = get_global_id(0);
    if (i >= n) return;
    const float v = x[i], g = gy[i];
    const int pos = v > 0.0f;
    gx[i] = pos ? g : w[(i / inner) % channels] * g;
    gwf[i] = pos ? 0.0f : v * g;
}
