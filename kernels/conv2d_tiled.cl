/* conv2d_tiled.cl: Conv2D (cross-correlation, as PyTorch's conv2d) as GPU-style implicit GEMM,
 * forward, input gradient and weight gradient; the alternative to the CPU-style direct kernels
 * of conv2d.cl, chosen per device and shape by clcnn.tuning.
 *
 * Layouts (row-major, NCHW), G groups of CI input and CO output channels (CI, CO per group):
 * x (N, G*CI, H, W), x[((n*G*CI + g*CI + c)*H + h)*W + w]; w (G*CO, CI, KH, KW);
 * y and gy (N, G*CO, OH, OW), OH = (H + PT + PB_ - DH*(KH-1) - 1)/SH + 1 (the host passes OH,
 * OW): tap (i, j) of output pixel (oh, ow) reads x[oh*SH + i*DH - PT, ow*SW + j*DW - PL].
 * Each group is its own matrix product below, group g on grid axis 2.
 * Nothing is packed or padded beforehand: the tile loads read w, x and gy in place, and taps
 * that fall into the zero padding (or, for the input gradient, between strided outputs) load
 * 0 by a bounds check, so each pass is one launch (plus a small reduction for the weights).
 *
 * Each pass is a matrix product C (M x NC) = A (M x K) B (K x NC):
 *   forward          M = CO, NC = N*OH*OW, K = CI*KH*KW: A = w, B = the input windows (im2col)
 *   input gradient   M = CI, NC = N*H*W,   K = CO*KH*KW: A = w with its channel axes swapped,
 *                    B[(o,i,j), (n,h,w)] = gy[n, o, (h+PT-i)/SH, (w+PL-j)/SW] where that divides
 *   weight gradient  M = CO, NC = CI*KH*KW + 1, K = N*OH*OW: A = gy, B = the input windows
 *                    transposed, plus a column of ones whose result is the bias gradient; K is
 *                    split over KSPLIT slices (third grid axis) whose partial sums
 *                    conv2d_backward_weight_reduce (conv2d.cl) adds up.
 *
 * Work-groups: (RTSN, RTSM) work items, required (the host passes exactly that local size),
 * computing a TSM x TSN tile of C; every item owns WPTM x WPTN outputs (WPTM_F / _I / _G per
 * pass; TSM = RTSM*WPTM, TSN = RTSN*WPTN) at rows ty + r*RTSM and columns tx + c*RTSN, so neighbouring items read
 * neighbouring __local words. K advances TSK at a time through __local tiles of A and B, with
 * a barrier after loading and after using them. Global size (ceil(NC/TSN)*RTSN,
 * ceil(M/TSM)*RTSM, G*KSPLIT), axis 2 = g*KSPLIT + slice. Portable OpenCL 1.2; on a CPU driver (PoCL) it is correct but
 * several times slower than the direct kernels, which is why both exist.
 */

#ifndef CI
#define CI 1
#endif
#ifndef H
#define H 1
#endif
#ifndef W
#define W 1
#endif
#ifndef CO
#define CO 1
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
#ifndef PT
#define PT 0            /* padding rows at the top */
#endif
#ifndef PL
#define PL 0            /* padding columns at the left */
#endif
#ifndef OH
#define OH 1
#endif
#ifndef OW
#define OW 1
#endif
#ifndef NB
#define NB 1            /* batch size */
#endif
#ifndef RTSM
#define RTSM 16         /* work items per tile column */
#endif
#ifndef RTSN
#define RTSN 16         /* work items per tile row */
#endif
/* Outputs per work item along M and NC, per pass (F forward, I input, G weight gradient):
 * all three passes of a shape come from one build. */
#ifndef WPTM_F
#define WPTM_F 4
#endif
#ifndef WPTN_F
#define WPTN_F 4
#endif
#ifndef WPTM_I
#define WPTM_I 4
#endif
#ifndef WPTN_I
#define WPTN_I 4
#endif
#ifndef WPTM_G
#define WPTM_G 4
#endif
#ifndef WPTN_G
#define WPTN_G 4
#endif
#ifndef TSK
#define TSK 16          /* K per __local tile */
#endif
#ifndef KSPLIT
#define KSPLIT 1        /* slices of K (weight gradient only) */
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

/* TSM and TSN follow whichever WPTM / WPTN the kernel below defines for itself. */
#define TSM (RTSM * WPTM)
#define TSN (RTSN * WPTN)
#define NT (RTSM * RTSN)
#define TAPS (KH * KW)

/* Input window element (c, i, j) of output pixel (n, oh, ow), x already offset to the group's
 * first channel: 0 in the padding. */
inline float x_window(__global const float* x, int n, int c, int i, int j, int oh, int ow) {
    const int h = oh * SH + i * DH - PT;
    const int w = ow * SW + j * DW - PL;
    return (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * G * CI + c) * H + h) * W + w] : 0.0f;
}

/* The shared GEMM loop. LOAD_A(m, k) and LOAD_B(k, p) read an element of A or B (0 outside
 * the matrix); A_K_FAST picks the order in which a group's items load A (along K when A's
 * rows are long contiguous runs in memory, as gy's are, else along M). Leaves acc[WPTM][WPTN]
 * holding C's rows m0 + ty + r*RTSM, columns p0 + tx + c*RTSN over K range [kbeg, kend). */
#define TILED_GEMM(LOAD_A, LOAD_B, A_K_FAST, kbeg, kend)                                      \
    __local float As[TSK][TSM];                                                                \
    __local float Bs[TSK][TSN + 1];                                                            \
    float acc[WPTM][WPTN];                                                                     \
    for (int r = 0; r < WPTM; r++)                                                             \
        for (int c = 0; c < WPTN; c++)                                                         \
            acc[r][c] = 0.0f;                                                                  \
    const int tid = ty * RTSN + tx;                                                            \
    for (int k0 = (kbeg); k0 < (kend); k0 += TSK) {                                            \
        for (int l = tid; l < TSM * TSK; l += NT) {                                            \
            const int mm = A_K_FAST ? l / TSK : l % TSM;                                       \
            const int kk = A_K_FAST ? l % TSK : l / TSM;                                       \
            const int m = m0 + mm, k = k0 + kk;                                                \
            As[kk][mm] = (m < M_ && k < (kend)) ? LOAD_A(m, k) : 0.0f;                         \
        }                                                                                      \
        for (int l = tid; l < TSN * TSK; l += NT) {                                            \
            const int pp = l % TSN, kk = l / TSN;                                              \
            const int p = p0 + pp, k = k0 + kk;                                                \
            Bs[kk][pp] = (p < NC_ && k < (kend)) ? LOAD_B(k, p) : 0.0f;                        \
        }                                                                                      \
        barrier(CLK_LOCAL_MEM_FENCE);                                                          \
        for (int kk = 0; kk < TSK; kk++) {                                                     \
            float bv[WPTN];                                                                    \
            for (int c = 0; c < WPTN; c++)                                                     \
                bv[c] = Bs[kk][tx + c * RTSN];                                                 \
            for (int r = 0; r < WPTM; r++) {                                                   \
                const float av = As[kk][ty + r * RTSM];                                        \
                for (int c = 0; c < WPTN; c++)                                                 \
                    acc[r][c] = av * bv[c] + acc[r][c];                                        \
            }                                                                                  \
        }                                                                                      \
        barrier(CLK_LOCAL_MEM_FENCE);                                                          \
    }

/* y = act(w * im2col(x) + b); b is read only when has_bias. */
#define WPTM WPTM_F
#define WPTN WPTN_F
__kernel __attribute__((reqd_work_group_size(RTSN, RTSM, 1)))
void conv2d_forward_tiled(__global const float* restrict x, __global const float* restrict w,
                          __global const float* restrict b, __global float* restrict y,
                          const int has_bias, const int act, const float slope)
{
#define M_ CO
#define NC_ (NB * OH * OW)
#define K_ (CI * TAPS)
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int p0 = get_group_id(0) * TSN, m0 = get_group_id(1) * TSM;
    const int g = get_group_id(2);
    /* Group g's slices of every tensor; y's image stride stays G*CO planes (n below counts
     * images times G). */
    x += g * CI * (H * W);
    w += g * CO * K_;
    b += g * CO;
    y += g * CO * (OH * OW);
#define FWD_A(m, k) w[(m) * K_ + (k)]
#define FWD_B(k, p) x_window(x, (p) / (OH * OW), (k) / TAPS, ((k) % TAPS) / KW, (k) % KW,     \
                             ((p) % (OH * OW)) / OW, (p) % OW)
    TILED_GEMM(FWD_A, FWD_B, 0, 0, K_)
    for (int r = 0; r < WPTM; r++) {
        const int m = m0 + ty + r * RTSM;
        if (m >= M_) continue;
        const float bias = has_bias ? b[m] : 0.0f;
        for (int c = 0; c < WPTN; c++) {
            const int p = p0 + tx + c * RTSN;
            if (p < NC_) {
                const int n = p / (OH * OW) * G;
                y[(n * CO + m) * (OH * OW) + p % (OH * OW)] = activate(acc[r][c] + bias, act, slope);
            }
        }
    }
#undef M_
#undef NC_
#undef K_
}
#undef WPTM
#undef WPTN

/* gy's element for input pixel (n, h, w) through tap (o, i, j): the output pixel whose window
 * puts tap (i, j) on (h, w), or 0 when there is none (padding, or between strided outputs). */
inline float gy_gather(__global const float* gy, int n, int o, int i, int j, int h, int w) {
    const int th = h + PT - i * DH, tw = w + PL - j * DW;
    if (th < 0 || tw < 0 || th % SH != 0 || tw % SW != 0) return 0.0f;
    const int oh = th / SH, ow = tw / SW;
    return (oh < OH && ow < OW) ? gy[((n * G * CO + o) * OH + oh) * OW + ow] : 0.0f;
}

/* gx = w^T (as M = CI rows) times the gathered gy. */
#define WPTM WPTM_I
#define WPTN WPTN_I
__kernel __attribute__((reqd_work_group_size(RTSN, RTSM, 1)))
void conv2d_backward_input_tiled(__global const float* restrict gy,
                                 __global const float* restrict w, __global float* restrict gx)
{
#define M_ CI
#define NC_ (NB * H * W)
#define K_ (CO * TAPS)
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int p0 = get_group_id(0) * TSN, m0 = get_group_id(1) * TSM;
    const int g = get_group_id(2);
    gy += g * CO * (OH * OW);
    w += g * CO * (CI * TAPS);
    gx += g * CI * (H * W);
#define GX_A(m, k) w[((k) / TAPS * CI + (m)) * TAPS + (k) % TAPS]
#define GX_B(k, p) gy_gather(gy, (p) / (H * W), (k) / TAPS, ((k) % TAPS) / KW, (k) % KW,     \
                             ((p) % (H * W)) / W, (p) % W)
    TILED_GEMM(GX_A, GX_B, 0, 0, K_)
    for (int r = 0; r < WPTM; r++) {
        const int m = m0 + ty + r * RTSM;
        if (m >= M_) continue;
        for (int c = 0; c < WPTN; c++) {
            const int p = p0 + tx + c * RTSN;
            if (p < NC_) {
                const int n = p / (H * W);
                gx[(n * G * CI + m) * (H * W) + p % (H * W)] = acc[r][c];
            }
        }
    }
#undef M_
#undef NC_
#undef K_
}
#undef WPTM
#undef WPTN

/* Partial gw (and gb, as column CI*KH*KW) of group g over slice s of the N*OH*OW pixels, in
 * the layout of conv2d.cl's conv2d_backward_weight: part[s, g, t, o] and partb[s, g, o], row
 * length CO. */
#define WPTM WPTM_G
#define WPTN WPTN_G
__kernel __attribute__((reqd_work_group_size(RTSN, RTSM, 1)))
void conv2d_backward_weight_tiled(__global const float* restrict x,
                                  __global const float* restrict gy,
                                  __global float* restrict part, __global float* restrict partb)
{
#define M_ CO
#define NC_ (CI * TAPS + 1)
#define K_ (NB * OH * OW)
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int p0 = get_group_id(0) * TSN, m0 = get_group_id(1) * TSM;
    const int g = get_group_id(2) / KSPLIT;
    const int s = get_group_id(2) - g * KSPLIT;
    x += g * CI * (H * W);
    gy += g * CO * (OH * OW);
    /* Slices are whole TSK steps, so only the last one is ragged. */
    const int per_slice = ((K_ + TSK - 1) / TSK + KSPLIT - 1) / KSPLIT * TSK;
    const int kbeg = s * per_slice;
    const int kend = min(kbeg + per_slice, K_);
#define GW_A(m, k) gy[((k) / (OH * OW) * (G * CO) + (m)) * (OH * OW) + (k) % (OH * OW)]
#define GW_B(k, p) ((p) == CI * TAPS ? 1.0f                                                  \
                    : x_window(x, (k) / (OH * OW), (p) / TAPS, ((p) % TAPS) / KW, (p) % KW,   \
                               ((k) % (OH * OW)) / OW, (k) % OW))
    TILED_GEMM(GW_A, GW_B, 1, kbeg, kend)
    for (int r = 0; r < WPTM; r++) {
        const int m = m0 + ty + r * RTSM;
        if (m >= M_) continue;
        for (int c = 0; c < WPTN; c++) {
            const int p = p0 + tx + c * RTSN;
            if (p < CI * TAPS)
                part[((s * G + g) * (CI * TAPS) + p) * CO + m] = acc[r][c];
            else if (p == CI * TAPS)
                partb[(s * G + g) * CO + m] = acc[r][c];
        }
    }
#undef M_
#undef NC_
#undef K_
}
#undef WPTM
#undef WPTN
