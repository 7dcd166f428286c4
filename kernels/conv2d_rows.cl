/* conv2d_rows.cl: Conv2D (cross-correlation, as PyTorch's conv2d) for layers with few output
 * channels, stride 1, groups 1, no dilation: forward with bias and activation fused, and the
 * weight (and bias) gradient. The general kernels (conv2d.cl) put their vector lanes over
 * output channels, which leaves lanes idle below 8 channels and broadcasts every input pixel;
 * here the lanes run along an output row instead.
 *
 * Layouts (row-major, NCHW):
 *   x   (N, CI, H, W), element x[((n*CI + c)*H + h)*W + w], padded by PT, PB rows and PL, PR
 *       columns of zeros that the forward never stores: HP = H + PT + PB, WP = W + PL + PR.
 *   xp  (N, CI, HP, WP): x already zero-padded (the weight gradient reads this form).
 *   w   (CO, CI, KH, KW) as PyTorch's; b (CO,).
 *   y   (N, CO, OH, OW), OH = HP - KH + 1, OW = WP - KW + 1:
 *       y[n, o, oh, ow] = b[o] + sum_{c,i,j} xp[n, c, oh + i, ow + j] * w[o, c, i, j];
 *       gy (dL/dy of the pre-activation output) likewise.
 *
 * CPU-style kernels, no local memory and no barriers: any work-group size works (on CPUs the
 * host passes small ones so that every core gets groups). A work item owns VW neighbouring
 * pixels of a row (VW = 16, 8, 4, 2 or 1, at most OW; float16 only where the host allows it:
 * pip's PoCL 3.0 aborts on float16 FMAs on AVX2 CPUs). The last block of a row is shifted
 * back to end at the row's end, overlapping its neighbour rather than reading past the row.
 * Shape constants come in as -D defines so the tap loops unroll; the defaults below only make
 * the file compile alone.
 */

#ifndef CI
#define CI 1            /* input channels */
#endif
#ifndef H
#define H 1             /* input height */
#endif
#ifndef W
#define W 1             /* input width */
#endif
#ifndef PT
#define PT 0            /* zero rows above the input (forward) */
#endif
#ifndef PB
#define PB 0            /* ... below it */
#endif
#ifndef PL
#define PL 0            /* zero columns left of it */
#endif
#ifndef PR
#define PR 0            /* ... right of it */
#endif
#ifndef KH
#define KH 1
#endif
#ifndef KW
#define KW 1
#endif
#ifndef CO
#define CO 1            /* output channels */
#endif
#ifndef N
#define N 1             /* batch */
#endif
#ifndef VW
#define VW 8            /* vector lanes along a row: 1, 2, 4, 8 or 16, at most OW */
#endif
#ifndef RB
#define RB 1            /* output rows per work item (forward), at most OH */
#endif
#ifndef OBC
#define OBC 1           /* output channels per work item (weight gradient) */
#endif

#define HP (H + PT + PB)
#define WP (W + PL + PR)
#define OH (HP - KH + 1)
#define OW (WP - KW + 1)
#define NCB ((OW + VW - 1) / VW)     /* column blocks per row */
#define NRB ((OH + RB - 1) / RB)     /* row blocks per image (forward) */
#ifndef RL
#define RL 1            /* row blocks per work item, one after another (forward) */
#endif
#define NRL ((NRB + RL - 1) / RL)

/* PoCL's CPU driver calls vload/vstore builtins out of line; a vector built from adjacent
 * scalars compiles to one (unaligned) vector load. */
#define LOAD2(p) ((float2)((p)[0], (p)[1]))
#define LOAD4(p) ((float4)((p)[0], (p)[1], (p)[2], (p)[3]))
#define STORE2(v, p) do { (p)[0] = (v).s0; (p)[1] = (v).s1; } while (0)
#define STORE4(v, p) do { STORE2((v).lo, p); STORE2((v).hi, (p) + 2); } while (0)
/* HALF / STOREH: the vector of VW/2 lanes that 2x2 pooling leaves of a row vector. */
#if VW == 16
#define VEC float16
#define LOADV(p) ((float16)(LOAD8(p), LOAD8((p) + 8)))
#define STOREV(v, p) do { STORE8((v).lo, p); STORE8((v).hi, (p) + 8); } while (0)
#define LANE(v, l) LANE16(v, l)
#define HSUM(v) hsum8((v).lo + (v).hi)
#define HALF float8
#define STOREH(v, p) STORE8(v, p)
#elif VW == 8
#define VEC float8
#define LOADV(p) LOAD8(p)
#define STOREV(v, p) STORE8(v, p)
#define LANE(v, l) LANE8(v, l)
#define HSUM(v) hsum8(v)
#define HALF float4
#define STOREH(v, p) STORE4(v, p)
#elif VW == 4
#define VEC float4
#define LOADV(p) LOAD4(p)
#define STOREV(v, p) STORE4(v, p)
#define LANE(v, l) LANE4(v, l)
#define HSUM(v) ((v).s0 + (v).s1 + (v).s2 + (v).s3)
#define HALF float2
#define STOREH(v, p) STORE2(v, p)
#elif VW == 2
#define VEC float2
#define LOADV(p) LOAD2(p)
#define STOREV(v, p) STORE2(v, p)
#define LANE(v, l) LANE2(v, l)
#define HSUM(v) ((v).s0 + (v).s1)
#define HALF float
#define STOREH(v, p) ((p)[0] = (v))
#else
#define VEC float
#define LOADV(p) ((p)[0])
#define STOREV(v, p) ((p)[0] = (v))
#define LANE(v, l) (v)
#define HSUM(v) (v)
#endif

#if VW > 1
/* Vector types of 4-byte alignment: a load or store through one is one unaligned vector
 * access, where LLVM turned element-wise ones (LOADV, STOREV) into pieces: partial loads and
 * shuffles, extracts and partial stores. */
typedef VEC vec_unaligned __attribute__((aligned(4)));
typedef HALF half_unaligned __attribute__((aligned(4)));
#define USTOREV(v, p) (*(__global vec_unaligned*)(p) = (v))
#define ULOADV(p) (*(const __global vec_unaligned*)(p))
#define USTOREH(v, p) (*(__global half_unaligned*)(p) = (v))
#define ULOADH(p) (*(const __global half_unaligned*)(p))
#else
typedef float vec_unaligned;
#define USTOREV(v, p) STOREV(v, p)
#define ULOADV(p) LOADV(p)
#endif

inline float hsum8(float8 v) {
    const float4 s = v.lo + v.hi;
    return (s.s0 + s.s1) + (s.s2 + s.s3);
}

/* tanhv, activatev and activate_backwardv (common.h) on this file's vectors. */
DEFINE_TANHV(VEC)
DEFINE_ACTIVATEV(VEC)
DEFINE_ACTIVATE_BACKWARDV(VEC)

/* Lane k's index: masks of the lanes inside a row (forward edge blocks, weight gradient). */
#if VW == 16
#define LANES ((int16)(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15))
#define MASK int16
#elif VW == 8
#define LANES ((int8)(0, 1, 2, 3, 4, 5, 6, 7))
#define MASK int8
#elif VW == 4
#define LANES ((int4)(0, 1, 2, 3))
#define MASK int4
#elif VW == 2
#define LANES ((int2)(0, 1))
#define MASK int2
#else
#define LANES 0
#define MASK int
#endif

/* A vector of x whose lane k is x at column s + k of the row p points into (p = that row +
 * s), zero where s + k lies outside 0..W-1; reads nothing outside the row, so it is safe at
 * the ends of the buffer. The forward's edge blocks use it where the cheap form (a plain
 * load, then zeroing the lanes outside the row) could read past the buffer. */
inline VEC load_row_safe(const __global float* p, const int s) {
#if VW == 1
    return s >= 0 && s < W ? p[0] : 0.0f;
#else
    float t[VW];
    #pragma unroll
    for (int k = 0; k < VW; k++)
        t[k] = s + k >= 0 && s + k < W ? p[k] : 0.0f;
    return LOADV(t);
#endif
}

/* The forward's loops over the input channels c (wc, xc) and tap columns j around BODY, in
 * which `inside` marks the lanes of column s = iw0 + j that lie inside the row. The tap
 * columns are a loop, not unrolled: unrolled, the overlapping loads of one row at j = 0, 1,
 * ... share their scalar loads and LLVM assembles each vector from them with shuffles
 * instead of one unaligned vector load. */
#define FWD_CHANNELS_AND_COLUMNS(BODY)                                                        \
    for (int c = 0; c < CI; c++) {                                                            \
        const int xc = x0 + c * (H * W);                                                      \
        const __global float* wc = w + c * (KH * KW);                                         \
        _Pragma("unroll 1")                                                                   \
        for (int j = 0; j < KW; j++) {                                                        \
            const int s = iw0 + j;                                                            \
            const MASK inside = LANES + s >= 0 && LANES + s < W;                              \
            BODY                                                                              \
        }                                                                                     \
    }
/* Input row r's products at tap column j of channel c, the row loaded by LOAD(p, r) (p: x at
 * input column s of input row ih0 + r). */
#define FWD_ROW(LOAD, r)                                                                      \
    {                                                                                         \
        const VEC xv = LOAD(x + xc + (r) * W + j, r);                                         \
        _Pragma("unroll")                                                                     \
        for (int q = 0; q < RB; q++) {                                                        \
            const int i = (r) - q;  /* the tap row input row r is for row q */                \
            if (i >= 0 && i < KH) {                                                           \
                _Pragma("unroll")                                                             \
                for (int o = 0; o < CO; o++)                                                  \
                    acc[q][o] = wc[(o * CI * KH + i) * KW + j] * xv + acc[q][o];              \
            }                                                                                 \
        }                                                                                     \
    }
/* Channels outermost, every input row of the block for each tap column. */
#define FWD_ALL_ROWS(LOAD)                                                                    \
    _Pragma("unroll")                                                                         \
    for (int r = 0; r < RB + KH - 1; r++)                                                     \
        FWD_ROW(LOAD, r)
#define FWD_TAPS(LOAD) FWD_CHANNELS_AND_COLUMNS(FWD_ALL_ROWS(LOAD))
/* Blocks whose rows reach into the top or bottom padding: input rows outermost, so that a
 * row outside the input is skipped by one branch per item and row around all its channels
 * and tap columns. LeNet-5 conv2's input gradient (gy padded by 4) has 29% of its rows'
 * products in the padding; 4 of its 7 row blocks run here: 1.29x at batch 64 and 256
 * against zeroing those rows inside the channel-outer loops (alternating rounds; ResNet-20's
 * 16 -> 16 and 3 -> 16 3x3 pad 1 layers 1.05x and 1.02x). The channel-outer order stays
 * everywhere else: this one measured 0.95-0.98x on blocks with every row inside (its loop
 * bodies are smaller). The two orders add the same products in a different order. */
#define ROW_INSIDE(r) ((unsigned)(ih0 + (r)) < (unsigned)H)
#define FWD_TAPS_BY_ROW(LOAD)                                                                 \
    _Pragma("unroll")                                                                         \
    for (int r = 0; r < RB + KH - 1; r++) {                                                   \
        if (ROW_INSIDE(r))                                                                    \
            FWD_CHANNELS_AND_COLUMNS(FWD_ROW(LOAD, r))                                        \
    }
#define LOAD_PLAIN(p, r) LOADV(p)
/* Edge blocks zero the lanes outside the row after a plain load. */
#define LOAD_COLUMNS(p, r) (inside ? LOADV(p) : (VEC)(0.0f))
#define LOAD_SAFE(p, r) load_row_safe(p, s)

/* y = act(conv(x padded, w) + b), or with pool (1 average, 2 max) that y pooled 2x2 (stride
 * 2): y (N, CO, OH/2, OW/2), and with keep the full-size map too, into y_full (a training step
 * keeps it for the activation's backward and pools it in the same pass); y_full is not
 * touched otherwise. Pooling and keep are arguments, not defines, so that a layer's training
 * and eval forwards and its weight gradient share one build. b is read only when has_bias;
 * act an ACT_ code of common.h. With has_residual (not with pool) y = act(conv + b + r), r of
 * y's shape (an eval-mode convolution run into the Add after it).
 * Block: VW pixels of RB neighbouring output rows, all CO channels (CO*RB accumulator
 * vectors); a work item makes RL blocks of one column, one after another. Each input row it
 * reads is loaded once per tap column j and feeds every output row and channel it touches:
 * one vector load, then FMAs with scalar (broadcast) weights.
 * Padding is never stored: blocks whose loads touch the padding (edge blocks) skip the rows
 * outside the input (FWD_TAPS_BY_ROW) and zero the lanes outside it, by a plain load and a
 * lane mask where all of the item's loads lie inside the buffer, else lane by lane; interior
 * blocks load unchecked. The sums are the padded input's (the padding's zero products left
 * out). Global size (N * NRL * NCB), 1-D. */
__kernel void conv2d_rows_forward(__global const float* restrict x,
                                  __global const float* restrict w,
                                  __global const float* restrict b,
                                  __global float* restrict y,
                                  __global float* restrict y_full,
                                  __global const float* restrict r,
                                  const int has_bias, const int has_residual, const int act, const float slope,
                                  const int pool, const int keep)
{
    int t = get_global_id(0);
    if (t >= N * NRL * NCB) return;
    const int cb = t % NCB;
    t /= NCB;
    const int rl = t % NRL;
    const int n = t / NRL;
    #pragma unroll 1
    for (int rb = rl * RL; rb < MIN(rl * RL + RL, NRB); rb++) {
#if VW > OW
    const int ow0 = 0;               /* one block wider than the row: lanes past OW are not stored */
#else
    const int ow0 = MIN(cb * VW, OW - VW);
#endif
    const int oh0 = MIN(rb * RB, OH - RB);
    /* A last row block shifted back leaves its first rows to the block before it: the two
     * may sum them in different orders (by rows or by channels, below), and whichever stored
     * last would decide the result's last bits. Column blocks sum in the same order. */
    const int first_row = rb * RB - oh0;
    const int ih0 = oh0 - PT;        /* input row and column of the item's first load */
    const int iw0 = ow0 - PL;
    const int x0 = n * (CI * H * W) + ih0 * W + iw0;

    VEC acc[RB][CO];
    #pragma unroll
    for (int q = 0; q < RB; q++)
        #pragma unroll
        for (int o = 0; o < CO; o++)
            acc[q][o] = (VEC)(0.0f);

#if PL || PR || PT || PB || VW > OW
    /* `|`, not `||`: with VW > OW, iw0 is a constant, and clang warns of a constant
     * operand of `||` (the warning reached every user's console) */
    if ((iw0 < 0) | (iw0 + VW + KW - 1 > W) | (ih0 < 0) | (ih0 + RB + KH - 1 > H)) {
        /* The first and last elements the item's plain loads would touch (rows outside
         * the input included). */
        const int lo = x0;
        const int hi = x0 + (CI - 1) * (H * W) + (RB + KH - 2) * W + KW - 1 + VW;
        const bool rows_inside = ih0 >= 0 && ih0 + RB + KH - 1 <= H;
        if (lo >= 0 && hi <= N * CI * H * W) {
            if (rows_inside) {
                FWD_TAPS(LOAD_COLUMNS)
            } else {
                FWD_TAPS_BY_ROW(LOAD_COLUMNS)
            }
        } else if (rows_inside) {
            FWD_TAPS(LOAD_SAFE)
        } else {
            FWD_TAPS_BY_ROW(LOAD_SAFE)
        }
    } else
#endif
    {
        FWD_TAPS(LOAD_PLAIN)
    }

    /* The epilogue runs over a copy of the accumulators, its loop over the output channels
     * left rolled: unrolled, its RB x CO activations (every ACT_ form, `act` being an
     * argument) made most of the code PoCL compiles for this kernel. LeNet-5's conv1 forward
     * and conv2's input gradient compiled in 1.2-1.6 s instead of 1.8-2.5 on a cold cache, and
     * whole steps ran even (alternating rounds, new/old 0.996 at batch 64, 1.001 at 256); with
     * the rows' loop rolled too, 3% slower. */
    VEC sums[RB * CO];
    #pragma unroll
    for (int q = 0; q < RB; q++)
        #pragma unroll
        for (int o = 0; o < CO; o++)
            sums[q * CO + o] = acc[q][o];
#if VW > 1 && VW <= OW && RB % 2 == 0
    if (pool) {
        /* 2x2 pooling, stride 2, of the activated rows: rows q, q + 1 and neighbouring lanes
         * (.even, .odd) make one output; the host keeps RB, OH, OW and VW even, so oh0 and
         * ow0 are too. Max as pool.cl's: the first maximum in window order, a NaN wins. */
        __global float* y0 = y + n * (CO * (OH / 2) * (OW / 2)) + (oh0 / 2) * (OW / 2) + ow0 / 2;
        #pragma unroll 1
        for (int o = 0; o < CO; o++) {
            const float bias = has_bias ? b[o] : 0.0f;
            #pragma unroll
            for (int q = 0; q < RB; q += 2) {
                if (q < first_row)
                    continue;
                const VEC top = activatev(sums[q * CO + o] + bias, act, slope);
                const VEC bottom = activatev(sums[(q + 1) * CO + o] + bias, act, slope);
                if (keep) {
                    __global float* yf = y_full + n * (CO * OH * OW) + o * (OH * OW) + (oh0 + q) * OW + ow0;
                    USTOREV(top, yf);
                    USTOREV(bottom, yf + OW);
                }
                HALF pooled;
                if (pool == 1) {
                    pooled = ((top.even + top.odd) + (bottom.even + bottom.odd)) * 0.25f;
                } else {
                    pooled = top.even;
                    pooled = ((top.odd > pooled) | (top.odd != top.odd)) ? top.odd : pooled;
                    pooled = ((bottom.even > pooled) | (bottom.even != bottom.even)) ? bottom.even : pooled;
                    pooled = ((bottom.odd > pooled) | (bottom.odd != bottom.odd)) ? bottom.odd : pooled;
                }
                USTOREH(pooled, y0 + o * ((OH / 2) * (OW / 2)) + (q / 2) * (OW / 2));
            }
        }
        continue;
    }
#endif
    __global float* y0 = y + n * (CO * OH * OW) + oh0 * OW + ow0;
    const __global float* r0 = r + n * (CO * OH * OW) + oh0 * OW + ow0;
    #pragma unroll 1
    for (int o = 0; o < CO; o++) {
        const float bias = has_bias ? b[o] : 0.0f;
        #pragma unroll
        for (int q = 0; q < RB; q++) {
            if (q < first_row)
                continue;
#if VW > OW
            float rl[VW];
            #pragma unroll
            for (int k = 0; k < VW; k++)
                rl[k] = has_residual && k < OW ? r0[o * (OH * OW) + q * OW + k] : 0.0f;
            const VEC t = activatev(sums[q * CO + o] + bias + LOADV(rl), act, slope);
            #pragma unroll
            for (int k = 0; k < OW; k++)
                y0[o * (OH * OW) + q * OW + k] = LANE(t, k);
#else
            const VEC res = has_residual ? ULOADV(r0 + o * (OH * OW) + q * OW) : (VEC)(0.0f);
            USTOREV(activatev(sums[q * CO + o] + bias + res, act, slope), y0 + o * (OH * OW) + q * OW);
#endif
        }
    }
}
}

/* WITH_WEIGHT_GRAD 0 leaves the weight gradient out of a build: an input gradient run as a
 * forward convolution needs none, and the build compiled it for nothing (0.3-0.4 s of a 1.1-1.5 s
 * build of LeNet-5 conv2's input gradient on a cold cache). */
#ifndef WITH_WEIGHT_GRAD
#define WITH_WEIGHT_GRAD 1
#endif
#if WITH_WEIGHT_GRAD
/* Partial weight (and bias) gradients over a slice of the N*OH output rows:
 *   part[s, o, c, i, j] = sum gy[n, o, oh, ow] * xp[n, c, oh + i, ow + j]
 *   partb[s, o]         = sum gy[n, o, oh, ow]     (written by the c == 0, jb == 0, kb == 0 items)
 * over the rows (n, oh) of slice s (rows_per_slice each) and all ow. Work item (channel block
 * ob, (input channel c, tap-column block jb, tap-row block kb), slice s) keeps OBC x KHB x KWB
 * accumulator vectors (plus OBC for the bias) whose lanes run along the row. It steps RPW
 * output rows at a time where they lie in one image and the slice, else one. The row's last
 * column block is shifted back to end at the row's end and masks the lanes its neighbour
 * already counted.
 * KWB == 1: one tap column per item, so its row loads never overlap and may be built from
 * scalars (LOADV; overlapping ones would share their scalars, and LLVM would assemble the
 * vectors from them with shuffles). KWB == KW (every tap of a channel in one item, so gy is read once per channel
 * block instead of once per tap column): the shifted row loads are typed unaligned vector
 * loads (XLOADV), which LLVM keeps as one load each. Event times, 20 alternating rounds, the
 * old blocking against this one: LeNet-5 conv1 at batch 256 0.447 -> 0.389 ms, at 64 0.114 ->
 * 0.107; ResNet-20's 3 -> 16 3x3 at batch 64 0.501 -> 0.320; 3 -> 8 3x3 0.184 -> 0.170.
 * Global size (ceil(CO/OBC), CI*(KW/KWB)*(KH/KHB), slices). */
#ifndef KHB
#define KHB 1           /* tap rows per work item (divides KH) */
#endif
#ifndef KWB
#define KWB 1           /* tap columns per work item: 1 or KW */
#endif
#ifndef RPW
#define RPW 1           /* output rows per step (weight gradient) */
#endif
#define NKB (KH / KHB)
#define NJB (KW / KWB)
#if KWB > 1
/* A vector type of 4-byte alignment: a load through it is one unaligned vector load. */
#define XLOADV(p) (*(const __global vec_unaligned*)(p))
#else
#define XLOADV(p) LOADV(p)
#endif

/* acc += gy (x) xp over P consecutive output rows of one image (from `row`) and all column
 * blocks: an input row feeds every (output row, tap row) pair it meets, so P rows at a time
 * load KHB + P - 1 input rows instead of P * KHB. */
#define BW_STEP(P, BIAS, GY)                                                                  \
    {                                                                                         \
        const int n = row / OH;                                                               \
        const int oh = row - n * OH;                                                          \
        const __global float* xr = xp + (n * CI + c) * (HP * WP) + (oh + i0) * WP + j0;      \
        _Pragma("unroll")                                                                     \
        for (int cb = 0; cb < NCB; cb++) {                                                    \
            const int ow0 = MIN(cb * VW, OW - VW);                                            \
            const int skip = cb * VW - ow0;                                                   \
            VEC gv[P][OBC];                                                                   \
            _Pragma("unroll")                                                                 \
            for (int p = 0; p < (P); p++)                                                     \
                _Pragma("unroll")                                                             \
                for (int o = 0; o < OBC; o++) {                                               \
                    gv[p][o] = LANES >= skip ? GY(och[o], oh + p, ow0) : (VEC)(0.0f);         \
                    if (BIAS) accb[o] += gv[p][o];                                            \
                }                                                                             \
            _Pragma("unroll")                                                                 \
            for (int r = 0; r < KHB + (P) - 1; r++) {                                         \
                _Pragma("unroll")                                                             \
                for (int jj = 0; jj < KWB; jj++) {                                            \
                    const VEC xv = XLOADV(xr + r * WP + ow0 + jj);                            \
                    _Pragma("unroll")                                                         \
                    for (int p = 0; p < (P); p++) {                                           \
                        const int i = r - p;                                                  \
                        if (i >= 0 && i < KHB)                                                \
                            _Pragma("unroll")                                                 \
                            for (int o = 0; o < OBC; o++)                                     \
                                acc[o][i][jj] = gv[p][o] * xv + acc[o][i][jj];                \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

#define BW_ROWS(BIAS, GY)                                                                     \
    for (int row = row_begin; row < row_end;) {                                               \
        if (RPW > 1 && row + RPW <= row_end && row % OH + RPW <= OH) {                        \
            BW_STEP(RPW, BIAS, GY)                                                            \
            row += RPW;                                                                       \
        } else {                                                                              \
            BW_STEP(1, BIAS, GY)                                                              \
            row++;                                                                            \
        }                                                                                     \
    }

/* The kernel body around BW_ROWS: the item's place, its accumulators, their partial sums. GY(o,
 * oh, ow0): the vector of dL/dy at output channel o, row oh, columns ow0.. of image n. */
#define BW_KERNEL(GY)                                                                         \
    const int ob = get_global_id(0);                                                          \
    int t = get_global_id(1);                                                                 \
    const int kb = t % NKB;                                                                   \
    t /= NKB;                                                                                 \
    const int jb = t % NJB;                                                                   \
    const int c = t / NJB;                                                                    \
    const int i0 = kb * KHB;                                                                  \
    const int j0 = jb * KWB;                                                                  \
    const int s = get_global_id(2);                                                           \
    const int row_begin = s * rows_per_slice;                                                 \
    const int row_end = MIN(row_begin + rows_per_slice, N * OH);                              \
    /* Channels past CO (the last block of a CO that OBC does not divide) read channel CO-1  \
     * and are not stored. */                                                                 \
    int och[OBC];                                                                             \
    _Pragma("unroll")                                                                         \
    for (int o = 0; o < OBC; o++)                                                             \
        och[o] = ob * OBC + o < CO ? ob * OBC + o : CO - 1;                                   \
    VEC acc[OBC][KHB][KWB];                                                                   \
    VEC accb[OBC];                                                                            \
    _Pragma("unroll")                                                                         \
    for (int o = 0; o < OBC; o++) {                                                           \
        accb[o] = (VEC)(0.0f);                                                                \
        _Pragma("unroll")                                                                     \
        for (int i = 0; i < KHB; i++)                                                         \
            _Pragma("unroll")                                                                 \
            for (int jj = 0; jj < KWB; jj++)                                                  \
                acc[o][i][jj] = (VEC)(0.0f);                                                  \
    }                                                                                         \
    const bool bias_item = c == 0 && jb == 0 && kb == 0;                                      \
    if (bias_item) {                                                                          \
        BW_ROWS(1, GY)                                                                        \
    } else {                                                                                  \
        BW_ROWS(0, GY)                                                                        \
    }                                                                                         \
    _Pragma("unroll")                                                                         \
    for (int o = 0; o < OBC; o++) {                                                           \
        if (ob * OBC + o < CO) {                                                              \
            __global float* ps = part + ((s * CO + ob * OBC + o) * CI + c) * (KH * KW) + j0;  \
            _Pragma("unroll")                                                                 \
            for (int i = 0; i < KHB; i++)                                                     \
                _Pragma("unroll")                                                             \
                for (int jj = 0; jj < KWB; jj++)                                              \
                    ps[(i0 + i) * KW + jj] = HSUM(acc[o][i][jj]);                             \
            if (bias_item)                                                                    \
                partb[s * CO + ob * OBC + o] = HSUM(accb[o]);                                 \
        }                                                                                     \
    }

#define GY_PLAIN(o, row, ow0) LOADV(gy + ((n * CO + (o)) * OH + (row)) * OW + (ow0))

__kernel void conv2d_rows_backward_weight(__global const float* restrict xp,
                                          __global const float* restrict gy,
                                          __global float* restrict part,
                                          __global float* restrict partb,
                                          const int rows_per_slice)
{
    BW_KERNEL(GY_PLAIN)
}

/* The same partial sums where gy comes from a 2x2 stride-2 average pooling after this
 * convolution and its activation: gy[n, o, oh, ow] = gp[n, o, oh/2, ow/2] / 4 * act'(y[n, o,
 * oh, ow]), computed here from the pooling's output gradient gp (N, CO, OH/2, OW/2) and the
 * activation's output y (N, CO, OH, OW) instead of read from a gy the pooling's backward
 * wrote (LeNet-5 conv1: that pass wrote 4.8 MB at batch 256 and the weight gradient read them
 * back; the pooling's backward and the weight gradient took 0.57-0.61 ms, this kernel 0.46,
 * and 0.17-0.18 against 0.12 at batch 64, event times of 25 alternating rounds). Rows
 * and columns past 2*(OH/2) and 2*(OW/2) lie in no window (PyTorch's floor mode): zero. act,
 * POOLED_ACT (a define: a runtime code's branches in the loop cost LeNet-5 conv1 10%) and slope:
 * as activate_backward's act and slope (ACT_NONE: no activation). */
#ifndef POOLED_ACT
#define POOLED_ACT ACT_NONE
#endif
#define PH (OH / 2)
#define PW (OW / 2)
#if VW == 16
#define LOADH(p) LOAD8(p)
#define DUP(h) ((float16)((h).s0, (h).s0, (h).s1, (h).s1, (h).s2, (h).s2, (h).s3, (h).s3, \
                          (h).s4, (h).s4, (h).s5, (h).s5, (h).s6, (h).s6, (h).s7, (h).s7))
#elif VW == 8
#define LOADH(p) LOAD4(p)
#define DUP(h) ((float8)((h).s0, (h).s0, (h).s1, (h).s1, (h).s2, (h).s2, (h).s3, (h).s3))
#elif VW == 4
#define LOADH(p) LOAD2(p)
#define DUP(h) ((float4)((h).s0, (h).s0, (h).s1, (h).s1))
#elif VW == 2
#define LOADH(p) ((p)[0])
#define DUP(h) ((float2)((h), (h)))
#endif
ALWAYS_INLINE VEC pooled_gy(const __global float* gp, const __global float* y, const int n, const int o,
                            const int oh, const int ow0, const float slope)
{
    const __global float* pr = gp + ((n * CO + o) * PH + MIN(oh / 2, PH - 1)) * PW;
    VEC g;
#if VW > 1
    if (ow0 % 2 == 0 && ow0 + VW <= 2 * PW) {   /* constants once BW_STEP unrolls: pairs of lanes */
        g = DUP(ULOADH(pr + ow0 / 2)) * 0.25f;
    } else
#endif
    {
        float t[VW];
        #pragma unroll
        for (int k = 0; k < VW; k++)
            t[k] = ow0 + k < 2 * PW ? pr[(ow0 + k) / 2] * 0.25f : 0.0f;
        g = LOADV(t);
    }
    g = oh < 2 * PH ? g : (VEC)(0.0f);
#if POOLED_ACT == ACT_NONE
    return g;           /* y is not read (the host may pass gp in its place) */
#else
    return activate_backwardv(g, LOADV(y + ((n * CO + o) * OH + oh) * OW + ow0), POOLED_ACT, slope);
#endif
}
#define GY_POOLED(o, row, ow0) pooled_gy(gp, y, n, o, row, ow0, slope)

__kernel void conv2d_rows_backward_weight_pooled(__global const float* restrict xp,
                                                 __global const float* restrict gp,
                                                 __global const float* restrict y,
                                                 __global float* restrict part,
                                                 __global float* restrict partb,
                                                 const int rows_per_slice, const float slope)
{
    BW_KERNEL(GY_POOLED)
}
#endif  /* WITH_WEIGHT_GRAD */

/* gw[t] = sum_s part[s, t] over t < taps (CO*CI*KH*KW), and gb[o] = sum_s partb[s, o] for
 * the co work items past them (only when the host asks for the bias). Runtime shapes, so one
 * build serves every layer. Global size (taps + co or + 0). */
__kernel void conv2d_rows_backward_weight_reduce(__global const float* restrict part,
                                                 __global const float* restrict partb,
                                                 __global float* restrict gw,
                                                 __global float* restrict gb,
                                                 const int slices, const int taps, const int co)
{
    const int t = get_global_id(0);
    float sum = 0.0f;
    if (t < taps) {
        for (int s = 0; s < slices; s++)
            sum += part[s * taps + t];
        gw[t] = sum;
    } else if (t < taps + co) {
        for (int s = 0; s < slices; s++)
            sum += partb[s * co + t - taps];
        gb[t - taps] = sum;
    }
}
