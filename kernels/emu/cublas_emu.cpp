/* The EMU cuBLAS stand-in (see cublas_emu.h): the column-major GEMM contract checked as cuBLAS
 * checks it, bf16 operands widened to fp32 in place of their storage (same leading dimensions),
 * then OpenBLAS's column-major sgemm with the caller's op(A), op(B), lda, ldb, ldc. */
#include "kernels/emu/cublas_emu.h"

#include <cuda_bf16.h>

#include <cblas.h>
#include <stdlib.h>

struct dp_emu_cublas_context {
    int unused;
};

cublasStatus_t cublasCreate(cublasHandle_t *handle) {
    *handle = (cublasHandle_t)calloc(1, sizeof(struct dp_emu_cublas_context));
    return *handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    free(handle);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    (void)mode;
    return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes) {
    (void)workspace, (void)bytes;
    return handle ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}

/* Elements a column-major (rows, cols) matrix with leading dimension ld spans. */
static size_t span(int rows, int cols, int ld) {
    return cols ? (size_t)ld * (cols - 1) + rows : 0;
}

/* A stored (rows, cols) matrix as fp32 at the same positions (the gaps between columns zero);
 * fp32 storage is used as it is. *owned gets what to free. */
static float *as_f32(const void *p, cudaDataType_t t, int rows, int cols, int ld, float **owned) {
    *owned = NULL;
    if (t == CUDA_R_32F) return (float *)p;
    float *out = (float *)calloc(span(rows, cols, ld) + 1, sizeof(float));
    if (!out) return NULL;
    for (int j = 0; j < cols; j++)
        for (int i = 0; i < rows; i++) {
            size_t e = (size_t)j * ld + i;
            out[e] = __bfloat162float(((const __nv_bfloat16 *)p)[e]);
        }
    return *owned = out;
}

static bool supported(cudaDataType_t t) {
    return t == CUDA_R_32F || t == CUDA_R_16BF;
}

static cublasStatus_t gemm_one(cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                               int k, float alpha, const void *A, cudaDataType_t Atype, int lda,
                               const void *B, int ldb, float beta, void *C, cudaDataType_t Ctype,
                               int ldc) {
    int ar = transa == CUBLAS_OP_T ? k : m, ac = transa == CUBLAS_OP_T ? m : k;
    int br = transb == CUBLAS_OP_T ? n : k, bc = transb == CUBLAS_OP_T ? k : n;
    float *fa, *fb, *fc;
    const float *a = as_f32(A, Atype, ar, ac, lda, &fa), *b = as_f32(B, Atype, br, bc, ldb, &fb);
    float *c = as_f32(C, Ctype, m, n, ldc, &fc);
    cublasStatus_t st = CUBLAS_STATUS_ALLOC_FAILED;
    if (a && b && c) {
        cblas_sgemm(CblasColMajor, transa == CUBLAS_OP_T ? CblasTrans : CblasNoTrans,
                    transb == CUBLAS_OP_T ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
                    ldb, beta, c, ldc);
        if (Ctype == CUDA_R_16BF) /* rounded once, only the (m, n) elements written */
            for (int j = 0; j < n; j++)
                for (int i = 0; i < m; i++) {
                    size_t e = (size_t)j * ldc + i;
                    ((__nv_bfloat16 *)C)[e] = __float2bfloat16(c[e]);
                }
        st = CUBLAS_STATUS_SUCCESS;
    }
    free(fa), free(fb), free(fc);
    return st;
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t Atype,
                                          int lda, long long strideA, const void *B,
                                          cudaDataType_t Btype, int ldb, long long strideB,
                                          const void *beta, void *C, cudaDataType_t Ctype, int ldc,
                                          long long strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t algo) {
    (void)algo;
    if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
    /* cuBLAS's argument checks: sizes >= 0, lda/ldb/ldc at least the stored rows (and >= 1) */
    int ar = transa == CUBLAS_OP_T ? k : m, br = transb == CUBLAS_OP_T ? n : k;
    if (m < 0 || n < 0 || k < 0 || batchCount < 0 || lda < (ar > 1 ? ar : 1) ||
        ldb < (br > 1 ? br : 1) || ldc < (m > 1 ? m : 1) ||
        (transa != CUBLAS_OP_N && transa != CUBLAS_OP_T) ||
        (transb != CUBLAS_OP_N && transb != CUBLAS_OP_T))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (computeType != CUBLAS_COMPUTE_32F || Atype != Btype || !supported(Atype) ||
        !supported(Ctype))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m == 0 || n == 0 || batchCount == 0) return CUBLAS_STATUS_SUCCESS;
    float al = *(const float *)alpha, be = *(const float *)beta; /* fp32 compute: fp32 scalars */
    size_t ea = Atype == CUDA_R_16BF ? 2 : 4, ec = Ctype == CUDA_R_16BF ? 2 : 4;
    for (int i = 0; i < batchCount; i++) {
        cublasStatus_t st = gemm_one(
            transa, transb, m, n, k, al, (const char *)A + i * strideA * ea, Atype, lda,
            (const char *)B + i * strideB * ea, ldb, be, (char *)C + i * strideC * ec, Ctype, ldc);
        if (st != CUBLAS_STATUS_SUCCESS) return st;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType_t Atype, int lda, const void *B,
                            cudaDataType_t Btype, int ldb, const void *beta, void *C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo) {
    return cublasGemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, 0, B,
                                      Btype, ldb, 0, beta, C, Ctype, ldc, 0, 1, computeType, algo);
}
