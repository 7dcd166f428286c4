/* gemm.cl: C = op(A) @ B for row-major float32 matrices, with an optional fused bias and
 * activation (the Dense layer's forward) and optional row sums of op(A) (its bias gradient),
 * the packing copy that turns every other layout into this one, and the pointwise (1x1)
 * convolutions of NCHW batches as one such product per image (at the end of the file).
 *
 * Layout (row-major):
 *   op(A) is M x K: A is stored (M, K) and op(A)[m, k] = A[m*K + k], or in the _ta kernels
 *                   it is stored (K, M) and op(A)[m, k] = A[k*M + m];
 *   B is (K, N):    B[k*LDB + n], LDB = N unless b_padded;
 *   C is (M, N):    C[m*N + n].
 * A Dense layer's y = x @ w.T runs on CPUs on w as stored (gemm_nt, dot products along K),
 * elsewhere on w transposed by gemm_pack once per call (w is (out, in), at most a few hundred
 * KB); its gx = gy @ w is the plain case, and its gw = gy.T @ x
 * the transposed one, with gb = the row sums of gy.T from the same pass (both in one launch,
 * dense_backward_pair).
 *
 * Work-group assumptions: CPU-style register blocking, no local memory and no barriers, any
 * local size. gemm_block's work item owns TM rows x NB = VW*NV columns of C, outer-product
 * form: per k it loads NV vectors of B's row k and TM scalars of op(A) and does TM*NV vector
 * FMAs. Global size (ceil(N / NB), ceil(M / TM)). VW is 8 (float8) or 16 (float16, where the
 * device prefers it: AVX-512).
 * Edges: rows past M are read from a clamped (valid) row and never stored. Columns: without
 * b_padded (N >= NB) the last column block starts at N - NB and overlaps its neighbour, whose
 * columns it recomputes with the same operations in the same order (both store identical
 * values), so every load and store is a whole vector. With b_padded (a transposed or narrow B,
 * packed by gemm_pack) B's rows hold LDB >= ceil(N / NB) * NB columns, zero past N, and only
 * the stores of the last partial vector are checked lane by lane.
 * Every C element is summed in k order: results are deterministic.
 */

#ifndef TM
#define TM 6
#endif
#ifndef VW
#define VW 8
#endif
#ifndef NV
#define NV 2
#endif
#define NB (VW * NV)

/* MIN, LOAD8 and STORE8 come from common.h (PoCL calls the builtins out of line). The
 * register-block loops carry #pragma unroll: without it PoCL keeps the accumulators in memory
 * (2-3x slower). */
#if VW == 16
#define VEC float16
#define LOADV(p) ((float16)(LOAD8(p), LOAD8((p) + 8)))
#define STOREV(v, p) do { STORE8((v).lo, p); STORE8((v).hi, (p) + 8); } while (0)
#else
#define VEC float8
#define LOADV(p) LOAD8(p)
#define STOREV(v, p) STORE8(v, p)
#endif

/* tanhv and activatev (common.h) on this file's vectors: PoCL's scalar tanh builtin took 60%
 * of a LeNet dense forward. */
DEFINE_TANHV(VEC)
DEFINE_ACTIVATEV(VEC)
DEFINE_ACTIVATE_BACKWARDV(VEC)

/* One k step: acc[i][v] += op(A)[row i, k] * B[k, block v]; with sums, rs[i] += op(A)[row i, k]. */
#define GEMM_STEP(k, WITH_SUMS) do { \
        VEC bv[NV]; \
        _Pragma("unroll") for (int v = 0; v < NV; ++v) bv[v] = LOADV(B + (size_t)(k) * LDB + n0 + VW * v); \
        _Pragma("unroll") for (int i = 0; i < TM; ++i) { \
            const float a = a_row[i][(size_t)(k) * a_step]; \
            if (WITH_SUMS) rs[i] += a; \
            _Pragma("unroll") for (int v = 0; v < NV; ++v) acc[i][v] = a * bv[v] + acc[i][v]; \
        } \
    } while (0)

/* C = act(op(A) @ B + bias) (bias when has_bias, one per column, or with bias_rows one per
 * row; act an ACT_ code of common.h, slope LeakyReLU's), or with y_act (another ACT_ code; act
 * and bias unused) C = (op(A) @ B) times the derivative of that activation at its output
 * Y (M, N), as activate_backward: the input gradient of a Dense layer whose input is an
 * activation's output. With add_y (and y_act ACT_NONE) C = act(op(A) @ B + bias + Y): a
 * residual added before the activation (an eval-mode convolution run into the Add after it,
 * pointwise_forward). With row_sums the first
 * column block also writes row_sums[m] = sum over k of op(A)[m, k] (summed in k order). The
 * work item's block: rows by*TM.., columns bx*NB.. B's rows are LDB apart: LDB = N (and N >= NB) unless
 * b_padded. trans_a, with_sums and act are constants in each kernel below, which LLVM folds
 * into its one call, while one build of this file (per blocking) holds every case: LeNet-5's
 * dense layers and their gradients took four builds when these were -D defines, 0.2-0.5 s
 * each on a cold cache. Plain `static inline`: always_inline made the build inline and
 * optimise nine copies, 1.0-1.4 s against 0.4, and the kernels ran even (fastest of 200). */
static inline void gemm_block_body(__global const float* restrict A, __global const float* restrict B,
                                   __global float* restrict C, __global const float* restrict bias,
                                   __global float* restrict row_sums, const int M, const int N, const int K,
                                   const int LDB, const int b_padded, const int has_bias, const float slope,
                                   const int trans_a, const int with_sums, const int act,
                                   const int bx, const int by, __global const float* restrict Y,
                                   const int y_act, const int bias_rows, const int add_y)
{
    const int m0 = by * TM;
    if (m0 >= M || bx * NB >= N) return;
    const int n0 = b_padded ? bx * NB : MIN(bx * NB, N - NB);

    /* row pointers, not row indices: with indices PoCL computes the TM addresses in a vector
     * register and extracts them one by one in every k step; op(A)[m, k] = a_row[m][k * a_step] */
    const int a_step = trans_a ? M : 1;
    __global const float* a_row[TM];
    #pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = MIN(m0 + i, M - 1);
        a_row[i] = trans_a ? A + m : A + (size_t)m * K;
    }
    VEC acc[TM][NV];
    #pragma unroll
    for (int i = 0; i < TM; ++i)
        #pragma unroll
        for (int v = 0; v < NV; ++v) acc[i][v] = (VEC)(0.0f);

    if (with_sums && bx == 0) {
        float rs[TM];
        #pragma unroll
        for (int i = 0; i < TM; ++i) rs[i] = 0.0f;
        for (int k = 0; k < K; ++k) GEMM_STEP(k, 1);
        #pragma unroll
        for (int i = 0; i < TM; ++i)
            if (m0 + i < M) row_sums[m0 + i] = rs[i];
    } else {
        float rs[TM];   /* unused: GEMM_STEP's WITH_SUMS branch folds away */
        for (int k = 0; k < K; ++k) GEMM_STEP(k, 0);
    }

    #pragma unroll
    for (int v = 0; v < NV; ++v) {
        const int c0 = n0 + VW * v;
        if (c0 >= N) break;
        if (!b_padded || c0 + VW <= N) {
            if (y_act != ACT_NONE) {
                /* the rows past M read row M-1 of Y, and store nothing */
                VEC g[TM];
                #pragma unroll
                for (int i = 0; i < TM; ++i)
                    g[i] = activate_backwardv(acc[i][v], LOADV(Y + (size_t)MIN(m0 + i, M - 1) * N + c0), y_act,
                                              slope);
                #pragma unroll
                for (int i = 0; i < TM; ++i)
                    if (m0 + i < M) STOREV(g[i], C + (size_t)(m0 + i) * N + c0);
            } else {
                const VEC bb = has_bias && !bias_rows ? LOADV(bias + c0) : (VEC)(0.0f);
                #pragma unroll
                for (int i = 0; i < TM; ++i) {
                    const VEC bi = has_bias && bias_rows ? (VEC)(bias[MIN(m0 + i, M - 1)]) : bb;
                    const VEC r = add_y ? LOADV(Y + (size_t)MIN(m0 + i, M - 1) * N + c0) : (VEC)(0.0f);
                    if (m0 + i < M) STOREV(activatev(acc[i][v] + bi + r, act, slope), C + (size_t)(m0 + i) * N + c0);
                }
            }
        } else {
            /* the last, partial vector of a padded B: lanes past N are neither read nor stored.
             * Rows finished and stored by loops left rolled: unrolled, the TM x VW checked stores
             * of each kernel doubled its compile (0.3 -> 0.6 s on a cold cache), for a block or
             * two per row, and the TM activations made the loop over v too big for LLVM to
             * unroll with float16 lanes and NV >= 2 (clang's "loop not unrolled" warning reached
             * the console on every cold build). y_act, add_y and bias_rows come only with an
             * unpadded B (pointwise_*, dense_backward_pair): no partial vectors. */
            float bs[VW];
            #pragma unroll
            for (int j = 0; j < VW; ++j) bs[j] = has_bias ? bias[MIN(c0 + j, N - 1)] : 0.0f;
            const VEC bb = LOADV(bs);
            float out[TM][VW];
            #pragma unroll
            for (int i = 0; i < TM; ++i)
                STOREV(acc[i][v] + bb, out[i]);
            #pragma unroll 1
            for (int i = 0; i < MIN(TM, M - m0); ++i) {
                STOREV(activatev(LOADV(out[i]), act, slope), out[i]);
                #pragma unroll 1
                for (int j = 0; j < N - c0; ++j) C[(size_t)(m0 + i) * N + c0 + j] = out[i][j];
            }
        }
    }
}

/* The kernels: gemm_block[_ta][_sums] (op(A) = A.T with _ta, row sums with _sums) and
 * gemm_block_<activation> (the Dense forward's fused activation). Every work item owns TM rows
 * x NB columns of C; global size (ceil(N / NB), ceil(M / TM)). */
#define GEMM_KERNEL(NAME, TRANS_A, WITH_SUMS, ACT)                                            \
__kernel void NAME(__global const float* restrict A, __global const float* restrict B,        \
                   __global float* restrict C, __global const float* restrict bias,           \
                   __global float* restrict row_sums, const int M, const int N, const int K,  \
                   const int LDB, const int b_padded, const int has_bias, const float slope)  \
{                                                                                             \
    gemm_block_body(A, B, C, bias, row_sums, M, N, K, LDB, b_padded, has_bias, slope,         \
                    TRANS_A, WITH_SUMS, ACT, get_global_id(0), get_global_id(1), C, ACT_NONE, 0, 0); \
}
GEMM_KERNEL(gemm_block, 0, 0, ACT_NONE)
GEMM_KERNEL(gemm_block_ta, 1, 0, ACT_NONE)
GEMM_KERNEL(gemm_block_sums, 0, 1, ACT_NONE)
GEMM_KERNEL(gemm_block_ta_sums, 1, 1, ACT_NONE)
GEMM_KERNEL(gemm_block_relu, 0, 0, ACT_RELU)
GEMM_KERNEL(gemm_block_leaky_relu, 0, 0, ACT_LEAKY_RELU)
GEMM_KERNEL(gemm_block_tanh, 0, 0, ACT_TANH)
GEMM_KERNEL(gemm_block_sigmoid, 0, 0, ACT_SIGMOID)
GEMM_KERNEL(gemm_block_relu6, 0, 0, ACT_RELU6)

/* C = act(A @ B.T + bias) for A (M, K) and B (N, K), both row-major: the Dense forward on
 * its weight as stored, (out, in), where gemm_block needs it transposed by a gemm_pack launch
 * first. Dot-product form: the lanes run along K, a work item owns NT_ROWS x NT_COLS outputs
 * (NT_ROWS * NT_COLS = VW accumulators), each k step loads NT_ROWS vectors of A and NT_COLS of B
 * and makes every pair's FMA; the lanes are added up at the end into one vector of the block's
 * VW outputs (lane r * NT_COLS + c), which takes the bias and activation whole. The last k
 * step's vectors are shifted back to end at the row's end (K >= VW), the lanes already summed
 * zeroed in A's. Rows past M and columns past N read the last valid one and are not stored.
 * Sums in k order, then the lanes' fixed tree: deterministic. Row n_ones of B (-1: none) reads
 * as ones (pointwise_weight_grad's bias column). With batch > 1 the sums run on through batch
 * pairs of matrices, A and B advancing by a_image and b_image elements (in that order). Global size (ceil(N / NT_COLS),
 * ceil(M / NT_ROWS)). */
#if VW == 16
#define NT_ROWS 4
#define NT_COLS 4
#else
#define NT_ROWS 2
#define NT_COLS 4
#endif

/* A vector type of 4-byte alignment: a load through it is one unaligned vector load (LOADV's
 * scalars may come out as pieces and shuffles). */
typedef VEC vec_unaligned __attribute__((aligned(4)));
#define ULOADV(p) (*(const __global vec_unaligned*)(p))

/* The sum of v's lanes (float8: VW 8). */
inline float lane_sum(float8 h)
{
    const float4 q = h.lo + h.hi;
    const float2 d = q.lo + q.hi;
    return d.lo + d.hi;
}

static inline void gemm_nt_body(__global const float* restrict A, __global const float* restrict B,
                                __global float* restrict C, __global const float* restrict bias,
                                const int M, const int N, const int K, const int has_bias, const float slope,
                                const int act, const int n_ones, const int batch, const size_t a_image,
                                const size_t b_image)
{
    const int m0 = get_global_id(1) * NT_ROWS, n0 = get_global_id(0) * NT_COLS;
    if (m0 >= M || n0 >= N) return;
    __global const float* a_row[NT_ROWS];
    __global const float* b_row[NT_COLS];
    #pragma unroll
    for (int r = 0; r < NT_ROWS; ++r) a_row[r] = A + (size_t)MIN(m0 + r, M - 1) * K;
    #pragma unroll
    for (int c = 0; c < NT_COLS; ++c) b_row[c] = B + (size_t)MIN(n0 + c, N - 1) * K;
    bool ones[NT_COLS];     /* row n_ones of B reads as ones, not from B */
    #pragma unroll
    for (int c = 0; c < NT_COLS; ++c) ones[c] = n0 + c == n_ones;
    VEC acc[NT_ROWS][NT_COLS];
    #pragma unroll
    for (int r = 0; r < NT_ROWS; ++r)
        #pragma unroll
        for (int c = 0; c < NT_COLS; ++c) acc[r][c] = (VEC)(0.0f);
    for (int image = 0; image < batch; ++image) {
    int k = 0;
    for (; k + VW <= K; k += VW) {
        VEC av[NT_ROWS], bv[NT_COLS];
        #pragma unroll
        for (int r = 0; r < NT_ROWS; ++r) av[r] = ULOADV(a_row[r] + k);
        #pragma unroll
        for (int c = 0; c < NT_COLS; ++c) bv[c] = ones[c] ? (VEC)(1.0f) : ULOADV(b_row[c] + k);
        #pragma unroll
        for (int r = 0; r < NT_ROWS; ++r)
            #pragma unroll
            for (int c = 0; c < NT_COLS; ++c) acc[r][c] = av[r] * bv[c] + acc[r][c];
    }
    if (k < K) {        /* the last K % VW columns: lanes below VW - K % VW were summed already */
#if VW == 16
        const int16 lane = (int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
        const int8 lane = (int8)(0, 1, 2, 3, 4, 5, 6, 7);
#endif
        const int first = VW - (K - k);
        VEC av[NT_ROWS], bv[NT_COLS];
        #pragma unroll
        for (int r = 0; r < NT_ROWS; ++r) av[r] = lane >= first ? ULOADV(a_row[r] + K - VW) : (VEC)(0.0f);
        #pragma unroll
        for (int c = 0; c < NT_COLS; ++c) bv[c] = ones[c] ? (VEC)(1.0f) : ULOADV(b_row[c] + K - VW);
        #pragma unroll
        for (int r = 0; r < NT_ROWS; ++r)
            #pragma unroll
            for (int c = 0; c < NT_COLS; ++c) acc[r][c] = av[r] * bv[c] + acc[r][c];
    }
    #pragma unroll
    for (int r = 0; r < NT_ROWS; ++r) a_row[r] += a_image;
    #pragma unroll
    for (int c = 0; c < NT_COLS; ++c) b_row[c] += b_image;
    }
#if VW == 16
    /* the 16 lane sums at once (common.h): output l's accumulator in slot SLOT16(l) */
    float16 a[16];
    #pragma unroll
    for (int r = 0; r < NT_ROWS; ++r)
        #pragma unroll
        for (int c = 0; c < NT_COLS; ++c) a[SLOT16(r * NT_COLS + c)] = acc[r][c];
    const VEC total = lane_sums16(a);
#else
    float sums[VW];
    #pragma unroll
    for (int r = 0; r < NT_ROWS; ++r)
        #pragma unroll
        for (int c = 0; c < NT_COLS; ++c) sums[r * NT_COLS + c] = lane_sum(acc[r][c]);
    const VEC total = LOADV(sums);
#endif
    /* lane r * NT_COLS + c is output (m0 + r, n0 + c): the bias of column n0 + c */
    float4 b4 = (float4)(0.0f);
    if (has_bias)
        b4 = n0 + 4 <= N ? (float4)(bias[n0], bias[n0 + 1], bias[n0 + 2], bias[n0 + 3])
                         : (float4)(bias[n0], bias[MIN(n0 + 1, N - 1)], bias[MIN(n0 + 2, N - 1)],
                                    bias[MIN(n0 + 3, N - 1)]);
#if VW == 16
    const VEC out = activatev(total + (float16)(b4, b4, b4, b4), act, slope);
    const float4 rows[4] = {out.s0123, out.s4567, out.s89ab, out.scdef};
#else
    const VEC out = activatev(total + (float8)(b4, b4), act, slope);
    const float4 rows[2] = {out.lo, out.hi};
#endif
    #pragma unroll
    for (int r = 0; r < NT_ROWS; ++r) {
        __global float* c = C + (size_t)(m0 + r) * N + n0;
        if (m0 + r < M) {
            if (n0 + 4 <= N) {
                c[0] = rows[r].s0; c[1] = rows[r].s1; c[2] = rows[r].s2; c[3] = rows[r].s3;
            } else {
                #pragma unroll 1
                for (int j = 0; j < N - n0; ++j) c[j] = LANE4(rows[r], j);
            }
        }
    }
}

#define GEMM_NT_KERNEL(NAME, ACT)                                                             \
__kernel void NAME(__global const float* restrict A, __global const float* restrict B,        \
                   __global float* restrict C, __global const float* restrict bias,           \
                   const int M, const int N, const int K, const int has_bias, const float slope) \
{                                                                                             \
    gemm_nt_body(A, B, C, bias, M, N, K, has_bias, slope, ACT, -1, 1, 0, 0);                  \
}
GEMM_NT_KERNEL(gemm_nt, ACT_NONE)
GEMM_NT_KERNEL(gemm_nt_relu, ACT_RELU)
GEMM_NT_KERNEL(gemm_nt_leaky_relu, ACT_LEAKY_RELU)
GEMM_NT_KERNEL(gemm_nt_tanh, ACT_TANH)
GEMM_NT_KERNEL(gemm_nt_sigmoid, ACT_SIGMOID)
GEMM_NT_KERNEL(gemm_nt_relu6, ACT_RELU6)

/* A Dense layer's backward in one launch, for gy (n, o), w (o, i), x (n, i) with i >= NB:
 * the first gx_blocks work items make gx = gy @ w (n, i), times the derivative of x_act at x
 * when x_act is an ACT_ code other than ACT_NONE (x being that activation's output: the
 * previous layer's activation backward, fused), the others gw = gy.T @ x (o, i) with, when
 * has_bias, gb = the column sums of gy. Each is gemm_block's product, block for block, in
 * the same order: separate launches left the small weight-gradient grids (LeNet-5's 84 -> 10:
 * 6 items) alone on the cores, and PoCL spends ~10-20 us between two launches. Global size
 * (gx_blocks + gw_blocks,), gx_blocks = ceil(i / NB) * ceil(n / TM), gw_blocks = ceil(i / NB)
 * * ceil(o / TM). */
__kernel void dense_backward_pair(__global const float* restrict gy, __global const float* restrict w,
                                  __global const float* restrict x, __global float* restrict gx,
                                  __global float* restrict gw, __global float* restrict gb,
                                  const int n, const int o, const int i, const int has_bias,
                                  const int x_act, const float slope)
{
    const int columns = (i + NB - 1) / NB;
    const int gx_blocks = columns * ((n + TM - 1) / TM);
    int t = get_global_id(0);
    if (t < gx_blocks) {
        gemm_block_body(gy, w, gx, gx, gx, n, i, o, i, 0, 0, slope, 0, 0, ACT_NONE, t % columns, t / columns,
                        x, x_act, 0, 0);
        return;
    }
    t -= gx_blocks;
    if (has_bias)
        gemm_block_body(gy, x, gw, gw, gb, o, i, n, i, 0, 0, slope, 1, 1, ACT_NONE, t % columns, t / columns,
                        gw, ACT_NONE, 0, 0);
    else
        gemm_block_body(gy, x, gw, gw, gw, o, i, n, i, 0, 0, slope, 1, 0, ACT_NONE, t % columns, t / columns,
                        gw, ACT_NONE, 0, 0);
}

/* T = S, or S.T with trans, for S (R, Q), with T's rows LDT >= (its columns) apart and zero
 * past them (gemm_block's padded B). A work item per row of T: with trans it reads a column of
 * S (its neighbours read the neighbouring columns from the same cache lines) and writes a
 * contiguous row. Global size (trans ? Q : R). */
__kernel void gemm_pack(__global const float* restrict S, __global float* restrict T,
                        const int R, const int Q, const int LDT, const int trans)
{
    const int t = get_global_id(0);
    if (t >= (trans ? Q : R)) return;
    __global float* row = T + (size_t)t * LDT;
    const int cols = trans ? R : Q;
    if (trans)
        for (int r = 0; r < R; ++r) row[r] = S[(size_t)r * Q + t];
    else
        for (int q = 0; q < Q; ++q) row[q] = S[(size_t)t * Q + q];
    for (int j = cols; j < LDT; ++j) row[j] = 0.0f;
}

/* ---- pointwise convolutions ---------------------------------------------------------------
 * A 1x1 convolution with stride 1 and no padding of an NCHW batch is one matrix product per
 * image, its pixels (HW of them) the columns: y[n] (O, HW) = w (O, C) @ x[n] (C, HW). The
 * direct kernels put their lanes over the output channels and store every pixel's channels to
 * O different planes; here the lanes run along the pixels, the stores are whole rows, and
 * get_global_id(2) is the image. HW >= NB (the last column block shifted back, as in
 * gemm_block), and HW >= VW for the weight gradient (gemm_nt). rows_first: the row blocks
 * are get_global_id(0), so that the items reading one column strip of the image's right-hand
 * matrix follow each other (where that matrix outgrows the cache), else the column blocks. */
#define BLOCK_X (rows_first ? get_global_id(1) : get_global_id(0))
#define BLOCK_Y (rows_first ? get_global_id(0) : get_global_id(1))

/* With G groups (G divides C and O; Cg = C / G, Og = O / G) image n's group g is its own
 * product: y[n, g*Og..] (Og, HW) = w[g*Og..] (Og, Cg) @ x[n, g*Cg..] (Cg, HW); get_global_id(2)
 * is n * G + g. */

/* y[n] = act(w @ x[n] + b + r[n]) (b one per output channel, a row of y[n]; r, when
 * has_residual, an array of y's shape), per group. Global size (ceil(HW / NB), ceil(Og / TM),
 * N * G), the first two swapped with rows_first. */
__kernel void pointwise_forward(__global const float* restrict w, __global const float* restrict x,
                                __global float* restrict y, __global const float* restrict b,
                                __global const float* restrict r,
                                const int O, const int C, const int HW, const int G, const int has_bias,
                                const int has_residual, const int act, const float slope, const int rows_first)
{
    const int og = O / G, cg = C / G;
    const size_t n = get_global_id(2) / G, g = get_global_id(2) % G;
    gemm_block_body(w + g * og * cg, x + (n * C + g * cg) * HW, y + (n * O + g * og) * HW, b + g * og, y, og,
                    HW, cg, HW, 0, has_bias, slope, 0, 0, act, BLOCK_X, BLOCK_Y, r + (n * O + g * og) * HW,
                    ACT_NONE, 1, has_residual);
}

/* gx[n] = w.T @ gy[n] (C, HW), per group. Global size (ceil(HW / NB), ceil(Cg / TM), N * G), the
 * first two swapped with rows_first. */
__kernel void pointwise_input_grad(__global const float* restrict w, __global const float* restrict gy,
                                   __global float* restrict gx, const int O, const int C, const int HW,
                                   const int G, const int rows_first)
{
    const int og = O / G, cg = C / G;
    const size_t n = get_global_id(2) / G, g = get_global_id(2) % G;
    gemm_block_body(w + g * og * cg, gy + (n * O + g * og) * HW, gx + (n * C + g * cg) * HW, gx, gx, cg, HW, og,
                    HW, 0, 0, 0.0f, 1, 0, ACT_NONE, BLOCK_X, BLOCK_Y, gx, ACT_NONE, 0, 0);
}

/* part[s] (O, Cg + has_bias) = the sum over images n of slice s (images s * per .. up to N - 1)
 * of gy[n] @ [x[n]; ones].T per group (rows g*Og.. from group g): the slice's weight gradient
 * (O, Cg) and, as its last column, its bias gradient (the sums of gy[n]'s rows, as products
 * with a row of ones), images in order. pointwise_weight_reduce adds the slices up. Global
 * size (ceil((Cg + has_bias) / NT_COLS), ceil(Og / NT_ROWS), slices * G). */
__kernel void pointwise_weight_grad(__global const float* restrict gy, __global const float* restrict x,
                                    __global float* restrict part, const int N, const int per,
                                    const int O, const int C, const int HW, const int G, const int has_bias)
{
    const int og = O / G, cg = C / G, cols = cg + has_bias;
    const size_t s = get_global_id(2) / G, g = get_global_id(2) % G, n = s * per;
    gemm_nt_body(gy + (n * O + g * og) * HW, x + (n * C + g * cg) * HW, part + (s * O + g * og) * cols, part,
                 og, cols, HW, 0, 0.0f, ACT_NONE, has_bias ? cg : -1, MIN(per, N - (int)n), (size_t)O * HW,
                 (size_t)C * HW);
}

/* gw[o, c] = sum over slices s < N of part[s, o, c] (in order: deterministic), gb[o] = that of
 * part[s, o, C] when has_bias. Global size (O * (C + has_bias)). */
__kernel void pointwise_weight_reduce(__global const float* restrict part, __global float* restrict gw,
                                      __global float* restrict gb, const int N, const int O, const int C,
                                      const int has_bias)
{
    const int cols = C + has_bias;
    const int t = get_global_id(0);
    if (t >= O * cols) return;
    float sum = 0.0f;
    for (int n = 0; n < N; ++n)
        sum += part[(size_t)n * O * cols + t];
    const int o = t / cols, c = t - o * cols;
    if (c < C)
        gw[o * C + c] = sum;
    else
        gb[o] = sum;
}
