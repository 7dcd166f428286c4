/* gemm.cl: C = op(A) @ op(B) for row-major float32 matrices, with an optional fused bias and
 * activation (the Dense layer's forward), and the bias-gradient column sum.
 *
 * Layout (row-major, no leading-dimension padding):
 *   op(A) is M x K: A is stored (M, K) and op(A)[m, k] = A[m*K + k], or with TRANS_A it is
 *                   stored (K, M) and op(A)[m, k] = A[k*M + m];
 *   op(B) is K x N: B is stored (K, N) and op(B)[k, n] = B[k*N + n], or with TRANS_B it is
 *                   stored (N, K) and op(B)[k, n] = B[n*K + k];
 *   C is (M, N):    C[m*N + n].
 * A Dense layer's y = x @ w.T is the TRANS_B case (x (batch, in), w (out, in), both
 * contiguous along k), its gx = gy @ w the plain case and its gw = gy.T @ x the TRANS_A case.
 *
 * Work-group assumptions: CPU-style register blocking, no local memory and no barriers, any
 * local size (the host passes a fixed small one so PoCL compiles one work-group function, not
 * one per shape). Each work item owns a block of C:
 *   gemm_block: TM rows x 8*NV columns, outer-product form, for every layout but (not TRANS_A,
 *     TRANS_B). Per k it loads NV float8 row segments of op(B) and TM scalars of op(A), and does
 *     TM*NV float8 FMAs. Global size (ceil(N / (8*NV)), ceil(M / TM)). With TRANS_B (only the
 *     TT case lands here, unused by Dense) op(B)'s row segment is a strided gather: correct, slow.
 *   gemm_block_nt: TM rows x TN columns, dot-product form, for (not TRANS_A, TRANS_B), where
 *     both operands are contiguous along k: TM x TN float8 accumulators along k, summed at the end.
 *     Global size (ceil(N / TN), ceil(M / TM)).
 * Edges: rows and columns past M or N are loaded from a clamped (valid) index and never
 * stored, so only the float8 loads along n in gemm_block need a checked slow path, taken by the
 * last column block alone; a K that is not a multiple of 8 gets a scalar tail loop.
 * Every C element is summed in a fixed order: results are deterministic.
 */

#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif
#ifndef TM
#define TM 6
#endif
#ifndef TN
#define TN 2
#endif
#ifndef NV
#define NV 2
#endif
#ifndef HAS_BIAS
#define HAS_BIAS 0
#endif

/* PoCL's CPU driver (pip's 3.0) calls builtins such as fma, vload8 and min out of line (a
 * function call per use: 3x slower here), so the hot loops use none: a * b + c contracts to an
 * FMA (FP_CONTRACT is on by default in OpenCL C), and a float8 built from eight adjacent scalars
 * compiles to one unaligned vector load. The register-block loops carry #pragma unroll: without
 * it PoCL keeps the accumulators in memory (another 2-3x). */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define LOAD8(p) ((float8)((p)[0], (p)[1], (p)[2], (p)[3], (p)[4], (p)[5], (p)[6], (p)[7]))

#if TRANS_A
#define A_AT(m, k) A[(size_t)(k) * M + (m)]
#else
#define A_AT(m, k) A[(size_t)(m) * K + (k)]
#endif
#if TRANS_B
#define B_AT(k, n) B[(size_t)(n) * K + (k)]
#else
#define B_AT(k, n) B[(size_t)(k) * N + (n)]
#endif

/* Bias, activation and store of one float value of C. */
inline float epilogue(float v, __global const float* bias, int n) {
#if HAS_BIAS
    v += bias[n];
#endif
    return activate(v, ACTIVATION, NEG_SLOPE);
}

__kernel void gemm_block(__global const float* restrict A, __global const float* restrict B,
                         __global float* restrict C, __global const float* restrict bias,
                         const int M, const int N, const int K)
{
    const int n0 = get_global_id(0) * (8 * NV);
    const int m0 = get_global_id(1) * TM;
    if (n0 >= N || m0 >= M) return;

    int rows[TM];
    #pragma unroll
    for (int i = 0; i < TM; ++i) rows[i] = MIN(m0 + i, M - 1);
    float8 acc[TM][NV];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int v = 0; v < NV; ++v) acc[i][v] = (float8)(0.0f);

    if (!TRANS_B && n0 + 8 * NV <= N) {
        /* interior: NV contiguous float8 of B's row k */
        for (int k = 0; k < K; ++k) {
            float8 b[NV];
            #pragma unroll
            for (int v = 0; v < NV; ++v) b[v] = LOAD8(B + (size_t)k * N + n0 + 8 * v);
            #pragma unroll
            for (int i = 0; i < TM; ++i) {
                const float a = A_AT(rows[i], k);
                #pragma unroll
                for (int v = 0; v < NV; ++v) acc[i][v] += a * b[v];
            }
        }
    } else {
        /* last column block (or TRANS_B): gather with clamped column indices */
        int cols[8 * NV];
        #pragma unroll
        for (int j = 0; j < 8 * NV; ++j) cols[j] = MIN(n0 + j, N - 1);
        for (int k = 0; k < K; ++k) {
            float8 b[NV];
            #pragma unroll
            for (int v = 0; v < NV; ++v) {
                const int* c = cols + 8 * v;
                b[v] = (float8)(B_AT(k, c[0]), B_AT(k, c[1]), B_AT(k, c[2]), B_AT(k, c[3]),
                                B_AT(k, c[4]), B_AT(k, c[5]), B_AT(k, c[6]), B_AT(k, c[7]));
            }
            #pragma unroll
            for (int i = 0; i < TM; ++i) {
                const float a = A_AT(rows[i], k);
                #pragma unroll
                for (int v = 0; v < NV; ++v) acc[i][v] += a * b[v];
            }
        }
    }

    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        if (m0 + i >= M) break;
        __global float* c = C + (size_t)(m0 + i) * N + n0;
        #pragma unroll
        for (int v = 0; v < NV; ++v) {
            const float8 x = acc[i][v];
            const float out[8] = {x.s0, x.s1, x.s2, x.s3, x.s4, x.s5, x.s6, x.s7};
            #pragma unroll
            for (int j = 0; j < 8; ++j)
                if (n0 + 8 * v + j < N) c[8 * v + j] = epilogue(out[j], bias, n0 + 8 * v + j);
        }
    }
}

#define HSUM8(v) ((((v).s0 + (v).s4) + ((v).s1 + (v).s5)) + (((v).s2 + (v).s6) + ((v).s3 + (v).s7)))

__kernel void gemm_block_nt(__global const float* restrict A, __global const float* restrict B,
                            __global float* restrict C, __global const float* restrict bias,
                            const int M, const int N, const int K)
{
    const int n0 = get_global_id(0) * TN;
    const int m0 = get_global_id(1) * TM;
    if (n0 >= N || m0 >= M) return;

    /* row pointers of A (M, K) and B (N, K), clamped to valid rows */
    __global const float* a[TM];
    __global const float* b[TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i) a[i] = A + (size_t)MIN(m0 + i, M - 1) * K;
    #pragma unroll
    for (int j = 0; j < TN; ++j) b[j] = B + (size_t)MIN(n0 + j, N - 1) * K;

    float8 acc[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = (float8)(0.0f);

    const int k8 = K & ~7;
    for (int k = 0; k < k8; k += 8) {
        float8 bv[TN];
        #pragma unroll
        for (int j = 0; j < TN; ++j) bv[j] = LOAD8(b[j] + k);
        #pragma unroll
        for (int i = 0; i < TM; ++i) {
            const float8 av = LOAD8(a[i] + k);
            #pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] += av * bv[j];
        }
    }

    float sum[TM][TN];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int j = 0; j < TN; ++j) sum[i][j] = HSUM8(acc[i][j]);
    for (int k = k8; k < K; ++k)
        #pragma unroll
        for (int i = 0; i < TM; ++i)
            #pragma unroll
            for (int j = 0; j < TN; ++j) sum[i][j] += a[i][k] * b[j][k];

    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        if (m0 + i >= M) break;
        __global float* c = C + (size_t)(m0 + i) * N + n0;
        #pragma unroll
        for (int j = 0; j < TN; ++j)
            if (n0 + j < N) c[j] = epilogue(sum[i][j], bias, n0 + j);
    }
}

/* gb[n] = sum over rows m of G[m, n] for G (M, N): one work item per column, rows summed in
 * order (deterministic, no atomics). Global size (N). */
__kernel void dense_backward_bias(__global const float* restrict G, __global float* restrict gb,
                                  const int M, const int N)
{
    const int n = get_global_id(0);
    if (n >= N) return;
    float s = 0.0f;
    for (int m = 0; m < M; ++m) s += G[(size_t)m * N + n];
    gb[n] = s;
}
