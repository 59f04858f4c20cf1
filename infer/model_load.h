/* Loading a model (Hugging Face directory or .gguf) into dp_model with fp32 weights, or with
 * the block linears in NF4 (quantized on the fly, or read from a `doppel quantize` file). */
#ifndef DOPPEL_MODEL_LOAD_H
#define DOPPEL_MODEL_LOAD_H

#include <stdbool.h>
#include <stddef.h>

#include "infer/model.h"

typedef struct {
    bool nf4;             /* block linears in NF4 + double quantization (else fp32) */
    int blocksize;        /* NF4 block size, 64 (default when 0) or 256 */
    bool nf4_lm_head;     /* also quantize an untied lm_head */
    const char *nf4_file; /* quantized file to use; NULL: dp_nf4_default_path() if present */
    bool nf4_fresh;       /* quantize from the original weights even when such a file exists */
    bool quiet;           /* no progress lines on stderr */
    bool lm_head_q8;      /* decode through a Q8 copy of the lm_head (dp_model_lm_head_q8) */
    int decode;           /* dp_decode_mode of the decode products (dp_model_set_decode) */
} dp_load_opts;

/* path: a directory with config.json + model.safetensors (or shards), or a .gguf file.
 * opts may be NULL (fp32). NULL with dp_last_error() on failure. */
dp_model *dp_model_load(const char *path, const dp_load_opts *opts);
void dp_model_free(dp_model *m);

/* Replaces the fp32 weights of every block linear (and the untied lm_head when lm_head) by
 * NF4 and frees their fp32 copies: the remaining fp32 tensors move to a smaller arena, so
 * pointers to the model's fp32 tensors taken before the call (embed, norms, biases) go stale. */
int dp_model_quantize_nf4(dp_model *m, int blocksize, bool lm_head);

/* Gives the lm_head a Q8 copy (int8 blocks of 32 + fp32 scales, kernels/q8.h) that the forward
 * pass uses for single-row logits (decode); the fp32 lm_head stays for prefill, all-position
 * logits and training. Only for an fp32 lm_head whose width is a multiple of 32 (else a no-op). */
int dp_model_lm_head_q8(dp_model *m);

/* What the decode steps (one to DP_GEMV_ROWS rows) multiply in: exact fp32 products; the Q8
 * lm_head copy's input rounded to int8 per 32 elements, as llama.cpp computes a Q8_0 matmul;
 * or the NF4 linears' inputs too (kernels/nf4.h: fewer vector instructions per weight). The
 * int8 paths are not bit-equal to fp32; prefill and training are unchanged. */
typedef enum { DP_DECODE_FP32, DP_DECODE_INT8_HEAD, DP_DECODE_INT8 } dp_decode_mode;
/* "fp32", "int8-head", "int8": the mode, or -1 for another name */
int dp_decode_mode_parse(const char *name);
/* Sets the mode; returns whether any linear takes int8: false without AVX512-VNNI or when no
 * shape fits (dp_gemv_nf4_i8_fits, no Q8 head), and decode stays fp32. Call again after adding
 * the Q8 head. */
bool dp_model_set_decode(dp_model *m, dp_decode_mode mode);

/* Writes the model in the bitsandbytes serialization of an NF4 model (HF tensor names;
 * X.weight U8, X.weight.absmax, .quant_map, .nested_absmax, .nested_quant_map,
 * .quant_state.bitsandbytes__nf4; other tensors F32). The model's linears must be NF4. */
int dp_model_save_nf4(const dp_model *m, const char *path);

/* Where a quantized copy of MODEL lives by default: DIR/model.nf4.safetensors for a
 * directory, FILE.nf4.safetensors for a .gguf. Writes into buf (cap bytes). */
void dp_nf4_default_path(const char *model_path, char *buf, size_t cap);

/* Bytes of weights held (fp32 arena + NF4 arrays). */
size_t dp_model_weight_bytes(const dp_model *m);

#endif
