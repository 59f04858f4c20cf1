/* The one GEMM entry point of the CUDA backend: cuBLAS GemmEx (bf16 or fp32 inputs, fp32
 * compute) on the GPU; under EMU the same call converts to fp32 and runs OpenBLAS sgemm.
 * Row-major throughout: cuBLAS is column-major, so C^T = op(B)^T op(A)^T is what it computes. */
#include "kernels/cuda/common.cuh"

#include <stdlib.h>

#ifdef DOPPEL_EMU
#include <cblas.h>
struct dp_blas {
    int unused;
};
#else
#include <cublas_v2.h>
struct dp_blas {
    cublasHandle_t handle;
};
#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return dp_fail("%s:%d: cuBLAS error %d (%s)", __FILE__, __LINE__, (int)st_, #call);    \
    } while (0)
#endif

extern "C" int DP_CUDA_FN(blas_create)(dp_blas **h) {
    *h = (dp_blas *)calloc(1, sizeof(dp_blas));
    if (!*h) return dp_fail("out of host memory for the BLAS handle");
#ifndef DOPPEL_EMU
    cublasStatus_t st = cublasCreate(&(*h)->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        free(*h);
        *h = NULL;
        return dp_fail("cublasCreate failed (status %d): is a CUDA device present?", (int)st);
    }
    CUBLAS_CHECK(cublasSetMathMode((*h)->handle, CUBLAS_DEFAULT_MATH));
#endif
    return 0;
}

extern "C" int DP_CUDA_FN(blas_destroy)(dp_blas *h) {
    if (!h) return 0;
#ifndef DOPPEL_EMU
    cublasDestroy(h->handle);
#endif
    free(h);
    return 0;
}

extern "C" int DP_CUDA_FN(blas_set_workspace)(dp_blas *h, void *workspace, size_t bytes) {
#ifdef DOPPEL_EMU
    (void)h, (void)workspace, (void)bytes;
#else
    CUBLAS_CHECK(cublasSetWorkspace(h->handle, workspace, bytes));
#endif
    return 0;
}

static int gemm_check(const char *what, bool transA, bool transB, int M, int N, int K, int lda,
                      int ldb, int ldc, int batch) {
    if (M <= 0 || N <= 0 || K <= 0 || batch <= 0)
        return dp_fail("%s: bad shape M=%d N=%d K=%d batch=%d", what, M, N, K, batch);
    if (lda < (transA ? M : K) || ldb < (transB ? K : N) || ldc < N)
        return dp_fail("%s: leading dimensions lda=%d ldb=%d ldc=%d too small for M=%d N=%d K=%d "
                       "(transA=%d transB=%d)",
                       what, lda, ldb, ldc, M, N, K, (int)transA, (int)transB);
    return 0;
}

#ifdef DOPPEL_EMU
/* rows x cols of a row-major matrix with leading dimension ld, to dense fp32 */
static float *to_f32(const void *p, dp_act_dtype t, int rows, int cols, int ld) {
    float *out = (float *)malloc((size_t)rows * cols * sizeof(float));
    if (!out) return NULL;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) {
            size_t i = (size_t)r * ld + c;
            out[(size_t)r * cols + c] = t == DP_BF16
                                            ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                                            : ((const float *)p)[i];
        }
    return out;
}

static int emu_gemm(bool transA, bool transB, int M, int N, int K, float alpha, const void *A,
                    int lda, const void *B, int ldb, float beta, void *C, int ldc, dp_act_dtype ab,
                    dp_act_dtype c) {
    int ra = transA ? K : M, ca = transA ? M : K, rb = transB ? N : K, cb = transB ? K : N;
    float *a = to_f32(A, ab, ra, ca, lda), *b = to_f32(B, ab, rb, cb, ldb);
    float *c32 = c == DP_BF16 ? to_f32(C, DP_BF16, M, N, ldc) : (float *)C;
    int rc = 0;
    if (!a || !b || !c32) {
        rc = dp_fail("EMU gemm: out of host memory for M=%d N=%d K=%d", M, N, K);
    } else {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans, M, N, K, alpha, a, ca, b, cb, beta, c32,
                    c == DP_BF16 ? N : ldc);
        if (c == DP_BF16)
            for (int r = 0; r < M; r++)
                for (int j = 0; j < N; j++)
                    ((__nv_bfloat16 *)C)[(size_t)r * ldc + j] =
                        __float2bfloat16(c32[(size_t)r * N + j]);
    }
    free(a);
    free(b);
    if (c == DP_BF16) free(c32);
    return rc;
}
#else
static cudaDataType_t cuda_type(dp_act_dtype t) {
    return t == DP_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}
#endif

extern "C" int DP_CUDA_FN(gemm)(dp_blas *h, bool transA, bool transB, int M, int N, int K,
                                float alpha, const void *A, int lda, const void *B, int ldb,
                                float beta, void *C, int ldc, dp_act_dtype ab, dp_act_dtype c) {
    if (gemm_check("gemm", transA, transB, M, N, K, lda, ldb, ldc, 1)) return -1;
#ifdef DOPPEL_EMU
    (void)h;
    return emu_gemm(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, ab, c);
#else
    CUBLAS_CHECK(cublasGemmEx(h->handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                              transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, cuda_type(ab),
                              ldb, A, cuda_type(ab), lda, &beta, C, cuda_type(c), ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
#endif
}

extern "C" int DP_CUDA_FN(gemm_batched)(dp_blas *h, bool transA, bool transB, int M, int N, int K,
                                        float alpha, const void *A, int lda, int64_t strideA,
                                        const void *B, int ldb, int64_t strideB, float beta,
                                        void *C, int ldc, int64_t strideC, int batch,
                                        dp_act_dtype ab, dp_act_dtype c) {
    if (gemm_check("gemm_batched", transA, transB, M, N, K, lda, ldb, ldc, batch)) return -1;
#ifdef DOPPEL_EMU
    (void)h;
    size_t ea = ab == DP_BF16 ? 2 : 4, ec = c == DP_BF16 ? 2 : 4;
    for (int i = 0; i < batch; i++)
        if (emu_gemm(transA, transB, M, N, K, alpha, (const char *)A + i * strideA * ea, lda,
                     (const char *)B + i * strideB * ea, ldb, beta, (char *)C + i * strideC * ec,
                     ldc, ab, c))
            return -1;
    return 0;
#else
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h->handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
        &alpha, B, cuda_type(ab), ldb, strideB, A, cuda_type(ab), lda, strideA, &beta, C,
        cuda_type(c), ldc, strideC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
#endif
}
