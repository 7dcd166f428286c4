/* layout.cl: data movement with no arithmetic: Transpose (any permutation of up to 6 axes,
 * batch included) and constant Pad of the last two axes (H and W of NCHW), with its backward.
 *
 * transpose: the host merges output axes that stay neighbours in the input and pads to exactly
 * 6 axes S0..S5; output element (c0, ..., c5), flat ((c0*S1 + c1)*S2 + ...)*S5 + c5, reads
 * x[sum ci*Pi], Pi the input stride of output axis i. geo holds S0..S5 then P0..P5.
 * Work items: a 2-D range (ceil(S5 / 8), S0*S1*S2*S3*S4); item (q, o) decomposes o once and
 * writes output elements [8q, 8q + 8) of the innermost run (contiguous writes, gathered reads).
 *
 * pad: x is (R, H, W) (R = N*C for NCHW), y is (R, OH, OW) with OH = H + top + bottom and
 * OW = W + left + right; y[r, i, j] = x[r, i - top, j - left] inside x, else value. Negative
 * pads crop. The backward is the same map read the other way: gx[r, i, j] = gy[r, i + top,
 * j + left] inside gy, else 0. Work items: a 2-D range (OW, R*OH) for the forward, (W, R*H)
 * for the backward, one element per item; dimension 0 runs along a row so PoCL streams it.
 */

__kernel void transpose(__global const float* restrict x, __global float* restrict y,
                        __global const int* geo)
{
    const int q = get_global_id(0);
    int o = get_global_id(1);
    const int s5 = geo[5];
    int off = 0;
    for (int ax = 4; ax >= 0; --ax) {
        off += (o % geo[ax]) * geo[6 + ax];
        o /= geo[ax];
    }
    const int p5 = geo[11];
    __global float* out = y + (size_t)get_global_id(1) * s5;
    if (p5 == 1 && 8 * q + 8 <= s5) {
        vstore8(vload8(0, x + off + 8 * q), q, out);    /* a run that stays contiguous */
    } else {
        const int end = min(8 * q + 8, s5);
        for (int j = 8 * q; j < end; ++j)
            out[j] = x[off + j * p5];
    }
}

__kernel void pad_forward(__global const float* restrict x, __global float* restrict y,
                          const int h, const int w, const int oh, const int ow,
                          const int top, const int left, const float value)
{
    const int j = get_global_id(0);
    const int ri = get_global_id(1);
    const int r = ri / oh, i = ri % oh;
    const int si = i - top, sj = j - left;
    y[(size_t)ri * ow + j] = (si >= 0 && si < h && sj >= 0 && sj < w)
        ? x[((size_t)r * h + si) * w + sj] : value;
}

__kernel void pad_backward(__global const float* restrict gy, __global float* restrict gx,
                           const int h, const int w, const int oh, const int ow,
                           const int top, const int left)
{
    const int j = get_global_id(0);
    const int ri = get_global_id(1);
    const int r = ri / h, i = ri % h;
    const int si = i + top, sj = j + left;
    gx[(size_t)ri * w + j] = (si >= 0 && si < oh && sj >= 0 && sj < ow)
        ? gy[((size_t)r * oh + si) * ow + sj] : 0.0f;
}
