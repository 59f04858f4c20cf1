/* EMU's stand-in for the part of cuBLAS that kernels/cuda/gemm.cu calls, with cuBLAS's own
 * contract: column-major storage, op(A) / op(B) with leading dimensions lda / ldb / ldc,
 * C = alpha op(A) op(B) + beta C, strided batches; fp32 or bf16 operands, fp32 compute. So
 * gemm.cu makes the same calls (operands swapped for its row-major view) under EMU as on a GPU.
 * The functions are C++ (mangled names), so they never clash with libcublas's C symbols in a
 * binary that holds both backends. */
#ifndef DOPPEL_CUBLAS_EMU_H
#define DOPPEL_CUBLAS_EMU_H

#include <library_types.h> /* cudaDataType_t: CUDA_R_32F, CUDA_R_16BF */

#include <stddef.h>
#include <stdint.h>

typedef struct dp_emu_cublas_context *cublasHandle_t;

/* the values of cublas_api.h */
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_NOT_SUPPORTED = 15
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0 } cublasMath_t;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t *handle);
cublasStatus_t cublasDestroy(cublasHandle_t handle);
cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t bytes);

/* C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C, all column-major: A is stored (m, k)
 * with lda >= m, or (k, m) with lda >= k when transa; likewise B; ldc >= m. Computed in fp32
 * (the products summed by OpenBLAS's column-major sgemm), C rounded once to its type. */
cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
                            cublasOperation_t transb, int m, int n, int k, const void *alpha,
                            const void *A, cudaDataType_t Atype, int lda, const void *B,
                            cudaDataType_t Btype, int ldb, const void *beta, void *C,
                            cudaDataType_t Ctype, int ldc, cublasComputeType_t computeType,
                            cublasGemmAlgo_t algo);
/* batch GEMMs, matrix i at A + i * strideA (elements), likewise B and C */
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa,
                                          cublasOperation_t transb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t Atype,
                                          int lda, long long strideA, const void *B,
                                          cudaDataType_t Btype, int ldb, long long strideB,
                                          const void *beta, void *C, cudaDataType_t Ctype, int ldc,
                                          long long strideC, int batchCount,
                                          cublasComputeType_t computeType, cublasGemmAlgo_t algo);

#endif
