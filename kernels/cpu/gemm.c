/* sgemm split across OpenMP threads, OpenBLAS single-threaded inside each: the training path
 * threads with OpenMP only (a pthreads OpenBLAS spinning beside OpenMP's workers on the same
 * cores costs more than it gains, see infer/forward.c). */
#include "kernels/ops.h"

#include <cblas.h>
#include <omp.h>

/* a piece boundary: t/nt of n, rounded down to a multiple of 16 (whole SIMD panels) */
static int cut(int n, int t, int nt) {
    if (t >= nt) return n;
    int c = (int)((int64_t)n * t / nt);
    return c / 16 * 16;
}

void gemm_omp(bool ta, bool tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    int nt = omp_get_max_threads();
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    /* one call when there is one thread, the work is small, we are already inside a parallel
     * region, or OpenBLAS runs its own threads */
    if (nt < 2 || (double)M * N * K < 262144.0 || omp_in_parallel() ||
        openblas_get_num_threads() > 1 || (M < 32 && N < 32)) {
        cblas_sgemm(CblasRowMajor, TA, TB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* split the longer side of C; the pieces depend only on shapes and thread count, so a
     * fixed thread count gives bit-identical results */
    bool rows = M >= N;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        int a = cut(rows ? M : N, t, nt), b = cut(rows ? M : N, t + 1, nt);
        if (b <= a) continue;
        if (rows)
            cblas_sgemm(CblasRowMajor, TA, TB, b - a, N, K, alpha, ta ? A + a : A + (size_t)a * lda,
                        lda, B, ldb, beta, C + (size_t)a * ldc, ldc);
        else
            cblas_sgemm(CblasRowMajor, TA, TB, M, b - a, K, alpha, A, lda,
                        tb ? B + (size_t)a * ldb : B + a, ldb, beta, C + a, ldc);
    }
}
