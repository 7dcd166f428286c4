/* winograd.cl: Winograd convolution F(WM x WM, WR x WR), stride 1.
 *
 * Y = AT [ (G g GT) (.) (BT d B) ] A turns a WA x WA input tile d (WA = WM + WR - 1) and a
 * WR x WR filter g into a WM x WM output tile with WA*WA multiplies instead of WM*WM*WR*WR
 * (F(4x4, 3x3): 36 against 144). Summed over the input channels, the products become WA*WA
 * independent matrix products, one per tile position xi:
 *   M[xi, o, t] = sum_c U[xi, c, o] * V[xi, c, t]
 * The forward pass (and the gather form of the input gradient) runs, in this order:
 *   winograd_input    x (N, C, H, W)    -> V (WA*WA, C, TP), tile t = (n*TH + th)*TW + tw,
 *                     zero padding (PT rows, PL columns) applied while reading;
 *   winograd_weights  w                 -> U (WA*WA, C, CO);
 *   winograd_products U, V              -> M (WA*WA, CO, TP);
 *   winograd_output   M                 -> y (N, CO, OH, OW), bias and activation added;
 * or, after winograd_weights, winograd_fused runs the other three steps in one launch, one
 * block of NB tiles at a time through a work item's own scratch (V and M of that block only).
 * The weight gradient is the same algorithm with the roles swapped, F(WR x WR, WM x WM): a
 * gy tile of WM x WM is the "filter" and the WR x WR output is the gradient's, over the same
 * WA x WA input tiles (the transform BT depends only on the interpolation points, so V is
 * the same), summed over the tiles:
 *   Mw[xi, o, c] = sum_t Ug[xi, o, t] * V[xi, t, c],  Ug = G2 gy_tile G2T,
 *   gw[o, c] = AT2 Mw[., o, c] A2
 * by winograd_input (V transposed), winograd_gy, winograd_products and
 * winograd_weight_output (which sums the bias gradient from gy too).
 * Shapes are arguments: C, CO input and output channels, H, W and OH, OW the input and output
 * sides, PT, PL the zero rows above and columns left of the input, TH = ceil(OH / WM) by
 * TW = ceil(OW / WM) tiles per image. Tiles t < NT = N*TH*TW are real; rows of V and M are TP
 * long (NT rounded up to NB, the products' column block); the columns past NT hold copies of
 * tile NT - 1 in V, which nothing reads, and zeros in Ug.
 * The transforms take 8 tiles (or channels) per work item as the lanes of a float8 (see TL
 * below), in work-groups of one item; the products are CPU-style register blocks as
 * gemm.cl's gemm_block, no local memory.
 * The matrices come in as -D lists (WBT, WG, WAT, WG2, WAT2, row-major); the loops over them
 * unroll, so their zeros and ones fold away, and one build serves every shape.
 */

#ifndef WM
#define WM 2            /* output tile side */
#endif
#ifndef WR
#define WR 3            /* filter side */
#endif
#define WA (WM + WR - 1)  /* input tile side */
#ifndef WBT
#define WBT 1, 0, -1, 0, 0, 1, 1, 0, 0, -1, 1, 0, 0, 1, 0, -1
#endif
#ifndef WG
#define WG 1, 0, 0, 0.5f, 0.5f, 0.5f, 0.5f, -0.5f, 0.5f, 0, 0, 1
#endif
#ifndef WAT
#define WAT 1, 1, 1, 0, 0, 1, -1, 1
#endif
#ifndef WG2
#define WG2 1, 0, 0.5f, 0.5f, 0.5f, -0.5f, 0, 1       /* G of F(WR, WM), WA x WM */
#endif
#ifndef WAT2
#define WAT2 1, 1, 1, 0, 0, 1, -1, 0, 0, 1, 1, 1      /* AT of F(WR, WM), WR x WA */
#endif
#ifndef VW
#define VW 8            /* vector lanes: 8 or 16 */
#endif
#ifndef TM
#define TM 6            /* winograd_products: rows (output channels) per work item */
#endif
#ifndef NV
#define NV 2            /* winograd_products: vectors of tiles per work item */
#endif
#define NB (VW * NV)


#if VW == 16
#define VEC float16
#define LOADV(p) ((float16)(LOAD8(p), LOAD8((p) + 8)))
#define STOREV(v, p) do { STORE8((v).lo, p); STORE8((v).hi, (p) + 8); } while (0)
#else
#define VEC float8
#define LOADV(p) LOAD8(p)
#define STOREV(v, p) STORE8(v, p)
#endif
DEFINE_TANHV(float8)
DEFINE_ACTIVATEV(float8)

__constant float BT[WA * WA] = {WBT};
__constant float GM[WA * WR] = {WG};
__constant float AT[WM * WA] = {WAT};
__constant float G2[WA * WM] = {WG2};
__constant float AT2[WR * WA] = {WAT2};

/* The two halves of each transform, with loops that unroll so that the matrices' zeros fold
 * away: LEFT_PRODUCT declares OUT = MAT IN (MAT ROWS x INNER, IN INNER x WIDTH, of type T);
 * RIGHT_PRODUCT hands STORE(i, j, value) each entry of IN MAT^T (IN ROWS x INNER, MAT COLS x
 * INNER). */
#define LEFT_PRODUCT(T, OUT, MAT, ROWS, INNER, IN, WIDTH)                                     \
    T OUT[ROWS][WIDTH];                                                                       \
    _Pragma("unroll")                                                                         \
    for (int i_ = 0; i_ < (ROWS); i_++)                                                       \
        _Pragma("unroll")                                                                     \
        for (int k_ = 0; k_ < (WIDTH); k_++) {                                                \
            T s_ = (T)(0.0f);                                                                 \
            _Pragma("unroll")                                                                 \
            for (int u_ = 0; u_ < (INNER); u_++)                                              \
                if (MAT[i_ * (INNER) + u_] != 0.0f)                                           \
                    s_ += MAT[i_ * (INNER) + u_] * IN[u_][k_];                                \
            OUT[i_][k_] = s_;                                                                 \
        }
#define RIGHT_PRODUCT(T, IN, ROWS, MAT, COLS, INNER, STORE)                                   \
    _Pragma("unroll")                                                                         \
    for (int i_ = 0; i_ < (ROWS); i_++)                                                       \
        _Pragma("unroll")                                                                     \
        for (int j_ = 0; j_ < (COLS); j_++) {                                                 \
            T s_ = (T)(0.0f);                                                                 \
            _Pragma("unroll")                                                                 \
            for (int k_ = 0; k_ < (INNER); k_++)                                              \
                if (MAT[j_ * (INNER) + k_] != 0.0f)                                           \
                    s_ += IN[i_][k_] * MAT[j_ * (INNER) + k_];                                \
            STORE(i_, j_, s_);                                                                \
        }

/* The transforms below work on TL lanes at once, as float8, along the axis their output is
 * contiguous in (tiles, or channels), and gather their inputs lane by lane. Written as scalar
 * kernels that PoCL vectorises across a work-group they needed gathers, which LLVM's cost
 * model vectorises on Intel's AVX-512 but leaves scalar on AMD Zen 3 (AVX2): there the input
 * transform of 32x128x16x16 took 6.9 ms, with these lanes 0.9 ms. */
#define TL 8
#define GATHER8(LD) ((float8)(LD(0), LD(1), LD(2), LD(3), LD(4), LD(5), LD(6), LD(7)))
/* p[i] where `inside`, else 0, without a branch: element 0 is read instead (branches per lane
 * cost more than the loads; the index is masked so that the compiler cannot fold the load
 * into the condition). */
inline float load_inside(const __global float* restrict p, const int i, const int inside)
{
    const float value = p[i & -inside];
    return inside ? value : 0.0f;
}
#define LOAD_INSIDE(p, i, inside) load_inside((p), (i), (inside))

/* Image n, tile row th and column tw of tile t. */
#define TILE_POSITION(t, n, th, tw)                                                           \
    const int n = quotient(t, TH * TW);                                                      \
    const int th = quotient(t - n * (TH * TW), TW);                                          \
    const int tw = t - n * (TH * TW) - th * TW;

/* (BT d B)[xi] of TL input tiles at once, stored at out + xi * xi_step (TL floats each): lane
 * l's window starts at x[base[l]], row row0[l] and column col0[l] of an H x W plane, zeros
 * outside it. */
ALWAYS_INLINE void input_lanes(const __global float* restrict x, const __private int* base,
                               const __private int* row0, const __private int* col0, const int H,
                               const int W, __global float* restrict out, const int xi_step)
{
    float8 d[WA][WA];
    #pragma unroll
    for (int u = 0; u < WA; u++)
        #pragma unroll
        for (int k = 0; k < WA; k++) {
#define LD(l) LOAD_INSIDE(x, base[l] + u * W + k, (uint)(row0[l] + u) < (uint)H && (uint)(col0[l] + k) < (uint)W)
            d[u][k] = GATHER8(LD);
#undef LD
        }
    LEFT_PRODUCT(float8, bd, BT, WA, WA, d, WA)
#define STORE_V(i, k, value) STORE8((value), out + ((i) * WA + (k)) * xi_step)
    RIGHT_PRODUCT(float8, bd, WA, BT, WA, WA, STORE_V)
#undef STORE_V
}

/* The windows of lanes l < TL as input_lanes takes them: tile t0 + l*t_step (NT - 1 past it)
 * of channel c0 + l*c_step (C - 1 past it). */
ALWAYS_INLINE void tile_windows(const int t0, const int t_step, const int c0, const int c_step, const int C,
                                const int H, const int W, const int TH, const int TW, const int PT,
                                const int PL, const int NT, __private int* base, __private int* row0,
                                __private int* col0)
{
    #pragma unroll
    for (int l = 0; l < TL; l++) {
        const int t = MIN(t0 + l * t_step, NT - 1);
        const int c = MIN(c0 + l * c_step, C - 1);
        TILE_POSITION(t, n, th, tw)
        row0[l] = th * WM - PT;
        col0[l] = tw * WM - PL;
        base[l] = (n * C + c) * (H * W) + row0[l] * W + col0[l];
    }
}

/* V[xi, c, t] = (BT d B)[xi] for tile t (clamped to NT - 1) of channel c: d is the input
 * window at rows th*WM - PT .., columns tw*WM - PL .. of plane (n, c), zeros outside the
 * image. Work item (i, j) takes the TL tiles i*TL .. of channel j. With cp > 0 V is
 * transposed, V[xi, t, c] in rows of cp >= C (channels past C repeat channel C - 1), and the
 * item takes the TL channels i*TL .. of tile j. Global size (TP / TL, C), or (cp / TL, TP). */
__kernel void winograd_input(__global const float* restrict x, __global float* restrict v,
                             const int C, const int H, const int W, const int OH, const int OW,
                             const int PT, const int PL, const int NT, const int TP, const int cp)
{
    const int TH = (OH + WM - 1) / WM, TW = (OW + WM - 1) / WM;
    const int lane0 = get_global_id(0) * TL;
    const int j = get_global_id(1);
    if (j >= (cp ? TP : C)) return;       /* the grid rounded up to the group */
    int base[TL], row0[TL], col0[TL];
    tile_windows(cp ? j : lane0, cp ? 0 : 1, cp ? lane0 : j, cp ? 1 : 0, C, H, W, TH, TW, PT, PL, NT, base, row0,
                 col0);
    input_lanes(x, base, row0, col0, H, W, cp ? v + j * cp + lane0 : v + j * TP + lane0, cp ? TP * cp : C * TP);
}

/* Ug[xi, o, t] = (G2 e G2T)[xi] for the WM x WM tile e of gy (N, CO, OH, OW) at rows th*WM ..,
 * columns tw*WM .. of plane (n, o), zeros past the output and for t >= NT. Work item (i, o)
 * takes the TL tiles i*TL ... Global size (TP / TL, CO). */
__kernel void winograd_gy(__global const float* restrict gy, __global float* restrict ug,
                          const int CO, const int OH, const int OW, const int NT, const int TP)
{
    const int TH = (OH + WM - 1) / WM, TW = (OW + WM - 1) / WM;
    const int lane0 = get_global_id(0) * TL;
    const int o = get_global_id(1);
    if (o >= CO) return;
    int base[TL], row0[TL], col0[TL];
    #pragma unroll
    for (int l = 0; l < TL; l++) {
        const int t = MIN(lane0 + l, NT - 1);
        TILE_POSITION(t, n, th, tw)
        row0[l] = lane0 + l < NT ? th * WM : OH;      /* tiles past NT read as zeros */
        col0[l] = tw * WM;
        base[l] = (n * CO + o) * (OH * OW) + row0[l] * OW + col0[l];
    }
    float8 e[WM][WM];
    #pragma unroll
    for (int p = 0; p < WM; p++)
        #pragma unroll
        for (int q = 0; q < WM; q++) {
#define LD(l) LOAD_INSIDE(gy, base[l] + p * OW + q, row0[l] + p < OH && col0[l] + q < OW)
            e[p][q] = GATHER8(LD);
#undef LD
        }
    LEFT_PRODUCT(float8, ge, G2, WA, WM, e, WM)
#define STORE_UG(a, b, value) STORE8((value), ug + (((a) * WA + (b)) * CO + o) * TP + lane0)
    RIGHT_PRODUCT(float8, ge, WA, G2, WA, WM, STORE_UG)
#undef STORE_UG
}

/* U[xi, c, o] = (G g GT)[xi] with g the filter from input channel c to output channel o:
 * w[o, c] of w (CO, C, WR, WR), or with flip w[c, o] of w (C, CO, WR, WR) rotated by 180
 * degrees (the gather form of a convolution's input gradient: its input channels are the
 * convolution's outputs). Work item (i, c) takes the TL output channels i*TL .. (those past
 * CO are not stored). Global size (ceil(CO / TL), C). */
__kernel void winograd_weights(__global const float* restrict w, __global float* restrict u,
                               const int C, const int CO, const int flip)
{
    const int o0 = get_global_id(0) * TL;
    const int c = get_global_id(1);
    if (c >= C) return;
    int base[TL];
    #pragma unroll
    for (int l = 0; l < TL; l++) {
        const int o = MIN(o0 + l, CO - 1);
        base[l] = flip ? (c * CO + o) * (WR * WR) : (o * C + c) * (WR * WR);
    }
    float8 g[WR][WR];
    #pragma unroll
    for (int i = 0; i < WR; i++)
        #pragma unroll
        for (int j = 0; j < WR; j++) {
            const int at = flip ? (WR - 1 - i) * WR + (WR - 1 - j) : i * WR + j;
#define LD(l) w[base[l] + at]
            g[i][j] = GATHER8(LD);
#undef LD
        }
    LEFT_PRODUCT(float8, gg, GM, WA, WR, g, WR)
    __global float* uc = u + c * CO + o0;
    const int xi_step = C * CO;
#define STORE_U(a, b, value)                                                                  \
    do {                                                                                      \
        if (o0 + TL <= CO)                                                                    \
            STORE8((value), uc + ((a) * WA + (b)) * xi_step);                                 \
        else                                                                                  \
            for (int l = 0; l < CO - o0; l++)                                                 \
                uc[((a) * WA + (b)) * xi_step + l] = LANE8((value), l);                       \
    } while (0)
    RIGHT_PRODUCT(float8, gg, WA, GM, WA, WR, STORE_U)
#undef STORE_U
}

/* The products' multiply-add as a function of VEC arguments: clang marks each function with
 * the widest vector its signature uses, and on CPUs that prefer 256-bit vectors (Intel's
 * AVX-512 ones) LLVM splits wider vectors in code marked narrower: the float16 products ran
 * as pairs of 8-lane halves (ymm) without it. */
inline VEC vec_fma(const VEC a, const VEC b, const VEC c) { return a * b + c; }

/* out[i, col] = sum over k in [k_begin, k_end) of a[k * a_k + (r0 + i) * a_row] * b[k * b_k +
 * col] for the TM rows r0 + i < rows (rows past it read row rows - 1, unstored) and the NB
 * columns col: TM*NV accumulators, per k NV vector loads of b and TM broadcasts of a. */
ALWAYS_INLINE void product_block(const __global float* restrict a, const __global float* restrict bx,
                                 __global float* restrict o, const int rows, const int r0, const int k_begin,
                                 const int k_end, const int a_k, const int a_row, const int b_k,
                                 const int ld_out)
{
    const __global float* ax[TM];
    #pragma unroll
    for (int i = 0; i < TM; i++)
        ax[i] = a + MIN(r0 + i, rows - 1) * a_row;
    VEC acc[TM][NV];
    #pragma unroll
    for (int i = 0; i < TM; i++)
        #pragma unroll
        for (int j = 0; j < NV; j++)
            acc[i][j] = (VEC)(0.0f);
    for (int k = k_begin; k < k_end; k++) {
        VEC bv[NV];
        #pragma unroll
        for (int j = 0; j < NV; j++)
            bv[j] = LOADV(bx + (size_t)k * b_k + j * VW);
        #pragma unroll
        for (int i = 0; i < TM; i++) {
            const float av = ax[i][(size_t)k * a_k];
            #pragma unroll
            for (int j = 0; j < NV; j++)
                acc[i][j] = vec_fma((VEC)(av), bv[j], acc[i][j]);
        }
    }
    #pragma unroll
    for (int i = 0; i < TM; i++)
        if (r0 + i < rows)
            #pragma unroll
            for (int j = 0; j < NV; j++)
                STOREV(acc[i][j], o + (size_t)i * ld_out + j * VW);
}

/* out[s, xi, row, col] = sum over k of slice s of A[xi, k, row] * B[xi, k, col], with the
 * rows, columns and k steps of A and B at the given strides: the forward's M = U^T V (k = c,
 * rows o, columns t) and the weight gradient's Mw = Ug V^T (k = t, rows o, columns c, V
 * transposed). Work item (column block, row block, xi + WA*WA * s) owns rows r0 .. r0 + TM - 1
 * (rows past `rows` read row rows - 1 and are not stored) by the NB columns c0 ..; per k it
 * loads NV vectors of B and TM scalars of A for TM*NV vector FMAs. Slice s sums k = s*k_slice
 * .. min(k_count, (s + 1)*k_slice). Global size (cols / NB, ceil(rows / TM), WA*WA * slices),
 * cols = ld_out. */
__kernel void winograd_products(__global const float* restrict a, __global const float* restrict b,
                                __global float* restrict out, const int rows, const int k_count,
                                const int k_slice, const int a_k, const int a_row, const int b_k,
                                const int ld_out)
{
    const int c0 = get_global_id(0) * NB;
    const int r0 = get_global_id(1) * TM;
    const int xi = get_global_id(2) % (WA * WA);
    const int s = get_global_id(2) / (WA * WA);
    if (r0 >= rows) return;
    const int k_begin = s * k_slice;
    product_block(a + (size_t)xi * k_count * rows, b + (size_t)xi * k_count * b_k + c0,
                  out + ((size_t)get_global_id(2) * rows + r0) * ld_out + c0, rows, r0, k_begin,
                  MIN(k_count, k_begin + k_slice), a_k, a_row, b_k, ld_out);
}

/* y[n, o, th*WM + i, tw*WM + j] = act((AT m A)[i, j] + bias) for the TL tiles t0 + l, m[xi] at
 * mo + xi * xi_step (TL floats each); tiles t < NT and pixels inside the output only. */
ALWAYS_INLINE void output_lanes(const __global float* restrict mo, const int xi_step, const float bias,
                                const int act, const float slope, __global float* restrict y, const int o,
                                const int CO, const int OH, const int OW, const int TH, const int TW,
                                const int NT, const int t0)
{
    float8 mt[WA][WA];
    #pragma unroll
    for (int a = 0; a < WA; a++)
        #pragma unroll
        for (int k = 0; k < WA; k++)
            mt[a][k] = LOAD8(mo + (a * WA + k) * xi_step);
    LEFT_PRODUCT(float8, am, AT, WM, WA, mt, WA)
    float8 out[WM][WM];
#define STORE_OUT(i, j, value) out[i][j] = activatev((value) + bias, act, slope)
    RIGHT_PRODUCT(float8, am, WM, AT, WM, WA, STORE_OUT)
#undef STORE_OUT
    /* Tile t0 + l's image n, tile row th and column tw, stepped lane by lane (a division
     * per lane cost more than the transform). */
    int n = t0 / (TH * TW);
    int th = (t0 - n * (TH * TW)) / TW;
    int tw = t0 - n * (TH * TW) - th * TW;
    #pragma unroll
    for (int l = 0; l < TL; l++) {
        if (t0 + l < NT) {
            __global float* yp = y + (n * CO + o) * (OH * OW) + th * WM * OW + tw * WM;
            #pragma unroll
            for (int i = 0; i < WM; i++)
                #pragma unroll
                for (int j = 0; j < WM; j++)
                    if (th * WM + i < OH && tw * WM + j < OW)
                        yp[i * OW + j] = LANE8(out[i][j], l);
        }
        tw++;
        th += tw == TW;
        tw = tw == TW ? 0 : tw;
        n += th == TH;
        th = th == TH ? 0 : th;
    }
}

/* y[n, o, th*WM + i, tw*WM + j] = act((AT m A)[i, j] + b[o]) for m[xi] = M[xi, o, t], TL tiles
 * t0 + l at a time, the tiles t < NT and the pixels inside the output only. Global size
 * (TP / TL, CO). TL lanes, not VW: with float16 lanes the WA*WA tile (64 vectors for 5x5
 * filters) spilled, and the transform of 32x64x16x16 with 64 5x5 filters took 1.7 ms
 * against 0.8 (3x3: even). */
__kernel void winograd_output(__global const float* restrict m, __global const float* restrict b,
                              __global float* restrict y, const int has_bias, const int act,
                              const float slope, const int CO, const int OH, const int OW,
                              const int NT, const int TP)
{
    const int TH = (OH + WM - 1) / WM, TW = (OW + WM - 1) / WM;
    const int t0 = get_global_id(0) * TL;
    const int o = get_global_id(1);
    output_lanes(m + o * TP + t0, CO * TP, has_bias ? b[o] : 0.0f, act, slope, y, o, CO, OH, OW, TH, TW, NT, t0);
}

/* The whole forward (or gather-form input gradient) in one launch, for layers whose
 * transformed tiles fit a core's L2: work item i takes the blocks of NB tiles i, i + items, ...
 * and for each runs the three steps of the pipeline above on that block alone, through its
 * own scratch (V then M of the block: WA*WA x (C + CO) x NB floats at scratch + i * that),
 * so V and M stay in the core's cache instead of streaming through memory between launches:
 *   V[xi, c, :] = winograd_input's lanes, M[xi, o, :] = sum_c U[xi, c, o] V[xi, c, :] in
 *   product_block's register blocks, y = output_lanes of M.
 * u is winograd_weights' U (WA*WA, C, CO). Global size (items). */
__kernel void winograd_fused(__global const float* restrict x, __global const float* restrict u,
                             __global const float* restrict b, __global float* restrict y,
                             __global float* restrict scratch, const int has_bias, const int act,
                             const float slope, const int C, const int CO, const int H, const int W,
                             const int OH, const int OW, const int PT, const int PL, const int NT)
{
    const int TH = (OH + WM - 1) / WM, TW = (OW + WM - 1) / WM;
    const int blocks = (NT + NB - 1) / NB;
    const int item = get_global_id(0);
    __global float* vs = scratch + (size_t)item * (WA * WA) * (C + CO) * NB;   /* V: (WA*WA, C, NB) */
    __global float* ms = vs + (size_t)(WA * WA) * C * NB;                      /* M: (WA*WA, CO, NB) */
    #pragma unroll 1
    for (int block = item; block < blocks; block += get_global_size(0)) {
        const int t0 = block * NB;
        #pragma unroll 1
        for (int c = 0; c < C; c++)
            #pragma unroll 1
            for (int g = 0; g < NB; g += TL) {
                int base[TL], row0[TL], col0[TL];
                tile_windows(t0 + g, 1, c, 0, C, H, W, TH, TW, PT, PL, NT, base, row0, col0);
                input_lanes(x, base, row0, col0, H, W, vs + c * NB + g, C * NB);
            }
        #pragma unroll 1
        for (int xi = 0; xi < WA * WA; xi++)
            #pragma unroll 1
            for (int r0 = 0; r0 < CO; r0 += TM)
                product_block(u + (size_t)xi * C * CO, vs + (size_t)xi * C * NB, ms + ((size_t)xi * CO + r0) * NB,
                              CO, r0, 0, C, CO, 1, NB, NB);
        #pragma unroll 1
        for (int o = 0; o < CO; o++) {
            const float bias = has_bias ? b[o] : 0.0f;
            #pragma unroll 1
            for (int g = 0; g < NB; g += TL)
                output_lanes(ms + o * NB + g, CO * NB, bias, act, slope, y, o, CO, OH, OW, TH, TW, NT, t0 + g);
        }
    }
}

/* gw[o, c] = AT2 (sum over slices of Mw[s, ., o, c]) A2, Mw (slices, WA*WA, CO, cp); with
 * has_bias, the items c == C sum gb[o] = sum of gy (N, CO, OH, OW) over plane o, in eight
 * lanes of four float8 sums. Global size (C (+ 1), CO). */
__kernel void winograd_weight_output(__global const float* restrict mw, __global const float* restrict gy,
                                     __global float* restrict gw, __global float* restrict gb,
                                     const int C, const int CO, const int cp, const int slices,
                                     const int has_bias, const int N, const int plane)
{
    const int c = get_global_id(0);
    const int o = get_global_id(1);
    if (c > C || (c == C && !has_bias) || o >= CO) return;   /* the grid rounded up to the group */
    if (c == C) {
        float8 s[4] = {(float8)(0.0f), (float8)(0.0f), (float8)(0.0f), (float8)(0.0f)};
        float tail = 0.0f;
        for (int n = 0; n < N; n++) {
            const __global float* g = gy + ((size_t)n * CO + o) * plane;
            int i = 0;
            for (; i + 32 <= plane; i += 32)
                #pragma unroll
                for (int k = 0; k < 4; k++)
                    s[k] += LOAD8(g + i + 8 * k);
            for (; i < plane; i++)
                tail += g[i];
        }
        const float8 t = (s[0] + s[1]) + (s[2] + s[3]);
        const float4 q = t.lo + t.hi;
        gb[o] = (q.s0 + q.s1) + (q.s2 + q.s3) + tail;
        return;
    }
    float mt[WA][WA];
    #pragma unroll
    for (int a = 0; a < WA; a++)
        #pragma unroll
        for (int k = 0; k < WA; k++) {
            float s = 0.0f;
            for (int sl = 0; sl < slices; sl++)
                s += mw[(((size_t)sl * (WA * WA) + a * WA + k) * CO + o) * cp + c];
            mt[a][k] = s;
        }
    LEFT_PRODUCT(float, am, AT2, WR, WA, mt, WA)
#define STORE_GW(i, j, value) gw[((o * C + c) * WR + (i)) * WR + (j)] = (value)
    RIGHT_PRODUCT(float, am, WR, AT2, WR, WA, STORE_GW)
#undef STORE_GW
}
