/* The launcher table: dp_cuda_ops (nvcc build) or dp_emu_ops (EMU build), so code above the
 * kernels picks a backend at run time through one pointer. */
#include "kernels/cuda/common.cuh"

#ifdef DOPPEL_EMU
#define DP_BACKEND_NAME "emu"
#else
#define DP_BACKEND_NAME "cuda"
#endif

#define DP_GPU_ENTRY(name, args) DP_CUDA_FN(name),
extern "C" const dp_gpu_ops DP_CUDA_FN(ops) = {DP_BACKEND_NAME, DP_GPU_OP_LIST(DP_GPU_ENTRY)};
