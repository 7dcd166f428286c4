/* data.cl: training batches built on the device from a dataset uploaded once.
 *
 * Layout: images (M, C, H, W) float32 NCHW, image m's pixel (c, y, x) at ((m * C + c) * H + y) * W + x;
 * labels int32 (M,); order int32: the epoch's shuffled image indices. Augmentation is drawn on the
 * host from (seed, epoch, batch), so a run stays reproducible and resumable from its seed:
 * shifts int32 (len(order), 2), (dy, dx) per position of `order`; flips int32 (len(order),), 1 to
 * mirror that image left-right. Sizes are runtime arguments: one build serves every dataset.
 *
 * batch_gather: out[i] = images[order[start + i]] moved down by dy and right by dx, then mirrored
 *   when flipped (a random crop of the image padded by max|shift|, as torchvision's RandomCrop
 *   with padding followed by RandomHorizontalFlip):
 *     out[i, c, y, x] = image[c, y - dy, x' - dx],  x' = flip ? W - 1 - x : x,
 *   pixels from outside the image = fill of channel c (fills[c] when fill_per_channel, else fill);
 *   out_labels[i] = labels[order[start + i]]. Unused shifts/flips/fills pointers may alias any
 *   buffer: they are never read.
 * One work item per output row (i, c, y), 1-D global size count * C * H, any local size.
 *
 * batch_gather_u8: the same from uint8 images (M, C, H, W), normalised and padded on the way, so
 *   the host never holds a float32 copy of the training set. The padded image (C, PH, PW),
 *   PH = H + 2 pad, PW = W + 2 pad, has pixel (c, py, px) = u * scale[c] - shift[c] with
 *   u = images[m, c, py - pad, px - pad] inside and background[c] in the padding; it is then
 *   shifted and flipped as in batch_gather: out (count, C, PH, PW). norm is float32 (3, C): the
 *   rows scale, shift, background of clcnn.datasets.batches.normalization. FP_CONTRACT is off
 *   so the product and the difference round separately, as NumPy's prepare_images does: the
 *   batches are bit-identical to it. Global size count * C * PH, any local size.
 */
#pragma OPENCL FP_CONTRACT OFF

__kernel void batch_gather(__global const float* restrict images, __global const int* restrict labels,
                           __global const int* restrict order, __global const int* restrict shifts,
                           __global float* restrict out, __global int* restrict out_labels,
                           const int start, const int count, const int C, const int H, const int W,
                           const int use_shifts, const float fill,
                           __global const int* restrict flips, const int use_flips,
                           __global const float* restrict fills, const int fill_per_channel)
{
    const int r = get_global_id(0);
    if (r >= count * C * H) return;
    const int y = r % H, c = (r / H) % C, i = r / (C * H);
    const int m = order[start + i];
    const int dy = use_shifts ? shifts[2 * (start + i)] : 0;
    const int dx = use_shifts ? shifts[2 * (start + i) + 1] : 0;
    const int flip = use_flips && flips[start + i];
    const float f = fill_per_channel ? fills[c] : fill;
    __global float* o = out + (size_t)r * W;
    const int sy = y - dy;
    if (sy < 0 || sy >= H) {
        for (int x = 0; x < W; ++x) o[x] = f;
    } else {
        __global const float* src = images + (((size_t)m * C + c) * H + sy) * W;
        /* Source column of output x: x - dx, or (W - 1 - x) - dx when flipped: sx = base + step * x. */
        const int base = flip ? W - 1 - dx : -dx, step = flip ? -1 : 1;
        for (int x = 0; x < W; ++x) {
            const int sx = base + step * x;
            o[x] = (sx >= 0 && sx < W) ? src[sx] : f;
        }
    }
    if (c == 0 && y == 0) out_labels[i] = labels[m];
}

__kernel void batch_gather_u8(__global const uchar* restrict images, __global const int* restrict labels,
                              __global const int* restrict order, __global const int* restrict shifts,
                              __global float* restrict out, __global int* restrict out_labels,
                              const int start, const int count, const int C, const int H, const int W,
                              const int pad, __global const float* restrict norm,
                              const int use_shifts, const float fill,
                              __global const int* restrict flips, const int use_flips,
                              __global const float* restrict fills, const int fill_per_channel)
{
    const int PH = H + 2 * pad, PW = W + 2 * pad;
    const int r = get_global_id(0);
    if (r >= count * C * PH) return;
    const int y = r % PH, c = (r / PH) % C, i = r / (C * PH);
    const int m = order[start + i];
    const int dy = use_shifts ? shifts[2 * (start + i)] : 0;
    const int dx = use_shifts ? shifts[2 * (start + i) + 1] : 0;
    const int flip = use_flips && flips[start + i];
    const float f = fill_per_channel ? fills[c] : fill;
    const float scale = norm[c], shift = norm[C + c], background = norm[2 * C + c];
    __global float* o = out + (size_t)r * PW;
    const int py = y - dy;   /* row of the padded image */
    if (py < 0 || py >= PH) {
        for (int x = 0; x < PW; ++x) o[x] = f;
    } else if (py < pad || py >= pad + H) {
        /* A padding row: background where the shifted image covers it, fill elsewhere. */
        const int base = flip ? PW - 1 - dx : -dx, step = flip ? -1 : 1;
        for (int x = 0; x < PW; ++x) {
            const int px = base + step * x;
            o[x] = (px >= 0 && px < PW) ? background : f;
        }
    } else {
        __global const uchar* src = images + (((size_t)m * C + c) * H + (py - pad)) * W;
        const int base = flip ? PW - 1 - dx : -dx, step = flip ? -1 : 1;
        for (int x = 0; x < PW; ++x) {
            const int px = base + step * x, sx = px - pad;
            float v = f;
            if (sx >= 0 && sx < W) {
                const float prod = (float)src[sx] * scale;
                v = prod - shift;
            } else if (px >= 0 && px < PW) {
                v = background;
            }
            o[x] = v;
        }
    }
    if (c == 0 && y == 0) out_labels[i] = labels[m];
}
