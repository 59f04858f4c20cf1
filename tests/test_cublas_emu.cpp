/* EMU's cuBLAS stand-in (kernels/emu/cublas_emu.h) against a naive column-major GEMM in double:
 * every op(A)/op(B) pair, leading dimensions wider than the matrices, fp32 and bf16 operands
 * and results, strided batches, the padding between columns left alone, beta = 0 never reading
 * C, and cuBLAS's refusals of too-small leading dimensions. */
#include "check.h"
#include "kernels/emu/cublas_emu.h"

#include <cuda_bf16.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

static uint64_t rng_state = 88172645463325252ULL;
static float uniform_pm1(void) { /* xorshift64, in [-1, 1) */
    rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0);
}

/* values representable in both dtypes, so the reference sees exactly what the shim reads */
static std::vector<float> random_bf16_exact(size_t n) {
    std::vector<float> v(n);
    for (auto &x : v) x = __bfloat162float(__float2bfloat16(uniform_pm1()));
    return v;
}

/* fp32 values stored in dtype t: a byte buffer */
static std::vector<unsigned char> store(const std::vector<float> &v, cudaDataType_t t) {
    std::vector<unsigned char> out(v.size() * (t == CUDA_R_16BF ? 2 : 4));
    for (size_t i = 0; i < v.size(); i++)
        if (t == CUDA_R_16BF)
            ((__nv_bfloat16 *)out.data())[i] = __float2bfloat16(v[i]);
        else
            ((float *)out.data())[i] = v[i];
    return out;
}
static float load(const std::vector<unsigned char> &b, cudaDataType_t t, size_t i) {
    return t == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)b.data())[i])
                            : ((const float *)b.data())[i];
}

static void test_case(bool ta, bool tb, int m, int n, int k, int batch, cudaDataType_t ab,
                      cudaDataType_t ct, float beta) {
    /* column-major storage: A is (m, k), or (k, m) when ta; ld = stored rows + a gap */
    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    int lda = ar + 3, ldb = br + 2, ldc = m + 5;
    long long sa = (long long)lda * ac + 7, sb = (long long)ldb * bc + 1,
              sc = (long long)ldc * n + 4;
    std::vector<float> A = random_bf16_exact(sa * batch), B = random_bf16_exact(sb * batch);
    std::vector<float> C0 = random_bf16_exact(sc * batch);
    if (beta == 0.0f) /* cuBLAS does not read C when beta is 0: NaN there must not leak out */
        for (auto &x : C0) x = NAN;
    const float alpha = 0.75f;
    std::vector<float> ref(C0);
    for (int bi = 0; bi < batch; bi++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double a =
                        ta ? A[bi * sa + (size_t)i * lda + p] : A[bi * sa + (size_t)p * lda + i];
                    double b =
                        tb ? B[bi * sb + (size_t)p * ldb + j] : B[bi * sb + (size_t)j * ldb + p];
                    s += a * b;
                }
                size_t e = bi * sc + (size_t)j * ldc + i;
                double r = alpha * s + (beta != 0.0f ? beta * (double)C0[e] : 0.0);
                ref[e] =
                    ct == CUDA_R_16BF ? __bfloat162float(__float2bfloat16((float)r)) : (float)r;
            }
    std::vector<unsigned char> dA = store(A, ab), dB = store(B, ab), dC = store(C0, ct);
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    cublasStatus_t st =
        batch == 1
            ? cublasGemmEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n,
                           k, &alpha, dA.data(), ab, lda, dB.data(), ab, ldb, &beta, dC.data(), ct,
                           ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
            : cublasGemmStridedBatchedEx(h, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                         tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA.data(),
                                         ab, lda, sa, dB.data(), ab, ldb, sb, &beta, dC.data(), ct,
                                         ldc, sc, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    CHECK_EQ_INT(CUBLAS_STATUS_SUCCESS, st);
    CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
    /* inside (m, n): the reference; the gaps: untouched (NaN compares by bits) */
    std::vector<float> got(ref.size());
    size_t gap_changed = 0;
    for (size_t e = 0; e < ref.size(); e++) {
        got[e] = load(dC, ct, e);
        size_t in = e % sc;
        bool inside = in < (size_t)ldc * n && (int)(in % ldc) < m;
        if (!inside) {
            gap_changed += !(isnan(ref[e]) ? isnan(got[e]) : got[e] == ref[e]);
            got[e] = ref[e] = 0; /* leave them out of the numeric comparison */
        }
    }
    char what[128];
    snprintf(what, sizeof what, "opA=%c opB=%c m=%d n=%d k=%d batch=%d %s->%s beta=%g",
             ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, batch, ab == CUDA_R_16BF ? "bf16" : "f32",
             ct == CUDA_R_16BF ? "bf16" : "f32", beta);
    /* fp32 sums in another order; a bf16 result may round the other way: one bf16 ulp */
    double rel = ct == CUDA_R_16BF ? 1.0 / 128 : 1e-5;
    check_arrays_near(what, ref.data(), got.data(), ref.size(), 1e-5, rel);
    CHECK_EQ_INT(0, (int)gap_changed);
}

/* cuBLAS's argument checks, column-major: lda >= rows of the stored A, and so on */
static void test_refusals(void) {
    cublasHandle_t h;
    CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
    float a[64] = {0}, b[64] = {0}, c[64] = {0}, one = 1.0f, zero = 0.0f;
    /* m=4, k=3: A stored (4, 3) needs lda >= 4; transposed, (3, 4) needs lda >= 3 */
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, a, CUDA_R_32F, 3, b, CUDA_R_32F,
                       3, &zero, c, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, 4, 2, 3, &one, a, CUDA_R_32F, 3, b, CUDA_R_32F,
                       3, &zero, c, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    /* B (k=3, n=2) needs ldb >= 3; op(B) = B^T stored (2, 3) needs ldb >= 2; C needs ldc >= m */
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, a, CUDA_R_32F, 4, b, CUDA_R_32F,
                       2, &zero, c, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_T, 4, 2, 3, &one, a, CUDA_R_32F, 4, b, CUDA_R_32F,
                       2, &zero, c, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, a, CUDA_R_32F, 4, b, CUDA_R_32F,
                       3, &zero, c, CUDA_R_32F, 3, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
    /* mixed operand types are not a GemmEx combination this backend uses */
    CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, a, CUDA_R_16BF, 4, b, CUDA_R_32F,
                       3, &zero, c, CUDA_R_32F, 4, CUBLAS_COMPUTE_32F,
                       CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
    CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
}

int main(void) {
    const cudaDataType_t types[2] = {CUDA_R_32F, CUDA_R_16BF};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (cudaDataType_t ab : types)
                for (cudaDataType_t ct : types) {
                    test_case(ta, tb, 7, 5, 9, 1, ab, ct, 0.5f);
                    test_case(ta, tb, 4, 6, 3, 3, ab, ct, -1.25f);
                }
    test_case(false, true, 33, 17, 65, 2, CUDA_R_16BF, CUDA_R_32F, 0.0f); /* C not read */
    test_case(true, false, 1, 1, 1, 1, CUDA_R_32F, CUDA_R_32F, 0.0f);
    test_refusals();
    return check_done();
}
