/* conv2d.cl: Conv2D (cross-correlation, as PyTorch's conv2d), forward and backward.
 *
 * Layouts (row-major, NCHW):
 *   x / xp  (N, G*CI, H, W), element x[((n*G*CI + g*CI + c)*H + h)*W + w]: G groups of CI
 *           channels (CI and CO below count one group's channels); xp is x already zero-padded
 *           (HP = H + top + bottom rows, WP = W + left + right columns) by conv2d_pad, so the
 *           inner loops read without bounds checks.
 *   y       (N, G*CO, OH, OW), OH = (HP - DH*(KH-1) - 1)/SH + 1, OW likewise: tap (i, j) of
 *           output pixel (oh, ow) reads xp[oh*SH + i*DH, ow*SW + j*DW] (DH, DW the dilation).
 *   wt      packed weights, per group g a block of (CI*KH*KW + 1) rows of COP:
 *           wt[(g*(CI*KH*KW + 1) + (c*KH + i)*KW + j)*COP + o] = w[g*CO + o, c, i, j], then the
 *           bias row; COP = CO rounded up to the output-channel block, zeros beyond CO
 *           (conv2d_pack_weights).
 *   gyt     gy transposed pixel-major (N*OH*OW, G*COPW), group g's channels at g*COPW, zeros
 *           beyond CO (conv2d_transpose_nchw).
 * With G = 1 and DH = DW = 1 (the defaults) the index arithmetic folds to that of a plain conv.
 *
 * CPU-style kernels: each work item owns a register block and the vector lanes run over VW
 * output channels (VW = 8, float8, or 16, float16 where the device's preferred float vector
 * is 16 wide: AVX-512; pip's PoCL 3.0 aborts on float16 FMAs on AVX2 machines), so any stride
 * and any output width vectorise the same way, and a scalar input value is broadcast against
 * a vector of weights. No local memory, no barriers:
 * every kernel works with any work-group size (on CPUs the host passes small ones so that
 * both cores get groups).
 * Shape constants come in as -D defines so the tap loops unroll; the defaults below only make
 * the file compile alone. The helpers (pad, pack, transpose, reduce) take runtime arguments so
 * they are built once per device.
 *
 * The backward pass w.r.t. the input reuses conv2d_forward in one of two ways: gather form,
 * gx is the stride-1 convolution of gy (dilated by the stride and padded by K-1-pad) with the
 * kernel flipped and its channel axes swapped (no extra memory, but it multiplies the zeros
 * around and between gy's pixels); columns form, cols = w^T gy as a 1x1 convolution, then
 * conv2d_col2im sums each input pixel's taps (for strides > 1 and small outputs).
 */

#ifndef CI
#define CI 1            /* input channels (per group) */
#endif
#ifndef HP
#define HP 1            /* padded input height */
#endif
#ifndef WP
#define WP 1            /* padded input width */
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
#ifndef CO
#define CO 1            /* output channels (per group) */
#endif
#ifndef G
#define G 1             /* groups */
#endif
#ifndef DH
#define DH 1            /* dilation along rows */
#endif
#ifndef DW
#define DW 1            /* dilation along columns */
#endif
#ifndef COP
#define COP 8           /* CO rounded up to a multiple of VW*OBV */
#endif
#ifndef OH
#define OH 1
#endif
#ifndef OW
#define OW 1
#endif
#ifndef NPIX
#define NPIX 1          /* N*OH*OW */
#endif
#ifndef VW
#define VW 8            /* vector lanes: 8 or 16 */
#endif
#ifndef YH
#define YH OH           /* y's plane height and width: OH, OW, unless the output is written */
#endif
#ifndef YW
#define YW OW           /* strided into a bigger plane (one phase of a strided input gradient) */
#endif
#ifndef YSH
#define YSH 1           /* output pixel (oh, ow) goes to y's row oh*YSH + YOFF / YW, */
#endif
#ifndef YSW
#define YSW 1           /* column ow*YSW + YOFF % YW */
#endif
#ifndef YOFF
#define YOFF 0
#endif
#ifndef OBV
#define OBV 1           /* vectors of output channels per work item */
#endif
#ifndef PB
#define PB 1            /* output pixels per work item (forward) */
#endif
#ifndef CIC
#define CIC CI          /* input channels per forward launch (chunks: see conv2d_forward) */
#endif
#ifndef POOL
#define POOL 0          /* forward: 1 (average) or 2 (max) stores y pooled 2x2, stride 2 */
#endif
#ifndef PAIR
#define PAIR 0          /* forward: 1 (average) or 2 (max) for row pairs pooled 2x2 beside y (see
                           conv2d_forward); blocks are then whole rows, PB == OW */
#endif
#ifndef PAIR_FULL
#define PAIR_FULL 1     /* with PAIR: 0 leaves the full-size y unwritten (y_pool only) */
#endif
#ifndef SELFPACK
#define SELFPACK 0      /* forward: > 0, the units (pixel blocks, with PAIR row pairs) per work item
                           of a forward that packs the weights itself (see conv2d_forward) */
#endif
#ifndef PC
#define PC PB           /* with POOL: columns of the two rows a pixel block covers (PB = 2*PC) */
#endif
#ifndef OBVW
#define OBVW 1          /* vectors of output channels per work item (backward weight) */
#endif
#ifndef COPW
#define COPW 8          /* CO rounded up to a multiple of VW*OBVW: gyt's row length */
#endif
#ifndef KHB
#define KHB 1           /* kernel rows per work item (backward weight) */
#endif
#ifndef PBW
#define PBW 1           /* output pixels per step along a row (backward weight) */
#endif
#ifndef PK
#define PK 0            /* forward: 1 reads x unpadded (see conv2d_forward), 0 the padded xp */
#endif
#ifndef XH
#define XH HP           /* with PK: the unpadded input's height and width, and the zero rows */
#endif
#ifndef XW
#define XW WP           /* above and columns left of it (those below and right follow from */
#endif
#ifndef PT
#define PT 0            /* HP and WP) */
#endif
#ifndef PL
#define PL 0
#endif

#define OB (VW * OBV)
#define OBW (VW * OBVW)

/* MIN, LOAD8 and STORE8 come from common.h (PoCL calls the builtins out of line). */
#if VW == 16
#define VEC float16
#define LOADV(p) ((float16)(LOAD8(p), LOAD8((p) + 8)))
#define STOREV(v, p) do { STORE8((v).lo, p); STORE8((v).hi, (p) + 8); } while (0)
#define LANE(v, l) LANE16(v, l)
#else
#define VEC float8
#define LOADV(p) LOAD8(p)
#define STOREV(v, p) STORE8(v, p)
#define LANE(v, l) LANE8(v, l)
#endif

/* Pixel blocks. A work item's PB output pixels are consecutive within one segment, so their
 * input windows sit at constant offsets PSTEP apart and the unrolled loops address them from
 * one pointer: a segment is an output row (PSTEP = SW) or, for a 1x1 output, the whole batch
 * (PSTEP = one image). The last block of a segment is shifted back to end at the segment's
 * end, overlapping its neighbour rather than idling (both store the same values); the host
 * keeps PB <= SEG. A pooled forward (POOL) takes blocks of two rows instead (see XOFF). */
#define YPLANE (YH * YW)
#if OH * OW == 1
#define SEG NPIX
#define PSTEP (G * CI * HP * WP)
#define YSTEP (G * CO * YPLANE)
#else
#define SEG OW
#define PSTEP SW
#define YSTEP YSW
#endif
#if POOL
/* Pooled forward: a pixel block is PC columns of two output rows (oh0 even, ow0 even: the
 * host keeps OH, OW and PC even), pixel p at row p / PC, column p % PC; a segment is a pair
 * of rows. */
#define XOFF(p) (((p) / PC) * (SH * WP) + ((p) % PC) * SW)
#define BLOCKS_PER_SEG ((OW + PC - 1) / PC)
#define SEGS (NPIX / (2 * OW))
#define FIRST_PIXEL(seg, b) ((seg) * (2 * OW) + MIN((b) * PC, OW - PC))
#else
#define XOFF(p) ((p) * PSTEP)
#define BLOCKS_PER_SEG ((SEG + PB - 1) / PB)
#define SEGS (NPIX / SEG)
#define FIRST_PIXEL(seg, b) ((seg) * SEG + MIN((b) * PB, SEG - PB))
#endif

/* The forward's stores of one channel vector v: lane l of out[p] (pixel p < PIXELS) goes to
 * DEST, an lvalue of output channel o and pixel p; lanes past CO are not stored. */
#define STORE_CHANNELS(PIXELS, DEST) STORE_CHANNELS_OF(out, PIXELS, DEST)
#define STORE_CHANNELS_OF(SRC, PIXELS, DEST)                                                  \
    _Pragma("unroll")                                                                         \
    for (int l = 0; l < VW; l++) {                                                            \
        const int o = ob * OB + v * VW + l;                                                   \
        if (o < CO) {                                                                         \
            _Pragma("unroll")                                                                 \
            for (int p = 0; p < (PIXELS); p++)                                                \
                DEST = LANE(SRC[p], l);                                                       \
        }                                                                                     \
    }

/* Where a block's pixels lie side by side in y (YSTEP 1), the forward stores them 8 at a time:
 * the 8 pixel vectors of each 8 channel lanes turned into 8 channel rows (an 8x8 transpose in
 * registers), each row one store of 8 floats. The lane-by-lane stores had cost 11-19% of the
 * kernel (its time with no stores at all, 64x16x32x32 -> 32 3x3 and 64x32x16x16 -> 32). */
#if YSTEP == 1 && PB >= 8
#define STORE_ROWS 1
#else
#define STORE_ROWS 0
#endif

#if VW == 16
#define LANES8(v, h) ((h) == 0 ? (v).lo : (v).hi)
#else
#define LANES8(v, h) (v)
#endif

/* STORE_CHANNELS(PB, y0[o * YPLANE + p]) for STORE_ROWS: whole groups of 8 pixels as rows,
 * the last PB % 8 pixels lane by lane. */
#define STORE_CHANNEL_ROWS()                                                                  \
    _Pragma("unroll")                                                                         \
    for (int p0 = 0; p0 + 8 <= PB; p0 += 8) {                                                 \
        _Pragma("unroll")                                                                     \
        for (int h = 0; h < VW / 8; h++) {                                                    \
            float8 rows[8];                                                                   \
            _Pragma("unroll")                                                                 \
            for (int p = 0; p < 8; p++)                                                       \
                rows[p] = LANES8(out[p0 + p], h);                                             \
            transpose8x8(rows);                                                               \
            _Pragma("unroll")                                                                 \
            for (int l = 0; l < 8; l++) {                                                     \
                const int o = ob * OB + v * VW + h * 8 + l;                                   \
                if (o < CO)                                                                   \
                    STORE8(rows[l], y0 + o * YPLANE + p0);                                    \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    _Pragma("unroll")                                                                         \
    for (int l = 0; l < VW; l++) {                                                            \
        const int o = ob * OB + v * VW + l;                                                   \
        if (o < CO) {                                                                         \
            _Pragma("unroll")                                                                 \
            for (int p = PB - PB % 8; p < PB; p++)                                            \
                y0[o * YPLANE + p] = LANE(out[p], l);                                         \
        }                                                                                     \
    }

/* The residual of channel vector v's pixels, by pixel into DST[PB] (lanes past CO zero). Where
 * the block's pixels lie side by side (STORE_ROWS) 8 at a time as STORE_CHANNEL_ROWS stores
 * them, read back: a row of 8 pixels per channel, turned into pixel vectors by the same 8x8
 * transpose (a lane-by-lane read had cost about as much as the separate add pass it saves);
 * the last PB % 8 pixels, and every pixel elsewhere, lane by lane. */
#if VW == 16
#define JOIN_HALVES(halves, p) ((float16)((halves)[0][p], (halves)[1][p]))
#else
#define JOIN_HALVES(halves, p) ((halves)[0][p])
#endif
#define LOAD_RESIDUAL_LANES(DST, FIRST)                                                       \
    _Pragma("unroll")                                                                         \
    for (int p = (FIRST); p < PB; p++) {                                                      \
        float in[VW];                                                                         \
        _Pragma("unroll")                                                                     \
        for (int l = 0; l < VW; l++) {                                                        \
            const int o = ob * OB + v * VW + l;                                               \
            in[l] = o < CO ? res0[o * YPLANE + p * YSTEP] : 0.0f;                             \
        }                                                                                     \
        DST[p] = LOADV(in);                                                                   \
    }
#if STORE_ROWS
#define LOAD_RESIDUAL(DST)                                                                    \
    _Pragma("unroll")                                                                         \
    for (int p0 = 0; p0 + 8 <= PB; p0 += 8) {                                                 \
        float8 halves[VW / 8][8];                                                             \
        _Pragma("unroll")                                                                     \
        for (int h = 0; h < VW / 8; h++) {                                                    \
            _Pragma("unroll")                                                                 \
            for (int l = 0; l < 8; l++) {                                                     \
                const int o = ob * OB + v * VW + h * 8 + l;                                   \
                halves[h][l] = o < CO ? LOAD8(res0 + o * YPLANE + p0) : (float8)(0.0f);       \
            }                                                                                 \
            transpose8x8(halves[h]);                                                          \
        }                                                                                     \
        _Pragma("unroll")                                                                     \
        for (int p = 0; p < 8; p++)                                                           \
            DST[p0 + p] = JOIN_HALVES(halves, p);                                             \
    }                                                                                         \
    LOAD_RESIDUAL_LANES(DST, PB - PB % 8)
#else
#define LOAD_RESIDUAL(DST) LOAD_RESIDUAL_LANES(DST, 0)
#endif

/* conv2d_forward's sums over tap row i of one input channel: the weights at wc against the
 * block's inputs X (an expression of pixel p and tap column j). */
#define TAP_ROW(i, X)                                                                         \
    _Pragma("unroll")                                                                         \
    for (int j = 0; j < KW; j++) {                                                            \
        VEC wv[OBV];                                                                          \
        _Pragma("unroll")                                                                     \
        for (int v = 0; v < OBV; v++)                                                         \
            wv[v] = LOADV(wc + ((i) * KW + j) * COP + v * VW);                                \
        _Pragma("unroll")                                                                     \
        for (int p = 0; p < PB; p++) {                                                        \
            const VEC xv = (VEC)(X);                                                          \
            _Pragma("unroll")                                                                 \
            for (int v = 0; v < OBV; v++)                                                     \
                acc[v][p] = xv * wv[v] + acc[v][p];                                           \
        }                                                                                     \
    }

#if PK
/* Column col of input row xr, zero outside the row. Only the pairs (p, j) that fall outside
 * it in some pixel block (PAD_COLUMN: the first and last few, a constant once the loops
 * unroll) are tested, so the loads in the middle of a block stay plain. */
#define PAD_COLUMN(p, j) ((p) * SW + (j) * DW < PL || (OW - PB + (p)) * SW + (j) * DW - PL >= XW)
inline float padded_load(const __global float* xr, const int col, const bool test)
{
    if (!test)
        return xr[col];
    const bool inside = (unsigned)col < (unsigned)XW;
    return inside ? xr[inside ? col : 0] : 0.0f;
}
#endif

/* tanhv and activatev (common.h) on this file's vectors. */
DEFINE_TANHV(VEC)
DEFINE_ACTIVATEV(VEC)

/* y = act(conv(xp, w) + b), or with POOL that y pooled 2x2 (stride 2): y (N, G*CO, OH/2,
 * OW/2), the full-size map never stored. With PAIR y pooled into y_pool, and with PAIR_FULL
 * y itself too (a training step, which keeps y for the activation's backward): a work item
 * makes the whole-row blocks of two rows one after the other and pools them, the first row's
 * column pairs kept in registers meanwhile. The blocks of POOL (PC columns of two rows at
 * once) hold twice the accumulators, which storing the full-size map as well pushed past the
 * registers: LeNet-5's conv2 (6 -> 16, 10x10 output, batch 256) took 0.49 ms that way,
 * against 0.38 for the plain forward and 0.08 for the pooling pass after it, and pooled alone
 * 0.41-0.44 against PAIR's 0.34.
 * Work item (pixel block, channel block): PB pixels of one segment times OB output channels,
 * accumulated in OBV*PB vector registers.
 * act: an ACT_ code of common.h, applied after the bias.
 * has_residual (not with POOL or PAIR): y = act(conv + b + res), res of y's shape (an
 * eval-mode convolution run into the Add after it), gathered lane by lane as the stores go.
 * Input-channel chunks: one launch sums input channels c_begin .. c_begin + CIC - 1, starting
 * from the partial sums already in y when partial_in, and adds the bias and activation when
 * finish (else it stores the raw partial sums). A whole convolution is one launch with
 * (0, 0, 1); chunks keep the weights one work item streams (CIC*KH*KW*OB floats) in its
 * core's L2, as deep layers need (the host chunks only pixel blocks that do not overlap).
 * Global size (NPIX/SEG * BLOCKS_PER_SEG, G * COP/OB): the second axis runs over the channel
 * blocks of group 0, then group 1, ...
 * With SELFPACK (one group, one channel block, every input channel in one launch) wt is the
 * weight as given, (CO, CI, KH, KW), with its bias apart (bias, has_bias): each work item packs
 * them into private memory, in conv2d_pack_weights' forward layout, and then makes SELFPACK
 * units (pixel blocks, or with PAIR row pairs) one after another, so that a call is one
 * launch instead of a packing launch and the convolution (on PoCL each command on an idle
 * queue costs ~20 us of waking and scheduling: a standalone LeNet-5 conv2 at batch 64 ran
 * 0.14 ms, its kernels 0.095 of it). With write_packed, work item 0 also stores its packed
 * weights into packed_out, for a backward pass that reads them (the sums form of the input
 * gradient). Global size (ceil(units / SELFPACK), 1). */
#if SELFPACK
#define WSPACE          /* the packed weights are private */
#else
#define WSPACE __global
#endif
__kernel void conv2d_forward(__global const float* restrict xp,
                             __global const float* restrict wt,
                             __global float* restrict y,
                             const int act, const float slope,
                             const int c_begin, const int partial_in, const int finish,
                             __global const float* restrict res, const int has_residual
#if PAIR
                             , __global float* restrict y_pool
#endif
#if SELFPACK
                             , __global const float* restrict bias, const int has_bias,
                             __global float* restrict packed_out, const int write_packed
#endif
                             )
{
#if SELFPACK
    /* The packing transposes 8 taps of 8 output channels at a time in registers (a scalar
     * loop over the taps had cost a tenth of LeNet-5 conv2's forward at batch 64); the taps
     * past the last whole 8 go one by one. Channels past CO are zeros. */
    float packed[(CI * KH * KW + 1) * COP] __attribute__((aligned(32)));
    #define TAPS (CI * KH * KW)
    #pragma unroll 1
    for (int o0 = 0; o0 < COP; o0 += 8) {
        #pragma unroll 1
        for (int t0 = 0; t0 + 8 <= TAPS; t0 += 8) {
            float8 r[8];
            #pragma unroll
            for (int k = 0; k < 8; k++)
                r[k] = o0 + k < CO ? ULOAD8(wt + (o0 + k) * TAPS + t0) : (float8)(0.0f);
            transpose8x8(r);
            #pragma unroll
            for (int k = 0; k < 8; k++)
                *(float8*)(packed + (t0 + k) * COP + o0) = r[k];
        }
        #pragma unroll
        for (int k = 0; k < 8; k++) {
            const int o = o0 + k;
            #pragma unroll 1
            for (int t = TAPS - TAPS % 8; t < TAPS; t++)
                packed[t * COP + o] = o < CO ? wt[o * TAPS + t] : 0.0f;
            packed[TAPS * COP + o] = o < CO && has_bias ? bias[o] : 0.0f;
        }
    }
    #undef TAPS
    if (write_packed && get_global_id(0) == 0) {
        #pragma unroll 1
        for (int i = 0; i < (CI * KH * KW + 1) * COP; i++)
            packed_out[i] = packed[i];
    }
    const int unit_end = MIN((int)get_global_id(0) * SELFPACK + SELFPACK, PAIR ? SEGS / 2 : SEGS * BLOCKS_PER_SEG);
    #pragma unroll 1
    for (int unit = get_global_id(0) * SELFPACK; unit < unit_end; unit++) {
#else
    const int unit = get_global_id(0);      /* a pixel block, or with PAIR a row pair */
#endif
#if PAIR
    VEC kept[OBV][PB / 2];  /* the first row's pooled column pairs, by channel vector */
    #pragma unroll 1
    for (int second = 0; second < 2; second++) {
    const int seg = unit * 2 + second;
    const int b = 0;
#else
    const int seg = unit / BLOCKS_PER_SEG;
    const int b = unit - seg * BLOCKS_PER_SEG;
#endif
    const int g = G == 1 ? 0 : get_global_id(1) / (COP / OB);
    const int ob = get_global_id(1) - g * (COP / OB);
    if (seg >= SEGS) return;
    const int q0 = FIRST_PIXEL(seg, b);     /* first pixel, (n*OH + oh)*OW + ow */
    const int n0 = q0 / (OH * OW);
    const int r0 = q0 - n0 * (OH * OW);
    const int oh0 = r0 / OW;
#if PK
    /* Padding inside the kernel (PK): the block's tap (i, j) of pixel p reads row ih0 + i*DH,
     * column iw0 + p*SW + j*DW of x, zero outside it. */
    const int ih0 = oh0 * SH - PT, iw0 = (r0 - oh0 * OW) * SW - PL;
    const __global float* x0 = xp + (n0 * G + g) * (CI * XH * XW);
#else
    const __global float* x0 = xp + (n0 * G + g) * (CI * HP * WP) + oh0 * SH * WP + (r0 - oh0 * OW) * SW;
#endif

    __global float* y0 = y + (n0 * G + g) * (CO * YPLANE) + oh0 * YSH * YW + (r0 - oh0 * OW) * YSW + YOFF;
    const __global float* res0 = res + (y0 - y);
    VEC acc[OBV][PB];
    #pragma unroll
    for (int v = 0; v < OBV; v++)
        #pragma unroll
        for (int p = 0; p < PB; p++)
            acc[v][p] = (VEC)(0.0f);
#if CIC < CI
    if (partial_in) {
        #pragma unroll
        for (int v = 0; v < OBV; v++) {
            float in[PB][VW];
            #pragma unroll
            for (int l = 0; l < VW; l++) {
                const int o = ob * OB + v * VW + l;
                #pragma unroll
                for (int p = 0; p < PB; p++)
                    in[p][l] = o < CO ? y0[o * YPLANE + p * YSTEP] : 0.0f;
            }
            #pragma unroll
            for (int p = 0; p < PB; p++)
                acc[v][p] = LOADV(in[p]);
        }
    }
#endif

#if SELFPACK
    const float* wb = packed;
#else
    const __global float* wb = wt + g * ((CI * KH * KW + 1) * COP) + ob * OB;
#endif
#if CIC < CI
#define C_FIRST c_begin
#define C_END (c_begin + CIC)
#else
#define C_FIRST 0
#define C_END CI            /* the whole sum in one launch: a loop the compiler can unroll */
#endif
#if PK
    /* Tap rows outside x are skipped, once per item and row; the channel loop runs inside
     * (a test inside it, or a pointer chosen per channel and row, cost the unrolled loops
     * 15%: 64x16x32x32 -> 32 3x3). */
    #pragma unroll
    for (int i = 0; i < KH; i++) {
        const int ih = ih0 + i * DH;
        if ((unsigned)ih < (unsigned)XH) {
            for (int c = C_FIRST; c < C_END; c++) {
                const WSPACE float* wc = wb + c * (KH * KW * COP);
                const __global float* xr = x0 + c * (XH * XW) + ih * XW;
                TAP_ROW(i, padded_load(xr, iw0 + p * SW + j * DW, PAD_COLUMN(p, j)))
            }
        }
    }
#else
    for (int c = C_FIRST; c < C_END; c++) {
        const WSPACE float* wc = wb + c * (KH * KW * COP);
        const __global float* xc = x0 + c * (HP * WP);
        #pragma unroll
        for (int i = 0; i < KH; i++)
            TAP_ROW(i, xc[XOFF(p) + i * DH * WP + j * DW])
    }
#endif

    /* Bias (the packed row after the weights) and activation on whole vectors: PoCL's vector
     * tanh and exp cost a fraction of eight scalar calls. */
#if POOL
    /* 2x2 pooling of the activated block: pixels 2k, 2k + 1 of both rows make output k. Max
     * as pool.cl's: the first maximum in window order, a NaN wins. */
    __global float* yp = y + (n0 * G + g) * (CO * (OH / 2) * (OW / 2)) + (oh0 / 2) * (OW / 2)
                         + (r0 - oh0 * OW) / 2;
    #pragma unroll
    for (int v = 0; v < OBV; v++) {
        const VEC bv = LOADV(wb + CI * KH * KW * COP + v * VW);
        VEC out[PC / 2];
        #pragma unroll
        for (int k = 0; k < PC / 2; k++) {
            const VEC a = activatev(acc[v][2 * k] + bv, act, slope);
            const VEC c = activatev(acc[v][2 * k + 1] + bv, act, slope);
            const VEC d = activatev(acc[v][PC + 2 * k] + bv, act, slope);
            const VEC e = activatev(acc[v][PC + 2 * k + 1] + bv, act, slope);
#if POOL == 1
            out[k] = ((a + c) + (d + e)) * 0.25f;
#else
            VEC m = a;
            m = ((c > m) | (c != c)) ? c : m;
            m = ((d > m) | (d != d)) ? d : m;
            m = ((e > m) | (e != e)) ? e : m;
            out[k] = m;
#endif
        }
        STORE_CHANNELS(PC / 2, yp[o * ((OH / 2) * (OW / 2)) + p])
    }
#else
    #pragma unroll
    for (int v = 0; v < OBV; v++) {
        const VEC bv = LOADV(wb + CI * KH * KW * COP + v * VW);
        VEC out[PB];
        if (has_residual) {     /* (with chunks the host sets it for the last, finishing one) */
            VEC rv[PB];
            LOAD_RESIDUAL(rv);
            #pragma unroll
            for (int p = 0; p < PB; p++)
                out[p] = activatev(acc[v][p] + bv + rv[p], act, slope);
        } else {
            #pragma unroll
            for (int p = 0; p < PB; p++)
#if CIC < CI
                out[p] = finish ? activatev(acc[v][p] + bv, act, slope) : acc[v][p];
#else
                out[p] = activatev(acc[v][p] + bv, act, slope);
#endif
        }
#if PAIR && !PAIR_FULL
        /* an eval-mode forward: the pooled map only */
#elif STORE_ROWS
        STORE_CHANNEL_ROWS()
#else
        STORE_CHANNELS(PB, y0[o * YPLANE + p * YSTEP])
#endif
#if PAIR
        /* pooled as the POOL form's ((a + c) + (d + e)) / 4: a, c above d, e */
        VEC pooled[PB / 2];
        #pragma unroll
        for (int k = 0; k < PB / 2; k++) {
            const VEC a = out[2 * k], c = out[2 * k + 1];
#if PAIR == 1
            if (!second)
                kept[v][k] = a + c;
            else
                pooled[k] = (kept[v][k] + (a + c)) * 0.25f;
#else
            VEC m = second ? kept[v][k] : a;
            if (second)
                m = ((a > m) | (a != a)) ? a : m;
            m = ((c > m) | (c != c)) ? c : m;
            kept[v][k] = m;
            pooled[k] = m;
#endif
        }
        if (second) {
            __global float* yp = y_pool + (n0 * G + g) * (CO * (OH / 2) * (OW / 2)) + (oh0 / 2) * (OW / 2);
            STORE_CHANNELS_OF(pooled, PB / 2, yp[o * ((OH / 2) * (OW / 2)) + p])
        }
#endif
    }
#endif
#if PAIR
    }
#endif
#if SELFPACK
    }
#endif
}

/* Partial weight (and bias) gradients over a slice of the output rows.
 * Work item (group g and channel block ob, input channel c and kernel-row block kb, slice s)
 * sums over the output rows (n, oh) of slice s (rows_per_slice of the N*OH rows):
 *   part[s, g, (c*KH + i)*KW + j, o] = sum gy[n, g*CO + o, oh, ow]
 *                                        * xp[n, g*CI + c, oh*SH + i*DH, ow*SW + j*DW]
 *   partb[s, g, o]                   = sum gy[n, g*CO + o, oh, ow]   (c == 0, kb == 0 items only)
 * (with PK xp is x unpadded, zero outside it, as the forward reads it).
 * for its KHB kernel rows i (KHB divides KH) and all KW columns: OBVW*KHB*KW vector registers.
 * Along a row, PBW pixels at a time: their gy vectors stay in registers and, with stride 1,
 * neighbouring pixels share input loads; a plain loop without that blocking let LLVM rotate
 * the accumulators through registers every pixel.
 * Global size (G * COPW/OBW, CI*NKB, slices). */
#define NKB (KH / KHB)

/* One pixel a step of a 5-wide (or wider) kernel in float8s: LLVM carries the row's next
 * KW - 1 inputs over to the next pixel in registers (a sliding window), which on AVX2's 16
 * registers pushes an accumulator out to the stack every pixel, putting a store-to-load
 * forward on its FMA chain. Volatile loads keep every input a fresh broadcast load: LeNet-5's
 * conv2 weight gradient (256x6x14x14 -> 16, (OBVW, KHB, PBW) = (2, 1, 1)) 2.3-2.5 -> 1.0-1.5 ms
 * (fastest of 100, alternating runs on the Zen 3 machine). Not elsewhere: 3x3 kernels with
 * one pixel a step measured even to 4% slower, and blocks of several pixels share their loads
 * (1.5-2.5x slower with volatile ones). */
#if PBW == 1 && VW == 8 && KW >= 5
#define BW_INPUT(p) ((const volatile __global float*)(p))
#else
#define BW_INPUT(p) (p)
#endif

/* acc += gy (x) x over P pixels starting at column ow of output row `gr` / input row `xr`;
 * with BIAS, accb += gy too. */
#define BW_PIXELS(P, BIAS, X)                                                                 \
    {                                                                                         \
        VEC gv[P][OBVW];                                                                       \
        _Pragma("unroll")                                                                     \
        for (int p = 0; p < (P); p++)                                                         \
            _Pragma("unroll")                                                                 \
            for (int v = 0; v < OBVW; v++) {                                                   \
                gv[p][v] = LOADV(gr + (ow + p) * (G * COPW) + v * VW);                         \
                if (BIAS) accb[v] += gv[p][v];                                                \
            }                                                                                 \
        _Pragma("unroll")                                                                     \
        for (int i = 0; i < KHB; i++)                                                         \
            _Pragma("unroll")                                                                 \
            for (int j = 0; j < KW; j++)                                                      \
                _Pragma("unroll")                                                             \
                for (int p = 0; p < (P); p++) {                                               \
                    const VEC xv = (VEC)(X);                                                  \
                    _Pragma("unroll")                                                         \
                    for (int v = 0; v < OBVW; v++)                                             \
                        acc[v][i][j] = xv * gv[p][v] + acc[v][i][j];                          \
                }                                                                             \
    }

#if !PK
/* The input at tap (i, j) of pixel ow + p, from the padded copy xp (row xr). */
#define X_PADDED(p, i, j) BW_INPUT(xr)[(ow + p) * SW + (i) * DH * WP + (j) * DW]
#define BW_ROWS(BIAS)                                                                         \
    for (int row = row_begin; row < row_end; row++) {                                         \
        const int n = row / OH;                                                               \
        const int oh = row - n * OH;                                                          \
        const __global float* xr = xp + ((n * G + g) * CI + c) * (HP * WP)                    \
                                   + (oh * SH + i0 * DH) * WP;                                \
        const __global float* gr = gyt + row * (OW * G * COPW) + g * COPW + ob * OBW;          \
        int ow = 0;                                                                           \
        for (; ow + PBW <= OW; ow += PBW)                                                     \
            BW_PIXELS(PBW, BIAS, X_PADDED(p, i, j))                                           \
        for (; ow < OW; ow++)                                                                 \
            BW_PIXELS(1, BIAS, X_PADDED(p, i, j))                                             \
    }
#else
/* PK: the input read unpadded (xp is x, XH x XW planes), as the forward reads it; the copy
 * had taken 0.38 ms of 64x16x32x32 -> 32 3x3's 5.8 ms backward. Pixels whose taps all fall
 * inside the input (columns OW_LO .. OW_HI - 1 of rows whose KHB tap rows are inside) read
 * unchecked, the rest pixel by pixel with each tap tested. */
#define OW_LO MIN(OW, (PL + SW - 1) / SW)
#define OW_HI_TAP (XW - 1 + PL - (KW - 1) * DW)   /* the last pixel's last tap at most XW - 1 */
#define OW_HI_RAW (OW_HI_TAP < 0 ? 0 : MIN(OW, OW_HI_TAP / SW + 1))
#define OW_HI (OW_HI_RAW > OW_LO ? OW_HI_RAW : OW_LO)
#define X_INSIDE(p, i, j) BW_INPUT(xr)[xo + (ow + p) * SW + (i) * DH * XW + (j) * DW]
#define X_TESTED(p, i, j) x_tested(xr, ih0 + (i) * DH, (ow + p) * SW + (j) * DW - PL)
#define BW_ROWS(BIAS)                                                                         \
    for (int row = row_begin; row < row_end; row++) {                                         \
        const int n = row / OH;                                                               \
        const int oh = row - n * OH;                                                          \
        const int ih0 = oh * SH + i0 * DH - PT;     /* the item's first tap row */            \
        const __global float* xr = xp + ((n * G + g) * CI + c) * (XH * XW);                   \
        const int xo = ih0 * XW - PL;               /* x at tap (0, 0) of pixel 0 */          \
        const __global float* gr = gyt + row * (OW * G * COPW) + g * COPW + ob * OBW;          \
        int ow = 0;                                                                           \
        if (ih0 >= 0 && ih0 + (KHB - 1) * DH < XH) {                                          \
            for (; ow < OW_LO; ow++)                                                          \
                BW_PIXELS(1, BIAS, X_TESTED(p, i, j))                                         \
            for (; ow + PBW <= OW_HI; ow += PBW)                                              \
                BW_PIXELS(PBW, BIAS, X_INSIDE(p, i, j))                                       \
            for (; ow < OW_HI; ow++)                                                          \
                BW_PIXELS(1, BIAS, X_INSIDE(p, i, j))                                         \
        }                                                                                     \
        for (; ow < OW; ow++)                                                                 \
            BW_PIXELS(1, BIAS, X_TESTED(p, i, j))                                             \
    }
/* x at row ih, column iw of plane xr, zero outside it. */
inline float x_tested(const __global float* xr, const int ih, const int iw)
{
    const bool inside = (unsigned)ih < (unsigned)XH && (unsigned)iw < (unsigned)XW;
    return inside ? xr[inside ? ih * XW + iw : 0] : 0.0f;
}
#endif

__kernel void conv2d_backward_weight(__global const float* restrict xp,
                                     __global const float* restrict gyt,
                                     __global float* restrict part,
                                     __global float* restrict partb,
                                     const int rows_per_slice)
{
    const int g = G == 1 ? 0 : get_global_id(0) / (COPW / OBW);
    const int ob = get_global_id(0) - g * (COPW / OBW);
    const int c = get_global_id(1) / NKB;
    const int kb = get_global_id(1) - c * NKB;
    const int i0 = kb * KHB;
    const int s = get_global_id(2);
    const int row_begin = s * rows_per_slice;
    const int row_end = MIN(row_begin + rows_per_slice, NPIX / OW);

    VEC acc[OBVW][KHB][KW];
    VEC accb[OBVW];
    #pragma unroll
    for (int v = 0; v < OBVW; v++) {
        accb[v] = (VEC)(0.0f);
        #pragma unroll
        for (int i = 0; i < KHB; i++)
            #pragma unroll
            for (int j = 0; j < KW; j++)
                acc[v][i][j] = (VEC)(0.0f);
    }

    /* One item per channel block also sums the bias gradient; the others run a loop without
     * those registers. */
    const bool bias_item = (c == 0 && kb == 0);
    if (bias_item) {
        BW_ROWS(1)
    } else {
        BW_ROWS(0)
    }

    __global float* ps = part + (s * G + g) * (CI * KH * KW * COPW) + ob * OBW;
    #pragma unroll
    for (int i = 0; i < KHB; i++)
        #pragma unroll
        for (int j = 0; j < KW; j++)
            #pragma unroll
            for (int v = 0; v < OBVW; v++)
                STOREV(acc[v][i][j], ps + ((c * KH + i0 + i) * KW + j) * COPW + v * VW);
    if (bias_item)
        #pragma unroll
        for (int v = 0; v < OBVW; v++)
            STOREV(accb[v], partb + (s * G + g) * COPW + ob * OBW + v * VW);
}

/* ---- helpers with runtime shapes (built once) ------------------------------------------- */

/* dst (planes, hp, wp) = src (planes, h, w) placed at rows pt + k*sh, columns pl + k*sw, zeros
 * elsewhere: zero padding when sh = sw = 1, zero insertion (dilation) for the backward pass.
 * pt / pl may be negative (rows or columns cropped). Work item per destination row:
 * global size (hp, planes). */
__kernel void conv2d_pad(__global const float* restrict src, __global float* restrict dst,
                         const int h, const int w, const int hp, const int wp,
                         const int pt, const int pl, const int sh, const int sw)
{
    const int r = get_global_id(0);
    const int plane = get_global_id(1);
    __global float* d = dst + (plane * hp + r) * wp;
    for (int j = 0; j < wp; j++)
        d[j] = 0.0f;
    const int k = r - pt;
    if (k < 0 || k % sh != 0 || k / sh >= h)
        return;
    const __global float* s = src + (plane * h + k / sh) * w;
    /* Source columns whose destination pl + t*sw falls inside [0, wp). */
    const int t_begin = pl >= 0 ? 0 : (-pl + sw - 1) / sw;
    const int t_end = MIN(w, (wp - 1 - pl) / sw + 1);
    for (int t = t_begin; t < t_end; t++)
        d[pl + t * sw] = s[t];
}

/* Packed weights wt (groups, rows + 1, cop), per group zeros for co >= the mode's output count,
 * then one more row holding the bias (zeros when has_bias is 0). From w (groups*O, C, KH, KW),
 * O and C (o_count, c_count) counted per group, w_g = w[g*O:(g+1)*O], b_g = b[g*O:(g+1)*O]:
 * mode 0 (forward):         wt[g, (c*kh + i)*kw + j, o] = w_g[o, c, i, j]
 * mode 1 (gather gx):       wt[g, (o*th + i)*tw + j, c] = w_g[o, c, rh + sh*(th-1-i), rw + sw*(tw-1-j)]
 *                           the sub-kernel of taps rh, rh + sh, ... (th of them) by rw, rw + sw, ...
 *                           (tw), flipped: the whole kernel flipped when th, tw = kh, kw, rh = rw = 0
 *                           and sh = sw = 1; one phase of a strided input gradient otherwise
 * mode 2 (columns for gx):  wt[g, o, (c*kh + i)*kw + j] = w_g[o, c, i, j]   (a 1x1 conv's weights)
 * Work item per packed row (a loop over its cop entries: one item per entry cost PoCL more in
 * per-item overhead than the copying, 0.09 ms for LeNet-5's 121 x 448). Global size (rows + 1,
 * groups). */
__kernel void conv2d_pack_weights(__global const float* restrict w, __global const float* restrict b,
                                  __global float* restrict wt, const int o_count,
                                  const int c_count, const int kh, const int kw, const int cop,
                                  const int mode, const int has_bias, const int th, const int tw,
                                  const int rh, const int rw, const int sh, const int sw)
{
    const int t = get_global_id(0);
    const int g = get_global_id(1);
    const int taps = kh * kw;
    w += g * o_count * c_count * taps;
    b += g * o_count;
    const int n_co = mode == 0 ? o_count : mode == 1 ? c_count : c_count * taps;
    const int rows = mode == 0 ? c_count * taps : mode == 1 ? o_count * th * tw : o_count;
    if (t > rows) return;               /* the global size rounded up to the work-group size */
    __global float* out = wt + (g * (rows + 1) + t) * cop;
    if (t == rows) {                    /* the bias row */
        for (int co = 0; co < cop; co++)
            out[co] = (co < n_co && has_bias) ? b[co] : 0.0f;
        return;
    }
    if (mode == 0) {
        /* Item t % 8 == 0 packs rows t .. t + 7 (the others return): for each co one float8 of
         * eight neighbouring weights, where an item per row read w with a stride of c_count *
         * taps floats, a new page every read for wide layers (ResNet-50's 1024 -> 2048 1x1:
         * 9.6 ms a pack at batch-1 inference). */
        if (t % 8)
            return;
        if (t + 8 <= rows) {
            for (int co = 0; co < n_co; co++) {
                const float8 v = LOAD8(w + co * c_count * taps + t);
                out[co] = v.s0; out[cop + co] = v.s1; out[2 * cop + co] = v.s2; out[3 * cop + co] = v.s3;
                out[4 * cop + co] = v.s4; out[5 * cop + co] = v.s5; out[6 * cop + co] = v.s6;
                out[7 * cop + co] = v.s7;
            }
            for (int r = 0; r < 8; r++)
                for (int co = n_co; co < cop; co++)
                    out[r * cop + co] = 0.0f;
        } else {
            for (int r = 0; r < rows - t; r++) {
                for (int co = 0; co < n_co; co++)
                    out[r * cop + co] = w[co * c_count * taps + t + r];
                for (int co = n_co; co < cop; co++)
                    out[r * cop + co] = 0.0f;
            }
        }
        return;
    } else if (mode == 1) {
        const int j = t % tw, i = (t / tw) % th, o = t / (th * tw);
        const __global float* src = w + (o * c_count * kh + rh + sh * (th - 1 - i)) * kw + rw + sw * (tw - 1 - j);
        for (int co = 0; co < n_co; co++)
            out[co] = src[co * taps];
    } else {
        for (int co = 0; co < n_co; co++)
            out[co] = w[t * n_co + co];
    }
    for (int co = n_co; co < cop; co++)
        out[co] = 0.0f;
}

/* wf[c, o, i, j] = w[o, c, kh-1-i, kw-1-j]: the kernel of the gather-form input gradient as
 * plain (C, O, KH, KW) weights, for conv2d_rows' forward kernel. Global size (kh*kw, o, c). */
__kernel void conv2d_flip_weights(__global const float* restrict w, __global float* restrict wf,
                                  const int o_count, const int c_count, const int kh, const int kw)
{
    const int t = get_global_id(0), o = get_global_id(1), c = get_global_id(2);
    const int taps = kh * kw;
    wf[(c * o_count + o) * taps + t] = w[(o * c_count + c) * taps + taps - 1 - t];
}

/* gx[n, c, h, w] = sum of cols[n, (c*kh + i)*kw + j, oh, ow] over the taps with
 * h + pt - i*dh = oh*sh and w + pl - j*dw = ow*sw inside the output: the gather half of the
 * columns form of the input gradient (cols = w^T gy, made by conv2d_forward as a 1x1 conv,
 * per group when grouped: the channel order is the same). Loops run over the output pixels
 * whose (dilated) window covers (h, w), skipping those that fall between two dilated taps.
 * Global size (w, h, N*C). */
__kernel void conv2d_col2im(__global const float* restrict cols, __global float* restrict gx,
                            const int c_count, const int h, const int w, const int kh,
                            const int kw, const int oh, const int ow, const int sh, const int sw,
                            const int pt, const int pl, const int dh, const int dw)
{
    const int x = get_global_id(0);
    const int y = get_global_id(1);
    const int nc = get_global_id(2);
    if (x >= w || y >= h) return;
    const int n = nc / c_count;
    const int c = nc - n * c_count;
    const __global float* cn = cols + ((n * c_count + c) * kh * kw) * (oh * ow);
    float sum = 0.0f;
    const int ys = y + pt, xs = x + pl;
    const int ekh = (kh - 1) * dh + 1, ekw = (kw - 1) * dw + 1;   /* dilated kernel extent */
    for (int r = MIN(oh - 1, ys / sh); r >= 0 && ys - r * sh < ekh; r--) {
        const int di = ys - r * sh;
        if (di % dh != 0) continue;
        for (int q = MIN(ow - 1, xs / sw); q >= 0 && xs - q * sw < ekw; q--) {
            const int dj = xs - q * sw;
            if (dj % dw != 0) continue;
            sum += cn[((di / dh) * kw + dj / dw) * (oh * ow) + r * ow + q];
        }
    }
    gx[(nc * h + y) * w + x] = sum;
}

/* cols[n, (c*kh + i)*kw + j, oh*OW + ow] = x[n, c, oh*sh + i*dh - pt, ow*sw + j*dw - pl], zero
 * where that falls in the padding: the columns of the im2col forward (clcnn/ops/conv2d_im2col.py),
 * which one matrix product with w viewed as (O, C*KH*KW) turns into the convolution. A work item
 * per (row, image) writes its row of OH*OW values whole. Global size (C*KH*KW, N). */
__kernel void conv2d_im2col(__global const float* restrict x, __global float* restrict cols,
                            const int c_count, const int h, const int w, const int kh, const int kw,
                            const int oh, const int ow, const int sh, const int sw, const int pt,
                            const int pl, const int dh, const int dw)
{
    const int r = get_global_id(0), n = get_global_id(1);
    if (r >= c_count * kh * kw) return;
    const int c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
    const __global float* plane = x + ((size_t)n * c_count + c) * h * w;
    __global float* row = cols + ((size_t)n * c_count * kh * kw + r) * (oh * ow);
    for (int y = 0; y < oh; ++y) {
        const int iy = y * sh + i * dh - pt;
        const int inside = iy >= 0 && iy < h;
        for (int q = 0; q < ow; ++q) {
            const int ix = q * sw + j * dw - pl;
            row[y * ow + q] = (inside && ix >= 0 && ix < w) ? plane[iy * w + ix] : 0.0f;
        }
    }
}

/* gyt[(n*r_count + r)*groups*cop + g*cop + o] = gy[(n*groups*o_count + g*o_count + o)*r_count + r],
 * zeros for o >= o_count (o_count channels per group, each group's run padded to cop).
 * Work item per 16 consecutive rows q = n*r_count + r of gyt (across images where the planes
 * are small), a loop over the channels eight at a time that fills those rows whole: an item
 * per 8 x 8 tile spent more on PoCL's per-item overhead and partial cache lines than on moving
 * the data. Global size (ceil(npix/16)), npix = N*r_count. */
__kernel void conv2d_transpose_nchw(__global const float* restrict gy, __global float* restrict gyt,
                                    const int o_count, const int r_count, const int cop,
                                    const int groups, const int npix)
{
    const int q0 = get_global_id(0) * 16;
    if (q0 >= npix) return;
    const int rn = MIN(16, npix - q0);
    int off[16];    /* gy's offset of each row's pixel in channel 0 (pixels past npix: the last) */
    int n = q0 / r_count, r = q0 - n * r_count;     /* stepped, not divided, per pixel */
    #pragma unroll
    for (int b = 0; b < 16; b++) {
        off[b] = n * groups * o_count * r_count + r;
        if (q0 + b + 1 < npix && ++r == r_count) {
            r = 0;
            n++;
        }
    }
    const bool one_image = rn == 16 && off[15] == off[0] + 15;
    __global float* out = gyt + q0 * (groups * cop);
    const int row = groups * cop;   /* gyt's row length */
    for (int g = 0; g < groups; g++) {
        for (int o0 = 0; o0 < cop; o0 += 8) {
            __global float* dst = out + g * cop + o0;
            if (one_image) {
                /* A run of 16 pixels: two vector loads per channel, turned pixel-major by two
                 * 8 x 8 register transposes, one vector store per pixel (the tile through a
                 * private array took 0.65 ms of 64x16x32x32 -> 32 3x3's backward). */
                float8 lo[8], hi[8];    /* [channel]: pixels 0-7, 8-15; then [pixel]: channels */
                #pragma unroll
                for (int a = 0; a < 8; a++) {
                    const int o = o0 + a;
                    const __global float* src = gy + (g * o_count + MIN(o, o_count - 1)) * r_count + off[0];
                    lo[a] = o < o_count ? ULOAD8(src) : (float8)(0.0f);
                    hi[a] = o < o_count ? ULOAD8(src + 8) : (float8)(0.0f);
                }
                transpose8x8(lo);
                transpose8x8(hi);
                #pragma unroll
                for (int b = 0; b < 8; b++) {
                    USTORE8(lo[b], dst + b * row);
                    USTORE8(hi[b], dst + (b + 8) * row);
                }
                continue;
            }
            float tile[8][16];   /* [channel][pixel] */
            #pragma unroll
            for (int a = 0; a < 8; a++) {
                const int o = o0 + a;
                const __global float* src = gy + (g * o_count + MIN(o, o_count - 1)) * r_count;
                #pragma unroll
                for (int b = 0; b < 16; b++)
                    tile[a][b] = o < o_count ? src[off[b]] : 0.0f;
            }
            for (int b = 0; b < rn; b++) {
                const float8 v = (float8)(tile[0][b], tile[1][b], tile[2][b], tile[3][b],
                                          tile[4][b], tile[5][b], tile[6][b], tile[7][b]);
                STORE8(v, dst + b * row);
            }
        }
    }
}

/* gw[o, t] = sum_s part[s, g, t, o - g*og] for t over C*KH*KW (C per group) and o in group
 * g = o / og (og output channels per group, rows of part cop long); gb[o] = sum_s
 * partb[s, g, o - g*og] (t == t_count, only when has_bias). Work item per t (a loop over the
 * output channels, eight at a time, reading part's rows in order): global size
 * (t_count + has_bias). */
__kernel void conv2d_backward_weight_reduce(__global const float* restrict part,
                                            __global const float* restrict partb,
                                            __global float* restrict gw, __global float* restrict gb,
                                            const int slices, const int t_count, const int o_count,
                                            const int cop, const int og, const int has_bias)
{
    const int t = get_global_id(0);
    if (t >= t_count + has_bias) return;    /* the global size rounded up to the work-group size */
    const int groups = o_count / og;
    const int slice_step = groups * (t < t_count ? t_count * cop : cop);
    for (int g = 0; g < groups; g++) {
        const __global float* src = t < t_count ? part + (g * t_count + t) * cop : partb + g * cop;
        __global float* dst = t < t_count ? gw + g * og * t_count + t : gb + g * og;
        const int dst_step = t < t_count ? t_count : 1;
        int ol = 0;
        for (; ol + 8 <= og; ol += 8) {
            float8 sum = LOAD8(src + ol);
            for (int s = 1; s < slices; s++)
                sum += LOAD8(src + s * slice_step + ol);
            #pragma unroll
            for (int l = 0; l < 8; l++)
                dst[(ol + l) * dst_step] = LANE8(sum, l);
        }
        for (; ol < og; ol++) {
            float sum = 0.0f;
            for (int s = 0; s < slices; s++)
                sum += src[s * slice_step + ol];
            dst[ol * dst_step] = sum;
        }
    }
}
