/* data.cl: training batches built on the device from a dataset uploaded once.
 *
 * Layout: images (M, C, H, W) float32 NCHW, image m's pixel (c, y, x) at ((m * C + c) * H + y) * W + x;
 * labels int32 (M,); order int32: the epoch's shuffled image indices; shifts int32 (len(order), 2),
 * (dy, dx) per position of `order` (random-shift augmentation drawn on the host, so a run stays
 * reproducible and resumable from its seed). Sizes are runtime arguments: one build serves
 * every dataset.
 *
 * batch_gather: out[i] = images[order[start + i]] moved down by dy and right by dx,
 *   out[i, c, y, x] = image[c, y - dy, x - dx], pixels from outside the image = fill
 *   (clcnn.datasets.batches.shift_images); out_labels[i] = labels[order[start + i]].
 * One work item per output row (i, c, y), 1-D global size count * C * H, any local size.
 */
__kernel void batch_gather(__global const float* restrict images, __global const int* restrict labels,
                           __global const int* restrict order, __global const int* restrict shifts,
                           __global float* restrict out, __global int* restrict out_labels,
                           const int start, const int count, const int C, const int H, const int W,
                           const int use_shifts, const float fill)
{
    const int r = get_global_id(0);
    if (r >= count * C * H) return;
    const int y = r % H, c = (r / H) % C, i = r / (C * H);
    const int m = order[start + i];
    const int dy = use_shifts ? shifts[2 * (start + i)] : 0;
    const int dx = use_shifts ? shifts[2 * (start + i) + 1] : 0;
    __global float* o = out + (size_t)r * W;
    const int sy = y - dy;
    if (sy < 0 || sy >= H) {
        for (int x = 0; x < W; ++x) o[x] = fill;
    } else {
        __global const float* src = images + (((size_t)m * C + c) * H + sy) * W;
        for (int x = 0; x < W; ++x) {
            const int sx = x - dx;
            o[x] = (sx >= 0 && sx < W) ? src[sx] : fill;
        }
    }
    if (c == 0 && y == 0) out_labels[i] = labels[m];
}
