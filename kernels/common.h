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
#define ACT_RELU6 5

#ifndef ACTIVATION
#define ACTIVATION ACT_NONE
#endif
#ifndef NEG_SLOPE
#define NEG_SLOPE 0.01f
#endif

/* NaN in, NaN out, as in PyTorch: every comparison with a NaN is false, so each select below
 * is written to fall through to v when its test fails (fmax(NaN, 0) would give 0). A -0.0
 * stays -0.0, as torch.relu leaves it. */
inline float activate(float v, int act, float slope) {
    if (act == ACT_RELU) return v < 0.0f ? 0.0f : v;
    if (act == ACT_LEAKY_RELU) return v > 0.0f ? v : v * slope;
    if (act == ACT_RELU6) return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
    if (act == ACT_TANH) return tanh(v);
    if (act == ACT_SIGMOID) return 1.0f / (1.0f + exp(-v));
    return v;
}

/* gx = dL/d(activation input) from gy and the activation's output y (LeakyReLU needs
 * slope >= 0, which the layers enforce, for y's sign to be x's). The piecewise-linear ones
 * select as PyTorch's backward does: relu passes gy unless y <= 0, relu6 unless y <= 0 or
 * y >= 6, so a NaN y passes gy, and a NaN gy where the gradient is 0 gives 0, not 0 * NaN. */
inline float activate_backward(float gy, float y, int act, float slope) {
    if (act == ACT_RELU) return y <= 0.0f ? 0.0f : gy;
    if (act == ACT_LEAKY_RELU) return y > 0.0f ? gy : gy * slope;
    if (act == ACT_RELU6) return (y <= 0.0f || y >= 6.0f) ? 0.0f : gy;
    if (act == ACT_TANH) return gy * (1.0f - y * y);
    if (act == ACT_SIGMOID) return gy * (y * (1.0f - y));
    return gy;
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

/* PoCL's CPU driver (pip's 3.0) calls builtins such as fma, vload8, vstore8, min and tanh out
 * of line (a function call per use: 3x slower in the hot loops), so the kernels use none
 * there: a * b + c contracts to an FMA (FP_CONTRACT is on by default in OpenCL C), MIN is a
 * plain select, and a float8 built from or stored to eight adjacent scalars compiles to one
 * unaligned vector access. */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
/* Helpers that must inline: LLVM keeps a large `inline` function as a call (spilling the
 * caller's vector registers around it) when its heuristics say so, and they say so
 * differently from one PoCL to the next: Debian's PoCL 3.1 (LLVM 15) called depthwise.cl's
 * checked row loader out of line, 3x slower in MobileNet's stride-1 weight gradients, where
 * pip's 3.0 (LLVM 14) inlined it. */
#define ALWAYS_INLINE inline __attribute__((always_inline))
/* a / d for 0 <= a < 2**31, d > 0 and a quotient below 2**20: a float estimate (within 0.5
 * of a / d there, with 1.0f / d's 2.5 ulp), corrected once. Integer division does not
 * vectorise: PoCL divides lane by lane, tens of cycles a lane (Winograd's output transform,
 * two divisions per tile: 0.49-0.60 ms against 0.30-0.37 without them). */
inline int quotient(const int a, const int d)
{
    const int q = (int)((float)a * (1.0f / (float)d));
    const int r = a - q * d;
    return q + (r >= d) - (r < 0);
}
/* Lane l (a constant once the loops unroll) of a float2 ... float16, taken in registers: storing
 * a vector to a private array and reading it back lane by lane stalls on store forwarding
 * (conv2d_forward's channel stores, 16 -> 32 3x3 at 32x32, batch 64: 2.67-2.72 ms against
 * 2.37). */
#define LANE2(v, l) ((l) == 0 ? (v).s0 : (v).s1)
#define LANE4(v, l) ((l) < 2 ? LANE2((v).lo, l) : LANE2((v).hi, (l) - 2))
#define LANE8(v, l) ((l) < 4 ? LANE4((v).lo, l) : LANE4((v).hi, (l) - 4))
#define LANE16(v, l) ((l) < 8 ? LANE8((v).lo, l) : LANE8((v).hi, (l) - 8))
#define LOAD8(p) ((float8)((p)[0], (p)[1], (p)[2], (p)[3], (p)[4], (p)[5], (p)[6], (p)[7]))
#define STORE8(v, p) do { (p)[0] = (v).s0; (p)[1] = (v).s1; (p)[2] = (v).s2; (p)[3] = (v).s3; \
                          (p)[4] = (v).s4; (p)[5] = (v).s5; (p)[6] = (v).s6; (p)[7] = (v).s7; } while (0)

/* float8 and float16 accesses through pointers of 4-byte alignment: one unaligned vector
 * load or store each, where pip's PoCL calls vload8 / vstore8 out of line. */
typedef float8 float8_unaligned __attribute__((aligned(4)));
typedef float16 float16_unaligned __attribute__((aligned(4)));
#define ULOAD8(p) (*(const __global float8_unaligned*)(p))
#define USTORE8(v, p) (*(__global float8_unaligned*)(p) = (v))

/* An 8 x 8 transpose in registers, r[p] lane c becoming r[c] lane p (conv2d.cl: channels of
 * pixels into rows of channels; pool.cl the other way): interleave pairs, then pairs of pairs,
 * then swap the 128-bit halves (the unpack / shuffle / permute of an AVX transpose). */
inline void transpose8x8(float8* r)
{
    float8 t[8], u[8];
    #pragma unroll
    for (int k = 0; k < 8; k += 2) {
        t[k] = (float8)(r[k].s0, r[k + 1].s0, r[k].s1, r[k + 1].s1, r[k].s4, r[k + 1].s4, r[k].s5, r[k + 1].s5);
        t[k + 1] = (float8)(r[k].s2, r[k + 1].s2, r[k].s3, r[k + 1].s3, r[k].s6, r[k + 1].s6, r[k].s7, r[k + 1].s7);
    }
    #pragma unroll
    for (int k = 0; k < 8; k += 4) {
        u[k] = (float8)(t[k].s01, t[k + 2].s01, t[k].s45, t[k + 2].s45);
        u[k + 1] = (float8)(t[k].s23, t[k + 2].s23, t[k].s67, t[k + 2].s67);
        u[k + 2] = (float8)(t[k + 1].s01, t[k + 3].s01, t[k + 1].s45, t[k + 3].s45);
        u[k + 3] = (float8)(t[k + 1].s23, t[k + 3].s23, t[k + 1].s67, t[k + 3].s67);
    }
    #pragma unroll
    for (int c = 0; c < 4; c++) {
        r[c] = (float8)(u[c].lo, u[c + 4].lo);
        r[c + 4] = (float8)(u[c].hi, u[c + 4].hi);
    }
}

/* The 16 lane sums of 16 float16 accumulators at once: each step adds the two halves of pairs
 * of vectors, packed into one (halves of 8, 4, 2 lanes, then single lanes), so 15 vector adds
 * and their shuffles make all 16 totals, where a tree per accumulator takes 4 each. Slot s's
 * total comes out in lane (s with its low three bits reversed): keep the accumulator of
 * result l in slot SLOT16(l) (the reversal is its own inverse) and result l is lane l.
 * Always inlined: as a plain `inline` pip's PoCL called it, its 16 accumulators stored to the
 * stack and read back around the call (LeNet-5's conv2 backward at batch 256, with
 * conv2d_sums.cl's input gradient: 1.66 -> 1.53 ms; its training step 1.02x, inference, whose
 * dense layers run gemm_nt, 1.04-1.12x). */
#define SLOT16(p) ((((p) & 1) << 2) | ((p) & 2) | (((p) >> 2) & 1) | ((p) & 8))
ALWAYS_INLINE float16 lane_sums16(const float16* a)
{
    float16 u[8], v[4], w[2];
    #pragma unroll
    for (int k = 0; k < 8; k++)
        u[k] = (float16)(a[2 * k].lo, a[2 * k + 1].lo) + (float16)(a[2 * k].hi, a[2 * k + 1].hi);
    #pragma unroll
    for (int k = 0; k < 4; k++)
        v[k] = (float16)(u[2 * k].s0123, u[2 * k + 1].s0123, u[2 * k].s89ab, u[2 * k + 1].s89ab)
             + (float16)(u[2 * k].s4567, u[2 * k + 1].s4567, u[2 * k].scdef, u[2 * k + 1].scdef);
    #pragma unroll
    for (int k = 0; k < 2; k++)
        w[k] = (float16)(v[2 * k].s01, v[2 * k + 1].s01, v[2 * k].s45, v[2 * k + 1].s45,
                         v[2 * k].s89, v[2 * k + 1].s89, v[2 * k].scd, v[2 * k + 1].scd)
             + (float16)(v[2 * k].s23, v[2 * k + 1].s23, v[2 * k].s67, v[2 * k + 1].s67,
                         v[2 * k].sab, v[2 * k + 1].sab, v[2 * k].sef, v[2 * k + 1].sef);
    return (float16)(w[0].even, w[1].even) + (float16)(w[0].odd, w[1].odd);
}

/* Vector forms for kernels that choose their own vector type T (float2 ... float16), which
 * each such file instantiates after defining it: DEFINE_TANHV(T) defines T tanhv(T), tanh as
 * Eigen's rational approximation (odd degree 13 over even degree 6, inputs clamped to
 * +-7.9053): within 4e-7 of tanh, pure multiply-adds and one divide, where PoCL's tanh
 * builtin costs ~40 cycles per float8 (it dominated LeNet-5's conv1 and dense forwards); a
 * NaN fails both clamps and stays NaN. DEFINE_ACTIVATEV(T) defines T activatev(T, act, slope),
 * activate() above on a vector (the ternaries select per lane; a NaN lane fails every
 * comparison and falls through to v); DEFINE_ACTIVATE_BACKWARDV(T) likewise activate_backward(). Macros rather than functions because OpenCL C 1.2 has
 * no overloading of user functions by vector width. */
#define DEFINE_TANHV(T)                                                                       \
inline T tanhv(T x) {                                                                         \
    const float clamp = 7.90531110763549805f;                                                 \
    x = x > clamp ? (T)(clamp) : x;                                                           \
    x = x < -clamp ? (T)(-clamp) : x;                                                         \
    const T x2 = x * x;                                                                       \
    T p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;                                \
    p = p * x2 + -8.60467152213735e-11f;                                                      \
    p = p * x2 + 5.12229709037114e-08f;                                                       \
    p = p * x2 + 1.48572235717979e-05f;                                                       \
    p = p * x2 + 6.37261928875436e-04f;                                                       \
    p = p * x2 + 4.89352455891786e-03f;                                                       \
    T q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;                                 \
    q = q * x2 + 2.26843463243900e-03f;                                                       \
    q = q * x2 + 4.89352518554385e-03f;                                                       \
    return x * p / q;                                                                         \
}
#define DEFINE_ACTIVATEV(T)                                                                   \
inline T activatev(T v, int act, float slope) {                                               \
    if (act == ACT_RELU) return v < 0.0f ? (T)(0.0f) : v;                                     \
    if (act == ACT_LEAKY_RELU) return v > 0.0f ? v : v * slope;                               \
    if (act == ACT_RELU6) return v < 0.0f ? (T)(0.0f) : (v > 6.0f ? (T)(6.0f) : v);           \
    if (act == ACT_TANH) return tanhv(v);                                                     \
    if (act == ACT_SIGMOID) return 1.0f / (1.0f + exp(-v));                                   \
    return v;                                                                                 \
}
#define DEFINE_ACTIVATE_BACKWARDV(T)                                                          \
inline T activate_backwardv(T gy, T y, int act, float slope) {                                \
    if (act == ACT_RELU) return y <= 0.0f ? (T)(0.0f) : gy;                                   \
    if (act == ACT_LEAKY_RELU) return y > 0.0f ? gy : gy * slope;                             \
    if (act == ACT_RELU6) return (y <= 0.0f || y >= 6.0f) ? (T)(0.0f) : gy;                   \
    if (act == ACT_TANH) return gy * (1.0f - y * y);                                          \
    if (act == ACT_SIGMOID) return gy * (y * (1.0f - y));                                     \
    return gy;                                                                                \
}
