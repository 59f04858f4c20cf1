/* Reading the committed reference tensors (safetensors fixtures) in tests: I32 tensors come back
 * as int32, everything else converted to fp32; a missing tensor is a failed check. */
#ifndef DOPPEL_FIXTURE_ST_H
#define DOPPEL_FIXTURE_ST_H

#include "check.h"
#include "infer/dtype.h"
#include "infer/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline void *fx_st_tensor(const dp_safetensors *ref, const char *name, int64_t *numel) {
    const dp_st_tensor *t = dp_safetensors_find(ref, name);
    *numel = 0;
    if (!t) {
        CHECK_REPORT(0, "reference tensor %s missing", name);
        return NULL;
    }
    float *out = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    if (t->dtype == DP_DT_I32)
        memcpy(out, t->data, (size_t)t->numel * 4);
    else
        CHECK(dp_st_tensor_f32(t, out, t->shape[0], t->ndim == 2 ? t->shape[1] : 0) == 0);
    *numel = t->numel;
    return out;
}

static inline double fx_max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

#endif
