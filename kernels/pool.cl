/* pool.cl: 2-D max and average pooling, forward and backward, and global pooling.
 *
 * Layout NCHW: x[n][c][ih][iw] is x[(nc * H + ih) * W + iw] with nc = n * C + c, and
 * y[n][c][oh][ow] is y[(nc * OH + oh) * OW + ow]. Batch and channels fold into one index nc:
 * pooling treats every (n, c) plane alike.
 *
 * Shapes come in as -D defines so the window loops unroll: H, W (input plane), OH, OW (output
 * plane), KH, KW (window), SH, SW (stride), PT, PB, PL, PR (padding top/bottom/left/right,
 * each smaller than the window, so every window holds at least one real pixel). The forward
 * kernels and average backward share that one set of defines, so a layer costs one build; max
 * backward and the global kernels take sizes as arguments and come from the build without
 * shape defines.
 *
 * Work items (2-D pooling): each owns VEC = 8 consecutive pixels of one row -- outputs in the
 * forward kernels, input pixels in average backward -- and computes them as one float8, so
 * the window arithmetic runs in SIMD on PoCL (measured 3-7x faster than one pixel per work
 * item, whose scattered 2-D window loads PoCL cannot vectorise). Rows whose width is not a
 * multiple of 8 end in a partial chunk stored lane by lane. 1-D global size
 * N*C*rows*ceil(width / 8), any local size (the host passes None), no local memory or barriers.
 *
 * Average backward is the gather form: each input pixel sums, in a fixed order, the outputs
 * whose windows contain it. Max backward owns a plane per work item (see there). No atomics:
 * results are deterministic and overlapping windows (stride < kernel) are race-free.
 *
 * Max pooling: padding acts as -inf (it never wins); ties go to the FIRST maximum in row-major
 * window order (strict >), a NaN wins (the LAST NaN in that order: PyTorch's CPU and CUDA
 * kernels take any value that is > the best or NaN), and a window of -inf picks its first real
 * pixel -- PyTorch's rules. argmax is ih * W + iw, an index into the H*W plane.
 */
#ifndef H
#define H 1
#define W 1
#define OH 1
#define OW 1
#define KH 1
#define KW 1
#define SH 1
#define SW 1
#define PT 0
#define PB 0
#define PL 0
#define PR 0
#endif

/* First output index whose window (start o*S - P, length K) reaches input index i:
 * ceil((i + P - K + 1) / S) clamped at 0, written without negative division. */
#define FIRST_OUT(i, P, K, S) ((i) + (P) - (K) + 1 <= 0 ? 0 : ((i) + (P) - (K) + (S)) / (S))
/* Last output index whose window starts at or before i, clamped to the output size. */
#define LAST_OUT(i, P, S, O) min(((i) + (P)) / (S), (O) - 1)

/* Vector width along a row: each work item computes VEC consecutive outputs (forward) or
 * input pixels (average backward) of one row as a float8. SPAN input columns feed VEC outputs. */
#define VEC 8
#define SPAN ((VEC - 1) * SW + KW)
#define CHUNKS ((OW + VEC - 1) / VEC)
#define ICHUNKS ((W + VEC - 1) / VEC)
#define LANES (int8)(0, 1, 2, 3, 4, 5, 6, 7)

/* Store the first `n` lanes of v at out (all 8 when n >= 8): the last chunk of a row may be
 * shorter than a vector, and writing past it would touch the next row or plane. */
inline void store8_clipped(const float8 v, __global float* out, const int n)
{
    if (n >= VEC) {
        USTORE8(v, out);
    } else {
        float b[VEC];
        STORE8(v, b);
        for (int j = 0; j < n; ++j) out[j] = b[j];
    }
}

/* Load the SPAN input columns [ws0, ws0 + SPAN) of row `row` into s, PAD where outside. */
#define LOAD_SPAN(s, row, ws0, PAD)                                                   \
    if ((ws0) >= 0 && (ws0) + SPAN <= W) {                                            \
        for (int c = 0; c < SPAN; ++c) s[c] = row[(ws0) + c];                         \
    } else {                                                                          \
        for (int c = 0; c < SPAN; ++c) {                                              \
            const int iw = (ws0) + c;                                                 \
            s[c] = (iw >= 0 && iw < W) ? row[iw] : (PAD);                             \
        }                                                                             \
    }
/* Lane j of output chunk sees column kw of its window at s[j * SW + kw]. */
#define GATHER8(s, kw) (float8)(s[(kw)], s[(kw) + SW], s[(kw) + 2 * SW], s[(kw) + 3 * SW],    \
                                s[(kw) + 4 * SW], s[(kw) + 5 * SW], s[(kw) + 6 * SW], s[(kw) + 7 * SW])

/* The hot loop uses no builtins (select, isnan, max, vstore8: out-of-line calls on PoCL's
 * CPU driver, which made this kernel 4x slower): ternaries on vectors, v != v for NaN, and
 * STORE8 of common.h. */
__kernel void maxpool2d_forward(__global const float* restrict x, __global float* restrict y,
                                __global int* restrict argmax, const int items)
{
    const int gid = get_global_id(0);
    if (gid >= items) return;
    const int chunk = gid % CHUNKS;
    const int oh = (gid / CHUNKS) % OH;
    const int nc = gid / (CHUNKS * OH);
    const int ow0 = chunk * VEC;
    const int hs = oh * SH - PT, ws0 = ow0 * SW - PL;
    __global const float* plane = x + (size_t)nc * (H * W);
    const int8 ws = ws0 + LANES * SW;
    float8 best = (float8)(-INFINITY);
    /* a window of -inf: its first real pixel */
    int8 best_i = (hs > 0 ? hs : 0) * W + (ws > 0 ? ws : (int8)(0));
    for (int kh = 0; kh < KH; ++kh) {
        const int ih = hs + kh;
        if (ih < 0 || ih >= H) continue;
        float s[SPAN];
        __global const float* row = plane + ih * W;
        LOAD_SPAN(s, row, ws0, -INFINITY)
        #pragma unroll
        for (int kw = 0; kw < KW; ++kw) {
            const float8 v = GATHER8(s, kw);
            /* strict > keeps the first of equal maxima; every NaN takes over (the last wins) */
            const int8 take = (v > best) | (v != v);
            best = take ? v : best;
            best_i = take ? ih * W + ws + kw : best_i;
        }
    }
    const size_t o = ((size_t)nc * OH + oh) * OW + ow0;
    if (ow0 + VEC <= OW) {
        STORE8(best, y + o);
        STORE8(best_i, argmax + o);
    } else {
        float b[VEC]; int bi[VEC];
        STORE8(best, b); STORE8(best_i, bi);
        for (int j = 0; j < OW - ow0; ++j) { y[o + j] = b[j]; argmax[o + j] = bi[j]; }
    }
}

/* Max pooling backward takes no window geometry (the op's signature carries only argmax and
 * x's shape), so it cannot gather. Instead ONE work item owns a whole (n, c) plane: it zeroes
 * its gx plane, then adds gy into gx[argmax] over the outputs in row-major order. Serial within
 * a plane and planes disjoint: deterministic and race-free without atomics, for overlapping
 * windows too, and O(H*W + OH*OW) work per plane. Sizes are runtime arguments so this kernel
 * comes from the one build without shape defines. Global size: planes = N*C. */
__kernel void maxpool2d_backward(__global const float* restrict gy, __global const int* restrict argmax,
                                 __global float* restrict gx, const int planes,
                                 const int in_plane, const int out_plane)
{
    const int nc = get_global_id(0);
    if (nc >= planes) return;
    __global float* g = gx + (size_t)nc * in_plane;
    __global const float* d = gy + (size_t)nc * out_plane;
    __global const int* a = argmax + (size_t)nc * out_plane;
    for (int i = 0; i < in_plane; ++i) g[i] = 0.0f;
    for (int o = 0; o < out_plane; ++o) {
        const int i = a[o];
        if ((uint)i < (uint)in_plane) g[i] += d[o];   /* a corrupt argmax must not write outside */
    }
}

__kernel void avgpool2d_forward(__global const float* restrict x, __global float* restrict y,
                                const int items, const int count_include_pad)
{
    const int gid = get_global_id(0);
    if (gid >= items) return;
    const int chunk = gid % CHUNKS;
    const int oh = (gid / CHUNKS) % OH;
    const int nc = gid / (CHUNKS * OH);
    const int ow0 = chunk * VEC;
    const int hs = oh * SH - PT, ws0 = ow0 * SW - PL;
    __global const float* plane = x + (size_t)nc * (H * W);
    float8 acc = (float8)(0.0f);
    for (int kh = 0; kh < KH; ++kh) {
        const int ih = hs + kh;
        if (ih < 0 || ih >= H) continue;
        float s[SPAN];
        __global const float* row = plane + ih * W;
        LOAD_SPAN(s, row, ws0, 0.0f)
        for (int kw = 0; kw < KW; ++kw) acc += GATHER8(s, kw);
    }
    /* divisor: the window clipped to the padded extent (count_include_pad, as PyTorch), else
     * the number of real pixels in it */
    const int8 ws = ws0 + LANES * SW;
    const int he = min(hs + KH, H + PB);
    const int8 we = min(ws + KW, W + PR);
    const int8 cnt = count_include_pad ? (he - hs) * (we - ws)
                                       : (min(he, H) - max(hs, 0)) * (min(we, W) - max(ws, 0));
    const float8 r = acc / convert_float8(cnt);
    const size_t o = ((size_t)nc * OH + oh) * OW + ow0;
    store8_clipped(r, y + o, OW - ow0);
}

/* Gather form: a work item owns VEC consecutive input pixels of row ih and adds gy / divisor
 * of every output whose window holds them, outputs in row-major order (deterministic). */
__kernel void avgpool2d_backward(__global const float* restrict gy, __global float* restrict gx,
                                 const int items, const int count_include_pad)
{
    const int gid = get_global_id(0);
    if (gid >= items) return;
    const int chunk = gid % ICHUNKS;
    const int ih = (gid / ICHUNKS) % H;
    const int nc = gid / (ICHUNKS * H);
    const int iw0 = chunk * VEC;
    const int8 iw = iw0 + LANES;
    const int oh0 = FIRST_OUT(ih, PT, KH, SH), oh1 = LAST_OUT(ih, PT, SH, OH);
    __global const float* g = gy + (size_t)nc * (OH * OW);
    float8 acc = (float8)(0.0f);
#if SW >= KW
    /* Windows do not overlap along a row: lane j lies in at most one window column, ow[j].
     * Gathering that one value per lane avoids a loop over the chunk's outputs (2x faster on
     * the usual 2x2 stride-2 pool). */
    const int8 t = iw + PL;
    const int8 owj = min(t / SW, OW - 1);
    const int8 in_col = (t - owj * SW < KW) & (t / SW < OW);
    const int8 ws = owj * SW - PL, we = min(ws + KW, W + PR);
    const int8 cols = count_include_pad ? we - ws : min(we, W) - max(ws, 0);
    for (int oh = oh0; oh <= oh1; ++oh) {
        const int hs = oh * SH - PT, he = min(hs + KH, H + PB);
        const int rows = count_include_pad ? he - hs : min(he, H) - max(hs, 0);
        __global const float* grow = g + oh * OW;
        const float8 v = (float8)(grow[owj.s0], grow[owj.s1], grow[owj.s2], grow[owj.s3],
                                  grow[owj.s4], grow[owj.s5], grow[owj.s6], grow[owj.s7]);
        acc += select((float8)(0.0f), v / convert_float8(rows * cols), in_col);
    }
#else
    const int ow0 = FIRST_OUT(iw0, PL, KW, SW), ow1 = LAST_OUT(iw0 + VEC - 1, PL, SW, OW);
    for (int oh = oh0; oh <= oh1; ++oh) {
        const int hs = oh * SH - PT, he = min(hs + KH, H + PB);
        const int rows = count_include_pad ? he - hs : min(he, H) - max(hs, 0);
        for (int ow = ow0; ow <= ow1; ++ow) {
            const int ws = ow * SW - PL, we = min(ws + KW, W + PR);
            const int cols = count_include_pad ? we - ws : min(we, W) - max(ws, 0);
            const float v = g[oh * OW + ow] / (float)(rows * cols);
            acc += select((float8)(0.0f), (float8)(v), (iw >= ws) & (iw < ws + KW));
        }
    }
#endif
    const size_t o = ((size_t)nc * H + ih) * W + iw0;
    store8_clipped(acc, gx + o, W - iw0);
}

/* ---- tiled average pooling: windows that tile the plane (stride == kernel, no padding) ----
 * The usual 2x2 stride-2 pool of LeNet. One work item per output row r = nc * OH + oh reads or
 * writes the KH input rows under it whole, loops fully unrolled from the defines: measured on
 * PoCL at 256x6x28x28 the forward takes 0.15 ms (0.45 ms for avgpool2d_forward) and the
 * backward 0.07 ms (1.26 ms for avgpool2d_backward). Input rows and columns past OH*KH, OW*KW
 * (floor output size) are outside every window. 1-D global size N*C*OH, any local size.
 * Without padding both divisor rules give KH*KW. */
__kernel void avgpool2d_forward_tiled(__global const float* restrict x, __global float* restrict y,
                                      const int rows)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    const int nc = r / OH, oh = r - nc * OH;
    __global const float* p = x + ((size_t)nc * H + oh * KH) * W;
    __global float* o = y + (size_t)r * OW;
    #pragma unroll
    for (int ow = 0; ow < OW; ++ow) {
        float s = 0.0f;
        #pragma unroll
        for (int kh = 0; kh < KH; ++kh) {
            #pragma unroll
            for (int kw = 0; kw < KW; ++kw) s += p[kh * W + ow * KW + kw];
        }
        o[ow] = s / (float)(KH * KW);
    }
}

/* Max pooling over tiling windows, as avgpool2d_forward_tiled: one output row per work item,
 * the window loops unrolled; ties, NaN and all--inf windows as maxpool2d_forward (a tiling
 * window has no padding, so its first pixel is real). 1-D global size N*C*OH. Measured on
 * PoCL, 64x32x24x24: 0.57 ms for maxpool2d_forward. */
__kernel void maxpool2d_forward_tiled(__global const float* restrict x, __global float* restrict y,
                                      __global int* restrict argmax, const int rows)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    const int nc = r / OH, oh = r - nc * OH;
    __global const float* p = x + ((size_t)nc * H + oh * KH) * W;
    __global float* o = y + (size_t)r * OW;
    __global int* a = argmax + (size_t)r * OW;
    #pragma unroll
    for (int ow = 0; ow < OW; ++ow) {
        float best = -INFINITY;
        int best_i = oh * KH * W + ow * KW;
        #pragma unroll
        for (int kh = 0; kh < KH; ++kh) {
            #pragma unroll
            for (int kw = 0; kw < KW; ++kw) {
                const float v = p[kh * W + ow * KW + kw];
                const int take = v > best || v != v;
                best = take ? v : best;
                best_i = take ? (oh * KH + kh) * W + ow * KW + kw : best_i;
            }
        }
        o[ow] = best;
        a[ow] = best_i;
    }
}

/* The tiled backward kernels' writes: the KH input rows under output row oh of plane nc get
 * VALUE_AT(iw) (a macro of the input row ih and column iw) inside the windows, 0 in the
 * columns past OW*KW, times the derivative of activation `act` (a common.h code) at y where
 * one is set; the last output row also zeroes the input rows past OH*KH. Eight columns at a
 * time as one float8: scalar code left to PoCL to vectorise across work items needs scatters
 * (each item writes its own rows), and LLVM's cost model refuses them on AVX2, where the
 * scalar form ran at 12 GB/s (256x6x28x28 with tanh: 0.86-1.0 ms). The activation is an
 * argument, not a define: the forward's pooling (no activation) and this backward then share
 * one build, where each costs PoCL 0.2-0.7 s at a cold start. */
DEFINE_ACTIVATE_BACKWARDV(float8)
#define GX_AT(VALUE_AT, iw) ((iw) < OW * KW ? VALUE_AT(iw) : 0.0f)
#define TILED_GX_ROWS(VALUE_AT)                                                               \
    _Pragma("unroll")                                                                         \
    for (int kh = 0; kh < KH; ++kh) {                                                         \
        const int ih = oh * KH + kh;                                                          \
        const size_t base = ((size_t)nc * H + ih) * W;                                        \
        _Pragma("unroll")                                                                     \
        for (int iw = 0; iw + 8 <= W; iw += 8) {                                              \
            float8 d = (float8)(GX_AT(VALUE_AT, iw), GX_AT(VALUE_AT, iw + 1),                 \
                                GX_AT(VALUE_AT, iw + 2), GX_AT(VALUE_AT, iw + 3),             \
                                GX_AT(VALUE_AT, iw + 4), GX_AT(VALUE_AT, iw + 5),             \
                                GX_AT(VALUE_AT, iw + 6), GX_AT(VALUE_AT, iw + 7));            \
            if (act != ACT_NONE)                                                              \
                d = activate_backwardv(d, LOAD8(y + base + iw), act, slope);                  \
            STORE8(d, gx + base + iw);                                                        \
        }                                                                                     \
        _Pragma("unroll")                                                                     \
        for (int iw = W / 8 * 8; iw < W; ++iw) {                                              \
            float d = GX_AT(VALUE_AT, iw);                                                    \
            if (act != ACT_NONE)                                                              \
                d = activate_backward(d, y[base + iw], act, slope);                           \
            gx[base + iw] = d;                                                                \
        }                                                                                     \
    }                                                                                         \
    if (H > OH * KH && oh == OH - 1) {                                                        \
        for (size_t i = ((size_t)nc * H + OH * KH) * W; i < ((size_t)nc + 1) * H * W; ++i)   \
            gx[i] = 0.0f;                                                                     \
    }

/* Max pooling backward over tiling windows: each input pixel lies in at most one window, so
 * gx gathers: gy of its window where the window's argmax names it, else 0. One output row per
 * work item writes the KH input rows under it (and, the last, the rows past OH*KH). With
 * act set (common.h code) also the backward of the activation whose output y (shape of
 * gx) the pool read, as avgpool2d_backward_tiled. Deterministic; 1-D global size N*C*OH. */
__kernel void maxpool2d_backward_tiled(__global const float* restrict gy, __global const int* restrict argmax,
                                       __global const float* restrict y, __global float* restrict gx,
                                       const int rows, const int act, const float slope)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    const int nc = r / OH, oh = r - nc * OH;
    __global const float* g = gy + (size_t)r * OW;
    __global const int* a = argmax + (size_t)r * OW;
    #define ARGMAX_AT(iw) (a[(iw) / KW] == ih * W + (iw) ? g[(iw) / KW] : 0.0f)
    TILED_GX_ROWS(ARGMAX_AT)
}

/* gx = gy / (KH*KW) spread over each window, zero outside every window. With act set
 * (common.h code) it also applies the backward of the activation whose output y (shape of gx)
 * the pool read: gx = that * f'(y), one pass instead of two. y is unread otherwise. */
__kernel void avgpool2d_backward_tiled(__global const float* restrict gy, __global const float* restrict y,
                                       __global float* restrict gx, const int rows, const int act,
                                       const float slope)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    const int nc = r / OH, oh = r - nc * OH;
    __global const float* g = gy + (size_t)r * OW;
    float v[OW];
    #pragma unroll
    for (int ow = 0; ow < OW; ++ow) v[ow] = g[ow] / (float)(KH * KW);
    #define SPREAD_AT(iw) v[(iw) / KW]
    TILED_GX_ROWS(SPREAD_AT)
}

#ifndef C
#define C 1             /* avgpool2d_backward_transposed: channels */
#endif
#ifndef COP
#define COP 8           /* ... gxt's row length, a multiple of 8, >= C */
#endif
#ifndef CB
#define CB 8            /* ... channels per pass, 8 or 16, dividing COP */
#endif
/* avgpool2d_backward_tiled's gx for 2x2 windows with stride 2 (no padding), written
 * pixel-major for the convolution before the pool (conv2d.cl's gyt layout):
 * gxt[(n*H*W + ih*W + iw)*COP + c], zeros for c >= C: the transpose that convolution's
 * backward needs, without gx in between. Work item: image n and window row oh (input rows
 * 2*oh and 2*oh + 1, adjacent in memory), every channel, CB at a time. Eight pixels of eight
 * channels are computed along the rows as float8s (the pooled gradient spread by a constant
 * index pattern, the activation's backward), turned pixel-major in registers (transpose8x8),
 * and stored CB channels per pixel: a private [channel][pixel] array read back across took a
 * load and a store per value (LeNet-5's conv2: 0.228 against 0.156 ms at batch 256, 0.091
 * against 0.064 at 64). The last row of an odd H is zero, as are the columns past 2*OW.
 * 1-D global size N*OH. */
#define PAIR (2 * W)
#define PAIR8 ((PAIR + 7) / 8)

__kernel void avgpool2d_backward_transposed(__global const float* restrict gy, __global const float* restrict y,
                                            __global float* restrict gxt, const int rows, const int act,
                                            const float slope)
{
    const int r = get_global_id(0);
    if (r >= rows) return;
    const int n = r / OH, oh = r - n * OH;
    __global float* out = gxt + (size_t)(n * (H * W) + 2 * oh * W) * COP;
    #pragma unroll
    for (int c0 = 0; c0 < COP; c0 += CB) {
        #pragma unroll
        for (int k0 = 0; k0 < PAIR8 * 8; k0 += 8) {
            float8 v[CB / 8][8];         /* [channel half][channel a: pixels k0 + j], then transposed */
            #pragma unroll
            for (int h = 0; h < CB / 8; h++) {
                #pragma unroll
                for (int a = 0; a < 8; a++) {
                    const int c = MIN(c0 + 8 * h + a, C - 1);
                    __global const float* g = gy + ((size_t)(n * C + c) * OH + oh) * OW;
                    __global const float* yr = y + ((size_t)(n * C + c) * H + 2 * oh) * W + k0;
                    float gs[8], ys[8];
                    #pragma unroll
                    for (int j = 0; j < 8; j++) {
                        const int k = k0 + j, iw = k % W;
                        gs[j] = k < PAIR && iw / 2 < OW ? g[iw / 2] * 0.25f : 0.0f;
                        ys[j] = k < PAIR ? yr[j] : 0.0f;
                    }
                    float8 d = LOAD8(gs);
                    if (act != ACT_NONE)
                        d = activate_backwardv(d, LOAD8(ys), act, slope);
                    v[h][a] = c0 + 8 * h + a < C ? d : (float8)(0.0f);
                }
                transpose8x8(v[h]);     /* v[h][j]: the 8 channels of pixel k0 + j */
            }
            #pragma unroll
            for (int j = 0; j < 8; j++) {
                if (k0 + j < PAIR) {
                    __global float* p = out + (k0 + j) * COP + c0;
#if CB == 16
                    *(__global float16_unaligned*)p = (float16)(v[0][j], v[1][j]);
#else
                    USTORE8(v[0][j], p);
#endif
                }
            }
        }
    }
    if (H > 2 * OH && oh == OH - 1) {
        for (int k = 0; k < (H - 2 * OH) * W * COP; k++)
            out[2 * W * COP + k] = 0.0f;
    }
}

/* ---- global pooling: one (n, c) plane of hw pixels per output. hw is a runtime argument so
 * every shape shares the build without shape defines. ---- */

__kernel void global_avgpool2d_forward(__global const float* restrict x, __global float* restrict y,
                                       const int planes, const int hw)
{
    const int nc = get_global_id(0);
    if (nc >= planes) return;
    __global const float* p = x + (size_t)nc * hw;
    /* four partial sums: shorter dependency chains and a little less rounding error */
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    int i = 0;
    for (; i + 4 <= hw; i += 4) {
        s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3];
    }
    for (; i < hw; ++i) s0 += p[i];
    y[nc] = ((s0 + s1) + (s2 + s3)) / (float)hw;
}

/* One work item per input pixel; global size N*C*H*W. */
__kernel void global_avgpool2d_backward(__global const float* restrict gy, __global float* restrict gx,
                                        const int total, const int hw)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    gx[gid] = gy[gid / hw] / (float)hw;
}

__kernel void global_maxpool2d_forward(__global const float* restrict x, __global float* restrict y,
                                       __global int* restrict argmax, const int planes, const int hw)
{
    const int nc = get_global_id(0);
    if (nc >= planes) return;
    __global const float* p = x + (size_t)nc * hw;
    float best = -INFINITY;
    int best_i = 0;
    for (int i = 0; i < hw; ++i) {
        const float v = p[i];
        if (v > best || isnan(v)) { best = v; best_i = i; }   /* as maxpool2d_forward */
    }
    y[nc] = best;
    argmax[nc] = best_i;
}

/* Gather form, one work item per input pixel: the pixel its plane's argmax names takes gy. */
__kernel void global_maxpool2d_backward(__global const float* restrict gy, __global const int* restrict argmax,
                                        __global float* restrict gx, const int total, const int hw)
{
    const int gid = get_global_id(0);
    if (gid >= total) return;
    const int nc = gid / hw;
    gx[gid] = (gid - nc * hw) == argmax[nc] ? gy[nc] : 0.0f;
}
