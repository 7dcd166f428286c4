/* common.h: prepended by clcnn.device to every kernel file before it is built.
 *
 * Activation codes shared by the fused kernels (conv, dense) and activation.cl. A kernel that
 * fuses an activation takes it as the compile-time define ACTIVATION (one of the ACT_ codes)
 * and NEG_SLOPE (LeakyReLU's slope), so the switch below folds away when it is built.
 */
#define ACT_NONE 0
#define ACT_RELU 1
#define ACT_LEAKY_RELU 2
#define ACT_TANH 3
#define ACT_SIGMOID 4

#ifndef ACTIVATION
#define ACTIVATION ACT_NONE
#endif
#ifndef NEG_SLOPE
#define NEG_SLOPE 0.01f
#endif

inline float activate(float v, int act, float slope) {
    if (act == ACT_RELU) return fmax(v, 0.0f);
    if (act == ACT_LEAKY_RELU) return v > 0.0f ? v : v * slope;
    if (act == ACT_TANH) return tanh(v);
    if (act == ACT_SIGMOID) return 1.0f / (1.0f + exp(-v));
    return v;
}

/* d activation / d input, written from the activation's output y (all five are invertible
 * enough for that: LeakyReLU needs slope >= 0, which the layers enforce). */
inline float activate_grad_from_output(float y, int act, float slope) {
    if (act == ACT_RELU) return y > 0.0f ? 1.0f : 0.0f;
    if (act == ACT_LEAKY_RELU) return y > 0.0f ? 1.0f : slope;
    if (act == ACT_TANH) return 1.0f - y * y;
    if (act == ACT_SIGMOID) return y * (1.0f - y);
    return 1.0f;
}

/* out[k] = exp(z[k] - zmax) for k < K, returning their sum: the shifted exponentials of a
 * numerically stable softmax (zmax is the row's maximum, so no term overflows). Shared by
 * softmax in activation.cl and the cross-entropy kernels in loss.cl. */
inline float exp_shifted_row(__global const float* z, __global float* out, int K, float zmax) {
    float sum = 0.0f;
    for (int k = 0; k < K; ++k) {
        const float e = exp(z[k] - zmax);
        out[k] = e;
        sum += e;
    }
    return sum;
}
