/* fp16 / bf16 <-> fp32: every fp16 bit pattern decodes to the value the IEEE formula gives and
 * encodes back to itself; rounding to nearest-even at the halfway points, overflow to inf,
 * subnormals (values worked out by hand from the formats' definitions). */
#include "check.h"
#include "infer/dtype.h"

#include <stdint.h>

int main(void) {
    int bad_dec = 0, bad_rt = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        int e = (h >> 10) & 31, m = h & 1023;
        double sign = (h & 0x8000) ? -1 : 1, v;
        if (e == 31) continue; /* inf / nan checked below */
        v = e == 0 ? sign * ldexp(m, -24) : sign * ldexp(1024 + m, e - 25);
        float f = dp_f16_to_f32((uint16_t)h);
        bad_dec += (double)f != v;
        bad_rt += dp_f32_to_f16(f) != h;
    }
    CHECK_EQ_INT(0, bad_dec);
    CHECK_EQ_INT(0, bad_rt);
    CHECK(isinf(dp_f16_to_f32(0x7c00)) && isnan(dp_f16_to_f32(0x7e00)));
    /* f16 rounding: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> even (1.0) */
    CHECK_EQ_INT(0x3c00, dp_f32_to_f16(1.0f + 0x1p-11f));
    CHECK_EQ_INT(0x3c02, dp_f32_to_f16(1.0f + 3 * 0x1p-11f)); /* halfway -> even (up) */
    CHECK_EQ_INT(0x3c01, dp_f32_to_f16(1.0f + 0x1p-11f + 0x1p-20f));
    CHECK_EQ_INT(0x7bff, dp_f32_to_f16(65504.0f));
    CHECK_EQ_INT(0x7bff, dp_f32_to_f16(65519.0f));
    CHECK_EQ_INT(0x7c00, dp_f32_to_f16(65520.0f));
    CHECK_EQ_INT(0xfc00, dp_f32_to_f16(-1e10f));
    CHECK_EQ_INT(0x0001, dp_f32_to_f16(0x1p-24f));
    CHECK_EQ_INT(0x0000, dp_f32_to_f16(0x1p-25f));            /* halfway to 0 -> even (0) */
    CHECK_EQ_INT(0x0002, dp_f32_to_f16(3 * 0x1p-25f));        /* halfway -> even (2) */
    CHECK_EQ_INT(0x0400, dp_f32_to_f16(0x1p-14f - 0x1p-26f)); /* rounds up to the smallest normal */
    CHECK(dp_f32_to_f16(NAN) == 0x7e00 || (dp_f32_to_f16(NAN) & 0x7c00) == 0x7c00);
    /* bf16 */
    CHECK_EQ_INT(0x3f80, dp_f32_to_bf16(1.0f));
    CHECK_EQ_INT(0x3f80, dp_f32_to_bf16(1.0f + 0x1p-8f)); /* halfway -> even */
    CHECK_EQ_INT(0x3f82, dp_f32_to_bf16(1.0f + 3 * 0x1p-8f));
    CHECK_EQ_INT(0x3f81, dp_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f));
    CHECK_EQ_INT(0xc049, dp_f32_to_bf16(-3.140625f));
    CHECK(dp_bf16_to_f32(0xc049) == -3.140625f);
    CHECK(isnan(dp_bf16_to_f32(dp_f32_to_bf16(NAN))));
    CHECK_EQ_INT(0x7f80, dp_f32_to_bf16(INFINITY));
    return check_done();
}
