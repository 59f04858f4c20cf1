/* The one GEMM entry point of the CUDA backend: cuBLAS GemmEx (bf16 or fp32 inputs, fp32
 * compute). Row-major throughout: cuBLAS is column-major, so C^T = op(B)^T op(A)^T is what it
 * computes. Under EMU the very same calls go to kernels/emu/cublas_emu.h, which keeps cuBLAS's
 * column-major contract, so the operand order below is what the EMU tests check. */
#include "kernels/cuda/common.cuh"

#include <stdlib.h>

#ifdef DOPPEL_EMU
#include "kernels/emu/cublas_emu.h"
#else
#include <cublas_v2.h>
#endif
struct dp_blas {
    cublasHandle_t handle;
};
#define CUBLAS_CHECK(call)                                                                         \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return dp_fail("%s:%d: cuBLAS error %d (%s)", __FILE__, __LINE__, (int)st_, #call);    \
    } while (0)

extern "C" int DP_CUDA_FN(blas_create)(dp_blas **h) {
    *h = (dp_blas *)calloc(1, sizeof(dp_blas));
    if (!*h) return dp_fail("out of host memory for the BLAS handle");
    cublasStatus_t st = cublasCreate(&(*h)->handle);
    if (st != CUBLAS_STATUS_SUCCESS) {
        free(*h);
        *h = NULL;
        return dp_fail("cublasCreate failed (status %d): is a CUDA device present?", (int)st);
    }
    CUBLAS_CHECK(cublasSetMathMode((*h)->handle, CUBLAS_DEFAULT_MATH));
    return 0;
}

extern "C" int DP_CUDA_FN(blas_destroy)(dp_blas *h) {
    if (!h) return 0;
    cublasDestroy(h->handle);
    free(h);
    return 0;
}

extern "C" int DP_CUDA_FN(blas_set_workspace)(dp_blas *h, void *workspace, size_t bytes) {
    CUBLAS_CHECK(cublasSetWorkspace(h->handle, workspace, bytes));
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

static cudaDataType_t cuda_type(dp_act_dtype t) {
    return t == DP_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

extern "C" int DP_CUDA_FN(gemm)(dp_blas *h, bool transA, bool transB, int M, int N, int K,
                                float alpha, const void *A, int lda, const void *B, int ldb,
                                float beta, void *C, int ldc, dp_act_dtype ab, dp_act_dtype c) {
    if (gemm_check("gemm", transA, transB, M, N, K, lda, ldb, ldc, 1)) return -1;
    CUBLAS_CHECK(cublasGemmEx(h->handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N,
                              transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, cuda_type(ab),
                              ldb, A, cuda_type(ab), lda, &beta, C, cuda_type(c), ldc,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}

extern "C" int DP_CUDA_FN(gemm_batched)(dp_blas *h, bool transA, bool transB, int M, int N, int K,
                                        float alpha, const void *A, int lda, int64_t strideA,
                                        const void *B, int ldb, int64_t strideB, float beta,
                                        void *C, int ldc, int64_t strideC, int batch,
                                        dp_act_dtype ab, dp_act_dtype c) {
    if (gemm_check("gemm_batched", transA, transB, M, N, K, lda, ldb, ldc, batch)) return -1;
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        h->handle, transB ? CUBLAS_OP_T : CUBLAS_OP_N, transA ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
        &alpha, B, cuda_type(ab), ldb, strideB, A, cuda_type(ab), lda, strideA, &beta, C,
        cuda_type(c), ldc, strideC, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
}
