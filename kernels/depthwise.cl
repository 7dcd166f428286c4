/* depthwise.cl: depthwise 2-D convolution (PyTorch's conv2d with groups == input channels and
 * M = out/in channels per input channel), forward with bias and activation fused, and the
 * gradients w.r.t. the input and the weights (bias included).
 *
 * Layouts (row-major, NCHW):
 *   x, gx  (N, C, H, W), element x[((n*C + c)*H + h)*W + w]
 *   w      (C*M, 1, KH, KW): output channel oc = c*M + m reads input channel c = oc / M
 *   y, gy  (N, C*M, OH, OW), OH = (H + PT + PB - DH*(KH-1) - 1)/SH + 1, likewise OW:
 *          y[n, oc, oh, ow] = b[oc] + sum_ij x[n, oc/M, oh*SH + i*DH - PT, ow*SW + j*DW - PL] * w[oc, 0, i, j]
 *          (zero outside the input: padding is a bounds check, nothing is copied).
 *
 * CPU-style: a work item owns 8 neighbouring pixels of a row (one float8, the vector lanes run
 * along the row) in RB rows, keeps the KH*KW taps in registers and, for stride 1, reads each
 * input row once for the RB output rows it feeds (the unrolled loops load the same addresses,
 * which the compiler merges). Blocks whose 8 lanes' windows lie inside the input take a path
 * without per-lane bounds checks. No local memory, no barriers: any work-group size works
 * (the host passes small ones on CPUs so that every core gets groups).
 * Shape constants come in as -D defines so the tap loops unroll; the defaults below only make
 * the file compile alone.
 */

#ifndef C
#define C 1             /* input channels */
#endif
#ifndef M
#define M 1             /* channel multiplier: output channels per input channel */
#endif
#ifndef H
#define H 1
#endif
#ifndef W
#define W 1
#endif
#ifndef OH
#define OH 1
#endif
#ifndef OW
#define OW 1
#endif
#ifndef KH
#define KH 1
#endif
#ifndef KW
#define KW 1
#endif
#ifndef SH
#define SH 1
#endif
#ifndef SW
#define SW 1
#endif
#ifndef DH
#define DH 1            /* dilation along rows */
#endif
#ifndef DW
#define DW 1            /* dilation along columns */
#endif
#ifndef PT
#define PT 0            /* zero rows above the input */
#endif
#ifndef PL
#define PL 0            /* zero columns left of the input */
#endif
#ifndef RB
#define RB 1            /* rows per work item */
#endif

#define CO (C * M)
#define BX(width) (((width) + 7) / 8)    /* float8 blocks along a row */

/* Eight values row[first + l*step] (l = 0..7), zero where the index leaves [0, len). */
ALWAYS_INLINE float8 row8_checked(const __global float* row, int first, int step, int len) {
    float v[8];
    #pragma unroll
    for (int l = 0; l < 8; l++) {
        const int k = first + l * step;
        v[l] = (k >= 0 && k < len) ? row[k] : 0.0f;
    }
    return (float8)(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
}

/* The same without checks: a float8 built from scalars compiles to one vector load for
 * step 1 (PoCL calls vload8 out of line). */
#define ROW8(p, step) ((float8)((p)[0], (p)[step], (p)[2 * (step)], (p)[3 * (step)],          \
                                (p)[4 * (step)], (p)[5 * (step)], (p)[6 * (step)], (p)[7 * (step)]))

/* Store the lanes of v that fall inside a row of length len. */
ALWAYS_INLINE void store8(float8 v, __global float* row, int first, int len) {
    if (first + 8 <= len) {
        row[first] = v.s0; row[first + 1] = v.s1; row[first + 2] = v.s2; row[first + 3] = v.s3;
        row[first + 4] = v.s4; row[first + 5] = v.s5; row[first + 6] = v.s6; row[first + 7] = v.s7;
    } else {
        float t[8] = {v.s0, v.s1, v.s2, v.s3, v.s4, v.s5, v.s6, v.s7};
        for (int l = 0; first + l < len; l++)
            row[first + l] = t[l];
    }
}

/* acc[r] += taps times the input under output pixels (oh0 + r, ow0 .. ow0 + 7). */
#define FWD_TAPS(CHECKED)                                                                     \
    _Pragma("unroll")                                                                         \
    for (int r = 0; r < RB; r++) {                                                            \
        _Pragma("unroll")                                                                     \
        for (int i = 0; i < KH; i++) {                                                        \
            const int ih = (oh0 + r) * SH + i * DH - PT;                                      \
            if (ih < 0 || ih >= H) continue;                                                  \
            const __global float* xr = xc + ih * W;                                           \
            _Pragma("unroll")                                                                 \
            for (int j = 0; j < KW; j++) {                                                    \
                const int iw = ow0 * SW + j * DW - PL;                                        \
                const float8 xv = CHECKED ? row8_checked(xr, iw, SW, W) : ROW8(xr + iw, SW);  \
                acc[r] = xv * wk[i][j] + acc[r];                                              \
            }                                                                                 \
        }                                                                                     \
    }

/* y = act(depthwise(x, w) + b); b is read only when has_bias.
 * Global size (BX(OW) * ceil(OH/RB), N*C*M). */
__kernel void depthwise_forward(__global const float* restrict x, __global const float* restrict w,
                                __global const float* restrict b, __global float* restrict y,
                                const int has_bias, const int act, const float slope)
{
    const int by = get_global_id(0) / BX(OW);
    const int ow0 = (get_global_id(0) - by * BX(OW)) * 8;
    const int oh0 = by * RB;
    const int plane = get_global_id(1);             /* n*CO + oc */
    if (oh0 >= OH) return;
    const int n = plane / CO;
    const int oc = plane - n * CO;
    const __global float* xc = x + (n * C + oc / M) * (H * W);

    float wk[KH][KW];
    #pragma unroll
    for (int i = 0; i < KH; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++)
            wk[i][j] = w[(oc * KH + i) * KW + j];
    float8 acc[RB];
    #pragma unroll
    for (int r = 0; r < RB; r++)
        acc[r] = (float8)(0.0f);

    const bool inside = ow0 * SW - PL >= 0 && (ow0 + 7) * SW + (KW - 1) * DW - PL < W;
    if (inside) {
        FWD_TAPS(0)
    } else {
        FWD_TAPS(1)
    }

    const float bias = has_bias ? b[oc] : 0.0f;
    #pragma unroll
    for (int r = 0; r < RB; r++) {
        if (oh0 + r < OH) {
            /* common.h's scalar activate per lane: the same rule as every other fused op. */
            const float8 v = acc[r] + bias;
            float t[8] = {v.s0, v.s1, v.s2, v.s3, v.s4, v.s5, v.s6, v.s7};
            #pragma unroll
            for (int l = 0; l < 8; l++)
                t[l] = activate(t[l], act, slope);
            store8((float8)(t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7]),
                   y + (plane * OH + oh0 + r) * OW, ow0, OW);
        }
    }
}

/* gx[n, c, h, w] = sum over m, i, j of gy[n, c*M + m, oh, ow] * w[c*M + m, 0, i, j] where
 * h + PT - i*DH = oh*SH and w + PL - j*DW = ow*SW inside the output.
 * Work item: 8 pixels of RB input rows of one plane; for stride 1 along the row the 8 lanes
 * read 8 neighbouring gy values, for larger strides a lane whose column falls between two
 * strided outputs reads 0.
 * Global size (BX(W) * ceil(H/RB), N*C). */
__kernel void depthwise_backward_input(__global const float* restrict gy,
                                       __global const float* restrict w,
                                       __global float* restrict gx)
{
    const int by = get_global_id(0) / BX(W);
    const int w0 = (get_global_id(0) - by * BX(W)) * 8;
    const int h0 = by * RB;
    const int plane = get_global_id(1);             /* n*C + c */
    if (h0 >= H) return;
    const int n = plane / C;
    const int c = plane - n * C;

    float8 acc[RB];
    #pragma unroll
    for (int r = 0; r < RB; r++)
        acc[r] = (float8)(0.0f);
    /* With stride 1 the lanes' gy columns w0 + l + PL - j*DW are all inside for every j. */
    const bool inside = SW == 1 && w0 + PL - (KW - 1) * DW >= 0 && w0 + 7 + PL < OW;

    for (int m = 0; m < M; m++) {
        const int oc = c * M + m;
        const __global float* gc = gy + (n * CO + oc) * (OH * OW);
        float wk[KH][KW];
        #pragma unroll
        for (int i = 0; i < KH; i++)
            #pragma unroll
            for (int j = 0; j < KW; j++)
                wk[i][j] = w[(oc * KH + i) * KW + j];
        #pragma unroll
        for (int r = 0; r < RB; r++) {
            #pragma unroll
            for (int i = 0; i < KH; i++) {
                const int th = h0 + r + PT - i * DH;
                if (th < 0 || th % SH != 0 || th / SH >= OH) continue;
                const __global float* gr = gc + (th / SH) * OW;
                #pragma unroll
                for (int j = 0; j < KW; j++) {
                    const int tw = w0 + PL - j * DW;
                    float8 gv;
                    if (inside) {
                        gv = ROW8(gr + tw, 1);
                    } else {
                        float v[8];
                        #pragma unroll
                        for (int l = 0; l < 8; l++) {
                            const int t = tw + l;
                            v[l] = (t >= 0 && t % SW == 0 && t / SW < OW) ? gr[t / SW] : 0.0f;
                        }
                        gv = (float8)(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
                    }
                    acc[r] = gv * wk[i][j] + acc[r];
                }
            }
        }
    }
    #pragma unroll
    for (int r = 0; r < RB; r++)
        if (h0 + r < H)
            store8(acc[r], gx + (plane * H + h0 + r) * W, w0, W);
}

/* Partial weight and bias gradients of output channel oc over slice s of the N*OH output rows
 * (rows_per_slice each), in the layout conv2d.cl's conv2d_backward_weight_reduce sums:
 *   part[(s*KH*KW + i*KW + j)*CO + oc] = sum gy[n, oc, oh, ow] * x[n, oc/M, oh*SH + i*DH - PT, ow*SW + j*DW - PL]
 *   partb[s*CO + oc]                   = sum gy[n, oc, oh, ow]
 * The lanes run along the output row (8 pixels), KH*KW float8 accumulators are summed
 * across lanes at the end. Global size (CO, slices). */
#define BW_TAPS(CHECKED)                                                                      \
    _Pragma("unroll")                                                                         \
    for (int i = 0; i < KH; i++) {                                                            \
        const int ih = oh * SH + i * DH - PT;                                                 \
        if (ih < 0 || ih >= H) continue;                                                      \
        const __global float* xr = xc + ih * W;                                               \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < KW; j++) {                                                        \
            const int iw = ow0 * SW + j * DW - PL;                                            \
            const float8 xv = CHECKED ? row8_checked(xr, iw, SW, W) : ROW8(xr + iw, SW);      \
            acc[i][j] = xv * gv + acc[i][j];                                                  \
        }                                                                                     \
    }

__kernel void depthwise_backward_weight(__global const float* restrict x,
                                        __global const float* restrict gy,
                                        __global float* restrict part,
                                        __global float* restrict partb,
                                        const int n_count, const int rows_per_slice)
{
    const int oc = get_global_id(0);
    const int s = get_global_id(1);
    if (oc >= CO) return;
    const int row_begin = s * rows_per_slice;
    const int row_end = min(row_begin + rows_per_slice, n_count * OH);

    float8 acc[KH][KW];
    #pragma unroll
    for (int i = 0; i < KH; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++)
            acc[i][j] = (float8)(0.0f);
    float8 accb = (float8)(0.0f);

    for (int row = row_begin; row < row_end; row++) {
        const int n = row / OH;
        const int oh = row - n * OH;
        const __global float* xc = x + (n * C + oc / M) * (H * W);
        const __global float* gr = gy + ((n * CO + oc) * OH + oh) * OW;
        /* Unrolled, each block's column checks are constants: on narrow planes every block
         * touches the padding (16x16: both), and the per-lane checks then folded away cost
         * 0.78-0.98x the time (64 images of 16 to 384 channels, 32x32 to 4x4, 3x3). */
        #pragma unroll
        for (int ow0 = 0; ow0 < OW; ow0 += 8) {
            /* Lanes past the row's end carry gy = 0, so whatever x they meet adds nothing. */
            const float8 gv = row8_checked(gr, ow0, 1, OW);
            accb += gv;
            const bool inside = ow0 * SW - PL >= 0 && (ow0 + 7) * SW + (KW - 1) * DW - PL < W;
            if (inside) {
                BW_TAPS(0)
            } else {
                BW_TAPS(1)
            }
        }
    }

    #pragma unroll
    for (int i = 0; i < KH; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++) {
            const float8 a = acc[i][j];
            part[(s * (KH * KW) + i * KW + j) * CO + oc] =
                ((a.s0 + a.s1) + (a.s2 + a.s3)) + ((a.s4 + a.s5) + (a.s6 + a.s7));
        }
    partb[s * CO + oc] = ((accb.s0 + accb.s1) + (accb.s2 + accb.s3)) + ((accb.s4 + accb.s5) + (accb.s6 + accb.s7));
}

/* ---- Row-block kernels (suffix _rows): a work item owns RB whole rows of one plane, RB*OW
 * output pixels laid along NV vectors of VW lanes (lane l of vector v is pixel p = v*VW + l
 * of the block: row p / OW, column p % OW, so narrow images pack several rows per vector).
 * Every column index and column check is then a compile-time constant, so padding costs no
 * per-lane test and no copy: a lane outside the input is a constant 0. Rows are checked only
 * in blocks at the top or bottom edge, branch-free: the row is clamped to 0 and the lane
 * zeroed, so every load is in bounds and unconditional. Preconditions (the host keeps them):
 * RB*OW (RB*W for the input gradient) at most a few vectors, the input gradient's RB a
 * multiple of SH unless one block covers the plane. Global size (ceil(rows/RB), planes). */

#ifndef VW
#define VW 8            /* lanes per vector: 8, or 16 where the device takes float16 */
#endif
#if VW == 16
#define VEC float16
#define VEC_OF(t) ((float16)((t)[0], (t)[1], (t)[2], (t)[3], (t)[4], (t)[5], (t)[6], (t)[7],     \
                             (t)[8], (t)[9], (t)[10], (t)[11], (t)[12], (t)[13], (t)[14], (t)[15]))
#define HSUMV(v) HSUM8((v).lo + (v).hi)
#else
#define VEC float8
#define VEC_OF(t) ((float8)((t)[0], (t)[1], (t)[2], (t)[3], (t)[4], (t)[5], (t)[6], (t)[7]))
#define HSUMV(v) HSUM8(v)
#endif
#define HSUM8(a) ((((a).s0 + (a).s1) + ((a).s2 + (a).s3)) + (((a).s4 + (a).s5) + ((a).s6 + (a).s7)))

/* Store lanes p < count of v at p[0..]; count is a constant except in a plane's last block. */
#define STORE_LANES(v, dst, v_index, count)                                                   \
    do {                                                                                      \
        _Pragma("unroll")                                                                     \
        for (int l_ = 0; l_ < VW; l_++)                                                       \
            if ((v_index) * VW + l_ < (count)) (dst)[(v_index) * VW + l_] = LANE(v, l_);      \
    } while (0)
#if VW == 16
#define LANE(v, l) LANE16(v, l)
#else
#define LANE(v, l) LANE8(v, l)
#endif

/* The tap builders must inline for their lane arithmetic to fold (ALWAYS_INLINE: common.h). */

#define NPIX (RB * OW)                  /* output pixels per block */
#define NV ((NPIX + VW - 1) / VW)
#define NPIXI (RB * W)                  /* input pixels per block of the input gradient */
#define NVI ((NPIXI + VW - 1) / VW)

/* The input under tap (i, j) for vector v of the output block at row oh0 of plane xc. */
ALWAYS_INLINE VEC x_tap(const __global float* xc, int oh0, int v, int i, int j, int check_rows)
{
    float t[VW];
    #pragma unroll
    for (int l = 0; l < VW; l++) {
        const int p = v * VW + l, r = p / OW;
        const int iw = (p - r * OW) * SW + j * DW - PL;
        const int ih = (oh0 + r) * SH + i * DH - PT;
        const bool row_ok = !check_rows || (ih >= 0 && ih < H && oh0 + r < OH);
        const float val = (p < NPIX && iw >= 0 && iw < W) ? xc[(row_ok ? ih : 0) * W + iw] : 0.0f;
        t[l] = row_ok ? val : 0.0f;
    }
    return VEC_OF(t);
}

/* Whether a block's taps all fall on input rows (no row checks needed). */
#define X_ROWS_INSIDE(oh0) ((oh0) * SH - PT >= 0 && ((oh0) + RB - 1) * SH + (KH - 1) * DH - PT < H \
                            && (oh0) + RB <= OH)

#define FWD_ROWS(CHECK, OH0)                                                                  \
    _Pragma("unroll")                                                                         \
    for (int i = 0; i < KH; i++)                                                              \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < KW; j++)                                                          \
            _Pragma("unroll")                                                                 \
            for (int v = 0; v < NV; v++)                                                      \
                acc[v] = x_tap(xc, OH0, v, i, j, CHECK) * wk[i][j] + acc[v];

/* Run BODY(CHECK, OH0) for the block at row oh0 with its row checks folded at compile time:
 * the first and last blocks of a plane with a constant oh0, the others unchecked when their
 * taps stay on the input (a runtime check only where they might not). */
#define NB ((OH + RB - 1) / RB)
#define ROW_BLOCK_CASES(BODY, oh0)                                                            \
    if ((oh0) == 0) {                                                                         \
        BODY(1, 0)                                                                            \
    } else if ((oh0) == (NB - 1) * RB) {                                                      \
        BODY(1, (NB - 1) * RB)                                                                \
    } else if (X_ROWS_INSIDE(oh0)) {                                                          \
        BODY(0, oh0)                                                                          \
    } else {                                                                                  \
        BODY(1, oh0)                                                                          \
    }

/* As depthwise_forward, on row blocks. Global size (ceil(OH/RB), N*C*M). */
__kernel void depthwise_forward_rows(__global const float* restrict x,
                                     __global const float* restrict w,
                                     __global const float* restrict b, __global float* restrict y,
                                     const int has_bias, const int act, const float slope)
{
    const int oh0 = OH <= RB ? 0 : get_global_id(0) * RB;
    const int plane = get_global_id(1);             /* n*CO + oc */
    const int n = plane / CO;
    const int oc = plane - n * CO;
    const __global float* xc = x + (n * C + oc / M) * (H * W);

    float wk[KH][KW];
    #pragma unroll
    for (int i = 0; i < KH; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++)
            wk[i][j] = w[(oc * KH + i) * KW + j];
    VEC acc[NV];
    const float bias = has_bias ? b[oc] : 0.0f;
    #pragma unroll
    for (int v = 0; v < NV; v++)
        acc[v] = (VEC)(bias);

    ROW_BLOCK_CASES(FWD_ROWS, oh0)

    __global float* yb = y + plane * (OH * OW) + oh0 * OW;
    const int count = oh0 + RB <= OH ? NPIX : (OH - oh0) * OW;
    #pragma unroll
    for (int v = 0; v < NV; v++) {
        VEC a = acc[v];
        if (act != 0) {
            /* common.h's scalar activate per lane: the same rule as every other fused op. */
            float t[VW];
            #pragma unroll
            for (int l = 0; l < VW; l++)
                t[l] = activate(LANE(a, l), act, slope);
            a = VEC_OF(t);
        }
        if (oh0 + RB <= OH) STORE_LANES(a, yb, v, NPIX);
        else STORE_LANES(a, yb, v, count);
    }
}

/* gy under tap (i, j) for vector v of the input block at row h0 (a multiple of SH): lane
 * pixel (h0 + r, c) meets gy[(h0 + r + PT - i*DH)/SH, (c + PL - j*DW)/SW] where both divide. */
ALWAYS_INLINE VEC gy_tap(const __global float* gc, int h0, int v, int i, int j, int check_rows)
{
    float t[VW];
    #pragma unroll
    for (int l = 0; l < VW; l++) {
        const int p = v * VW + l, r = p / W;
        const int tw = p - r * W + PL - j * DW;
        const int th = r + PT - i * DH;             /* h0 is a multiple of SH */
        const int oh = h0 / SH + th / SH;
        const bool row_ok = !check_rows || (h0 + th >= 0 && oh < OH && h0 + r < H);
        const bool ok = p < NPIXI && tw >= 0 && tw % SW == 0 && tw / SW < OW
                        && (th % SH + SH) % SH == 0;
        const float val = ok ? gc[(row_ok ? oh : 0) * OW + tw / SW] : 0.0f;
        t[l] = row_ok ? val : 0.0f;
    }
    return VEC_OF(t);
}

#define NBI ((H + RB - 1) / RB)
#define BI_ROWS(CHECK, H0)                                                                    \
    _Pragma("unroll")                                                                         \
    for (int i = 0; i < KH; i++)                                                              \
        _Pragma("unroll")                                                                     \
        for (int j = 0; j < KW; j++)                                                          \
            _Pragma("unroll")                                                                 \
            for (int v = 0; v < NVI; v++)                                                     \
                acc[v] = gy_tap(gc, H0, v, i, j, CHECK) * wk[i][j] + acc[v];

/* As depthwise_backward_input, on row blocks. Global size (ceil(H/RB), N*C). */
__kernel void depthwise_backward_input_rows(__global const float* restrict gy,
                                            __global const float* restrict w,
                                            __global float* restrict gx)
{
    const int h0 = H <= RB ? 0 : get_global_id(0) * RB;
    const int plane = get_global_id(1);             /* n*C + c */
    const int n = plane / C;
    const int c = plane - n * C;
    VEC acc[NVI];
    #pragma unroll
    for (int v = 0; v < NVI; v++)
        acc[v] = (VEC)(0.0f);
    for (int m = 0; m < M; m++) {
        const int oc = c * M + m;
        const __global float* gc = gy + (n * CO + oc) * (OH * OW);
        float wk[KH][KW];
        #pragma unroll
        for (int i = 0; i < KH; i++)
            #pragma unroll
            for (int j = 0; j < KW; j++)
                wk[i][j] = w[(oc * KH + i) * KW + j];
        /* `&` between the interior block's tests, not `&&`: with some shapes' defines one of
         * them is a constant, and clang's warning about it reached users' consoles. */
        if (h0 == 0) {
            BI_ROWS(1, 0)
        } else if (h0 == (NBI - 1) * RB) {
            BI_ROWS(1, (NBI - 1) * RB)
        } else if ((h0 + PT - (KH - 1) * DH >= 0) & ((h0 + RB - 1 + PT) / SH < OH) & (h0 + RB <= H)) {
            BI_ROWS(0, h0)
        } else {
            BI_ROWS(1, h0)
        }
    }
    __global float* gb = gx + plane * (H * W) + h0 * W;
    const int count = h0 + RB <= H ? NPIXI : (H - h0) * W;
    #pragma unroll
    for (int v = 0; v < NVI; v++)
        if (h0 + RB <= H) STORE_LANES(acc[v], gb, v, NPIXI);
        else STORE_LANES(acc[v], gb, v, count);
}

/* acc[i][j] += x under tap (i, j) times gy, over the block at oh0; accb += gy. */
#define BW_ROWS(CHECK, OH0)                                                                 \
    _Pragma("unroll")                                                                         \
    for (int v = 0; v < NV; v++) {                                                            \
        float t[VW];                                                                          \
        _Pragma("unroll")                                                                     \
        for (int l = 0; l < VW; l++)                                                          \
            t[l] = v * VW + l < ((OH0) + RB <= OH ? NPIX : (OH - (OH0)) * OW)                 \
                   ? gb[v * VW + l] : 0.0f;                                                   \
        const VEC gv = VEC_OF(t);                                                             \
        accb += gv;                                                                           \
        _Pragma("unroll")                                                                     \
        for (int i = 0; i < KH; i++)                                                          \
            _Pragma("unroll")                                                                 \
            for (int j = 0; j < KW; j++)                                                      \
                acc[i][j] = x_tap(xc, OH0, v, i, j, CHECK) * gv + acc[i][j];                  \
    }

/* As depthwise_backward_weight, on row blocks: work item (oc, s) sums the blocks
 * s*blocks_per_slice .. of the N*ceil(OH/RB) blocks of channel oc. Global size (CO, slices). */
__kernel void depthwise_backward_weight_rows(__global const float* restrict x,
                                             __global const float* restrict gy,
                                             __global float* restrict part,
                                             __global float* restrict partb,
                                             const int n_count, const int blocks_per_slice)
{
    const int oc = get_global_id(0);
    const int s = get_global_id(1);
    if (oc >= CO) return;
    const int nb = (OH + RB - 1) / RB;
    const int begin = s * blocks_per_slice;
    const int end = min(begin + blocks_per_slice, n_count * nb);

    VEC acc[KH][KW];
    #pragma unroll
    for (int i = 0; i < KH; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++)
            acc[i][j] = (VEC)(0.0f);
    VEC accb = (VEC)(0.0f);

    for (int blk = begin; blk < end; blk++) {
        const int n = blk / nb;
        const int oh0 = OH <= RB ? 0 : (blk - n * nb) * RB;
        const __global float* xc = x + (n * C + oc / M) * (H * W);
        const __global float* gb = gy + (n * CO + oc) * (OH * OW) + oh0 * OW;
        /* Lanes past the plane's last row carry gy = 0 and x = 0. */
        ROW_BLOCK_CASES(BW_ROWS, oh0)
    }

    #pragma unroll
    for (int i = 0; i < KH; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++)
            part[(s * (KH * KW) + i * KW + j) * CO + oc] = HSUMV(acc[i][j]);
    partb[s * CO + oc] = HSUMV(accb);
}
