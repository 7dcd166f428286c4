/* conv2d_sums.cl: the input gradient of a stride-1 convolution with its vector lanes over the
 * forward's output channels, for narrow inputs (rows of at most 16 pixels) such as LeNet-5's
 * conv2 (6 -> 16 channels, 5x5, 14x14 inputs).
 *
 *   gx[n, c, i, j] = sum over o, kh, kw of gy[n, o, i + PT - kh, j + PL - kw] * w[o, c, kh, kw]
 *                    (the gy pixels inside its OH x OW plane only)
 *
 * The other forms multiply zeros: the gather form (conv2d.cl, conv2d_rows.cl) convolves gy
 * padded by K-1 with the flipped kernel, and its lanes along a 14-pixel row of gx meet 10 gy
 * pixels per tap. Here a lane holds one output channel o, so every lane of every multiply-add
 * is a real product and the taps that fall outside gy are left out at compile time (the pixel
 * and tap loops unroll against the defines); a work item makes one row of gx for one input
 * channel and adds its W vectors' lanes up at the end.
 *
 * Layouts (row-major):
 *   gyt (N*OH*OW, COP): gy pixel-major, channel o of pixel (n, r, col) at
 *       gyt[((n*OH + r)*OW + col)*COP + o], zeros past O (conv2d.cl's conv2d_transpose_nchw);
 *   wt  (C*KH*KW (+1), COP): wt[((c*KH + kh)*KW + kw)*COP + o] = w[o, c, kh, kw], zeros past O
 *       (conv2d.cl's conv2d_pack_weights, forward mode; its bias row is not read);
 *   gx  (N, C, H, W).
 * COP is a multiple of 16 (float16 lanes: the host uses this file only where the device takes
 * float16 vectors, AVX-512); W <= 16. No local memory, no barriers.
 */

#ifndef N
#define N 1
#endif
#ifndef C
#define C 1             /* input channels (gx's) */
#endif
#ifndef H
#define H 1             /* input height and width */
#endif
#ifndef W
#define W 1
#endif
#ifndef OH
#define OH 1            /* output (gy) height and width */
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
#ifndef PT
#define PT 0            /* the forward's padding above and left of the input */
#endif
#ifndef PL
#define PL 0
#endif
#ifndef COP
#define COP 16          /* output channels rounded up to 16: gyt's and wt's row length */
#endif

#define LOAD16(p) ((float16)(LOAD8(p), LOAD8((p) + 8)))

/* The slot of pixel p among the 16 accumulators, so that common.h's lane_sums16 gives pixel
 * p's total in lane p. */
#define SLOT(p) SLOT16(p)

__kernel void conv2d_input_grad_sums(__global const float* restrict gyt,
                                     __global const float* restrict wt,
                                     __global float* restrict gx)
{
    int t = get_global_id(0);
    if (t >= N * C * H) return;
    const int i = t % H;
    t /= H;
    const int c = t % C;
    const int n = t / C;

    float16 acc[16];    /* acc[SLOT(p)]: pixel p of the row, lanes over output channels */
    #pragma unroll
    for (int s = 0; s < 16; s++)
        acc[s] = (float16)(0.0f);
    #pragma unroll
    for (int kh = 0; kh < KH; kh++) {
        const int r = i + PT - kh;      /* the gy row this tap row reads */
        if ((unsigned)r < (unsigned)OH) {
            for (int o0 = 0; o0 < COP; o0 += 16) {
                const __global float* g = gyt + (n * OH + r) * (OW * COP) + o0;
                float16 gv[OW];         /* the row's gy pixels, each used by up to KW taps */
                #pragma unroll
                for (int col = 0; col < OW; col++)
                    gv[col] = LOAD16(g + col * COP);
                #pragma unroll
                for (int kw = 0; kw < KW; kw++) {
                    const float16 wv = LOAD16(wt + ((c * KH + kh) * KW + kw) * COP + o0);
                    #pragma unroll
                    for (int p = 0; p < W; p++) {
                        const int col = p + PL - kw;
                        if (col >= 0 && col < OW)       /* constants once unrolled */
                            acc[SLOT(p)] = gv[col] * wv + acc[SLOT(p)];
                    }
                }
            }
        }
    }

    const float16 total = lane_sums16(acc);     /* lane p: pixel p's total */

    __global float* out = gx + ((n * C + c) * H + i) * W;
#if W >= 8
    STORE8(total.lo, out);
#endif
    #pragma unroll
    for (int p = (W >= 8 ? 8 : 0); p < W; p++)
        out[p] = LANE16(total, p);
}
