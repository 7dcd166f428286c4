/* winograd.cl: Winograd convolution F(WM x WM, WR x WR), stride 1.
 *
 * Y = AT [ (G g GT) (.) (BT d B) ] A turns a WA x WA input tile d (WA = WM + WR - 1) and a
 * WR x WR filter g into a WM x WM output tile with WA*WA multiplies instead of WM*WM*WR*WR
 * (F(4x4, 3x3): 36 against 144). Summed over the input channels, the products become WA*WA
 * independent matrix products, one per tile position xi:
 *   M[xi, o, t] = sum_c U[xi, c, o] * V[xi, c, t]
 * Four kernels (clcnn/ops/winograd.py runs them in this order):
 *   winograd_input    x (N, C, H, W)    -> V (WA*WA, C, TP), tile t = (n*TH + th)*TW + tw,
 *                     zero padding (PT rows, PL columns) applied while reading;
 *   winograd_weights  w                 -> U (WA*WA, C, CO);
 *   winograd_products U, V              -> M (WA*WA, CO, TP);
 *   winograd_output   M                 -> y (N, CO, OH, OW), bias and activation added.
 * Shapes are arguments: C, CO input and output channels, H, W and OH, OW the input and output
 * sides, PT, PL the zero rows above and columns left of the input, TH = ceil(OH / WM) by
 * TW = ceil(OW / WM) tiles per image. Tiles t < NT = N*TH*TW are real; rows of V and M are TP
 * long (NT rounded up to NB, the products' column block), and the columns past NT hold
 * copies of tile NT - 1 that nothing reads.
 * The transforms run VW tiles at a time in the vector lanes (their arithmetic is most of
 * their cost); the products are CPU-style register blocks as gemm.cl's gemm_block, TM rows
 * of o by NV vectors of tiles, no local memory.
 * The matrices come in as -D lists (WBT, WG, WAT, row-major); the loops over them unroll, so
 * their zeros and ones fold away, and one build serves every shape.
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
DEFINE_TANHV(VEC)
DEFINE_ACTIVATEV(VEC)

__constant float BT[WA * WA] = {WBT};
__constant float GM[WA * WR] = {WG};
__constant float AT[WM * WA] = {WAT};

/* V[xi, c, t] = (BT d B)[xi] for tile t (clamped to NT - 1) of channel c: d is the input
 * window at rows th*WM - PT .., columns tw*WM - PL .. of plane (n, c), zeros outside the
 * image. One tile per work item, written for PoCL to vectorise across the work-group (the
 * host gives it groups of VW tiles): explicit vectors over the tiles, gathered lane by lane,
 * ran 1.8x slower. Global size (TP, C). */
__kernel void winograd_input(__global const float* restrict x, __global float* restrict v,
                             const int C, const int H, const int W, const int OH, const int OW,
                             const int PT, const int PL, const int NT, const int TP)
{
    const int TH = (OH + WM - 1) / WM, TW = (OW + WM - 1) / WM;
    const int t = MIN((int)get_global_id(0), NT - 1);
    const int c = get_global_id(1);
    const int n = t / (TH * TW);
    const int th = (t - n * (TH * TW)) / TW;
    const int tw = t - n * (TH * TW) - th * TW;
    const __global float* xc = x + (n * C + c) * (H * W);
    float d[WA][WA];
    #pragma unroll
    for (int u = 0; u < WA; u++) {
        const int r = th * WM - PT + u;
        #pragma unroll
        for (int k = 0; k < WA; k++) {
            const int col = tw * WM - PL + k;
            d[u][k] = (r >= 0 && r < H && col >= 0 && col < W) ? xc[r * W + col] : 0.0f;
        }
    }
    float bd[WA][WA];     /* BT d */
    #pragma unroll
    for (int i = 0; i < WA; i++)
        #pragma unroll
        for (int k = 0; k < WA; k++) {
            float s = 0.0f;
            #pragma unroll
            for (int u = 0; u < WA; u++)
                if (BT[i * WA + u] != 0.0f)
                    s += BT[i * WA + u] * d[u][k];
            bd[i][k] = s;
        }
    __global float* vc = v + c * TP + get_global_id(0);
    #pragma unroll
    for (int i = 0; i < WA; i++)
        #pragma unroll
        for (int j = 0; j < WA; j++) {
            float s = 0.0f;
            #pragma unroll
            for (int k = 0; k < WA; k++)
                if (BT[j * WA + k] != 0.0f)
                    s += BT[j * WA + k] * bd[i][k];
            vc[(i * WA + j) * (C * TP)] = s;
        }
}

/* U[xi, c, o] = (G g GT)[xi] with g the filter from input channel c to output channel o:
 * w[o, c] of w (CO, C, WR, WR), or with flip w[c, o] of w (C, CO, WR, WR) rotated by 180
 * degrees (the gather form of a convolution's input gradient: its input channels are the
 * convolution's outputs). Global size (CO, C). */
__kernel void winograd_weights(__global const float* restrict w, __global float* restrict u,
                               const int C, const int CO, const int flip)
{
    const int o = get_global_id(0);
    const int c = get_global_id(1);
    if (o >= CO || c >= C) return;
    float g[WR][WR];
    #pragma unroll
    for (int i = 0; i < WR; i++)
        #pragma unroll
        for (int j = 0; j < WR; j++)
            g[i][j] = flip ? w[((c * CO + o) * WR + (WR - 1 - i)) * WR + (WR - 1 - j)]
                           : w[((o * C + c) * WR + i) * WR + j];
    float gg[WA][WR];     /* G g */
    #pragma unroll
    for (int a = 0; a < WA; a++)
        #pragma unroll
        for (int j = 0; j < WR; j++) {
            float s = 0.0f;
            #pragma unroll
            for (int i = 0; i < WR; i++)
                s += GM[a * WR + i] * g[i][j];
            gg[a][j] = s;
        }
    #pragma unroll
    for (int a = 0; a < WA; a++)
        #pragma unroll
        for (int b = 0; b < WA; b++) {
            float s = 0.0f;
            #pragma unroll
            for (int j = 0; j < WR; j++)
                s += gg[a][j] * GM[b * WR + j];
            u[((a * WA + b) * C + c) * CO + o] = s;
        }
}

/* M[xi] = U[xi]^T V[xi]: work item (column block, row block, xi) owns rows o0 .. o0 + TM - 1
 * (rows past CO read row CO - 1 and are not stored) by the NB columns t0 ..; per input channel
 * it loads NV vectors of V and TM scalars of U for TM*NV vector FMAs. Global size (TP / NB,
 * ceil(CO / TM), WA*WA). */
__kernel void winograd_products(__global const float* restrict u, __global const float* restrict v,
                                __global float* restrict m, const int C, const int CO, const int TP)
{
    const int t0 = get_global_id(0) * NB;
    const int o0 = get_global_id(1) * TM;
    const int xi = get_global_id(2);
    if (o0 >= CO) return;
    const __global float* vx = v + xi * (C * TP) + t0;
    const __global float* ux[TM];
    #pragma unroll
    for (int i = 0; i < TM; i++)
        ux[i] = u + xi * (C * CO) + MIN(o0 + i, CO - 1);
    VEC acc[TM][NV];
    #pragma unroll
    for (int i = 0; i < TM; i++)
        #pragma unroll
        for (int k = 0; k < NV; k++)
            acc[i][k] = (VEC)(0.0f);
    for (int c = 0; c < C; c++) {
        VEC bv[NV];
        #pragma unroll
        for (int k = 0; k < NV; k++)
            bv[k] = LOADV(vx + c * TP + k * VW);
        #pragma unroll
        for (int i = 0; i < TM; i++) {
            const float a = ux[i][c * CO];
            #pragma unroll
            for (int k = 0; k < NV; k++)
                acc[i][k] = a * bv[k] + acc[i][k];
        }
    }
    #pragma unroll
    for (int i = 0; i < TM; i++)
        if (o0 + i < CO)
            #pragma unroll
            for (int k = 0; k < NV; k++)
                STOREV(acc[i][k], m + (xi * CO + o0 + i) * TP + t0 + k * VW);
}

/* y[n, o, th*WM + i, tw*WM + j] = act((AT m A)[i, j] + b[o]) for m[xi] = M[xi, o, t], VW tiles
 * t0 + l at a time, the tiles t < NT and the pixels inside the output only. Global size
 * (TP / VW, CO). */
__kernel void winograd_output(__global const float* restrict m, __global const float* restrict b,
                              __global float* restrict y, const int has_bias, const int act,
                              const float slope, const int CO, const int OH, const int OW,
                              const int NT, const int TP)
{
    const int TH = (OH + WM - 1) / WM, TW = (OW + WM - 1) / WM;
    const int t0 = get_global_id(0) * VW;
    const int o = get_global_id(1);
    const __global float* mo = m + o * TP + t0;
    VEC am[WM][WA];       /* AT m */
    #pragma unroll
    for (int i = 0; i < WM; i++)
        #pragma unroll
        for (int k = 0; k < WA; k++)
            am[i][k] = (VEC)(0.0f);
    #pragma unroll
    for (int a = 0; a < WA; a++)
        #pragma unroll
        for (int k = 0; k < WA; k++) {
            const VEC mv = LOADV(mo + (a * WA + k) * (CO * TP));
            #pragma unroll
            for (int i = 0; i < WM; i++)
                if (AT[i * WA + a] != 0.0f)
                    am[i][k] += AT[i * WA + a] * mv;
        }
    const float bias = has_bias ? b[o] : 0.0f;
    float out[WM][WM][VW];
    #pragma unroll
    for (int i = 0; i < WM; i++)
        #pragma unroll
        for (int j = 0; j < WM; j++) {
            VEC s = (VEC)(bias);
            #pragma unroll
            for (int k = 0; k < WA; k++)
                if (AT[j * WA + k] != 0.0f)
                    s += am[i][k] * AT[j * WA + k];
            STOREV(activatev(s, act, slope), out[i][j]);
        }
    #pragma unroll
    for (int l = 0; l < VW; l++) {
        const int t = t0 + l;
        if (t >= NT) break;
        const int n = t / (TH * TW);
        const int th = (t - n * (TH * TW)) / TW;
        const int tw = t - n * (TH * TW) - th * TW;
        __global float* yp = y + (n * CO + o) * (OH * OW) + th * WM * OW + tw * WM;
        #pragma unroll
        for (int i = 0; i < WM; i++)
            #pragma unroll
            for (int j = 0; j < WM; j++)
                if (th * WM + i < OH && tw * WM + j < OW)
                    yp[i * OW + j] = out[i][j][l];
    }
}
