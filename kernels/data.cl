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
 */
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
