/* dropout.cl: inverted dropout, forward (mask and y = x * mask) and backward (gx = gy * mask).
 *
 * Elementwise on the flat tensor: element i of any NCHW array is x[i]. The mask is a pure
 * function of (seed, step, i) -- a counter-based generator, no state -- so it is reproducible,
 * independent per element, and the same for any launch geometry. clcnn/oracle/dropout.py holds
 * the same generator in NumPy uint32 arithmetic and must stay bit-identical with it:
 *
 *   mix(v)  = lowbias32 (xorshift-multiply; Chris Wellons' constants), a bijection on uint
 *   key     = mix(seed ^ mix(step + 0x9E3779B9))
 *   bits[i] = mix(mix(i ^ key) + key)
 *   keep i  <=>  bits[i] >= threshold   (threshold = floor(p * 2^32), from the host)
 *
 * Kept elements are scaled by `scale` = 1 / (1 - p) (float32, from the host), dropped ones are 0.
 * Work items: 8 consecutive elements each (float8), 1-D global size ceil(n / 8), any local size
 * (the host passes None), no barriers.
 */

/* Written with a generic vector type so that the same code serves one element (uint) and a
 * float8 chunk (uint8): PoCL runs the uint8 multiplies as AVX2 vector instructions. */
#define MIX32(T)                                                                     \
    inline T mix32_##T(T v)                                                          \
    {                                                                                \
        v ^= v >> 16;                                                                \
        v *= 0x7feb352dU;                                                            \
        v ^= v >> 15;                                                                \
        v *= 0x846ca68bU;                                                            \
        v ^= v >> 16;                                                                \
        return v;                                                                    \
    }
MIX32(uint)
MIX32(uint8)

/* Work item q owns elements [8q, 8q + 8): one uint8/float8 chunk when whole, scalars for the
 * ragged end. Global size ceil(n / 8). */
__kernel void dropout_forward(__global const float* restrict x, __global float* restrict y,
                              __global float* restrict mask, const int n, const uint seed,
                              const uint step, const uint threshold, const float scale)
{
    const int q = get_global_id(0);
    const uint key = mix32_uint(seed ^ mix32_uint(step + 0x9E3779B9U));
    if (8 * q + 8 <= n) {
        const uint8 index = (uint8)(8 * q) + (uint8)(0, 1, 2, 3, 4, 5, 6, 7);
        const uint8 bits = mix32_uint8(mix32_uint8(index ^ key) + key);
        /* bits >= threshold as an unsigned compare, -1 (all bits set) where kept */
        const float8 m = select((float8)(0.0f), (float8)(scale), bits >= threshold);
        USTORE8(m, mask + 8 * q);
        USTORE8(ULOAD8(x + 8 * q) * m, y + 8 * q);
    } else {
        for (int i = 8 * q; i < n; ++i) {
            const uint bits = mix32_uint(mix32_uint((uint)i ^ key) + key);
            const float m = bits >= threshold ? scale : 0.0f;
            mask[i] = m;
            y[i] = x[i] * m;
        }
    }
}

__kernel void dropout_backward(__global const float* restrict gy, __global const float* restrict mask,
                               __global float* restrict gx, const int n)
{
    const int q = get_global_id(0);
    if (8 * q + 8 <= n) {
        USTORE8(ULOAD8(gy + 8 * q) * ULOAD8(mask + 8 * q), gx + 8 * q);
    } else {
        for (int i = 8 * q; i < n; ++i) gx[i] = gy[i] * mask[i];
    }
}
