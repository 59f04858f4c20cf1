/* safetensors files (REFERENCE.md section 5): a checked, mmap'd reader (single files and
 * sharded models via model.safetensors.index.json) and an atomic writer. */
#ifndef DOPPEL_SAFETENSORS_H
#define DOPPEL_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "infer/dtype.h"

#define DP_ST_MAX_HEADER 100000000ull /* bytes of JSON header accepted */
#define DP_ST_MAX_DIMS   8

typedef struct {
    char *name;
    dp_dtype dtype;
    int ndim;
    int64_t shape[DP_ST_MAX_DIMS];
    int64_t numel;
    uint64_t offset, nbytes; /* offset from the start of the data section */
    const void *data;        /* points into the mapping (nbytes long; may be unaligned) */
} dp_st_tensor;

typedef struct {
    char *path;
    int n_tensors;
    dp_st_tensor *tensors; /* sorted by name */
    int n_meta;
    char **meta_keys, **meta_values; /* __metadata__ entries, in file order */
    /* private */
    void *map;
    size_t map_size;
    bool owns_map;
} dp_safetensors;

/* mmaps and validates a file: header length <= 100 MB, JSON object, known dtypes,
 * dtype x shape == data_offsets size, offsets contiguous from 0 with no hole, overlap or
 * overflow, data size == file size - 8 - header. NULL with dp_last_error() on any problem. */
dp_safetensors *dp_safetensors_open(const char *path);
/* The same checks over a caller's buffer (not copied; it must outlive the result). `name`
 * is used in messages. */
dp_safetensors *dp_safetensors_open_memory(const void *buf, size_t len, const char *name);
void dp_safetensors_close(dp_safetensors *st);

const dp_st_tensor *dp_safetensors_find(const dp_safetensors *st, const char *name);
/* The __metadata__ value of key, or NULL. */
const char *dp_safetensors_meta(const dp_safetensors *st, const char *key);

/* ---- a model's weights: one model.safetensors, or shards listed by
 * model.safetensors.index.json (every weight_map entry must exist in its shard). */
typedef struct {
    int n_files;
    dp_safetensors **files;
} dp_st_set;

/* Opens DIR/model.safetensors.index.json when present, else DIR/model.safetensors. */
dp_st_set *dp_st_set_open_dir(const char *dir);
/* A set of one file. */
dp_st_set *dp_st_set_open_file(const char *path);
void dp_st_set_close(dp_st_set *set);
const dp_st_tensor *dp_st_set_find(const dp_st_set *set, const char *name);
/* Copies a float tensor (F32/F16/BF16/F64) into out as fp32, checking its shape against
 * (rows, cols) (cols == 0 for 1-D). */
int dp_st_tensor_f32(const dp_st_tensor *t, float *out, int64_t rows, int64_t cols);

/* ---- writer: tensors are written in the order added; data is borrowed (not copied) and
 * must stay valid until dp_st_writer_save. The file is written atomically. */
typedef struct dp_st_writer dp_st_writer;
dp_st_writer *dp_st_writer_new(void);
int dp_st_writer_add(dp_st_writer *w, const char *name, dp_dtype dtype, int ndim,
                     const int64_t *shape, const void *data);
/* Adds or replaces one __metadata__ entry. */
int dp_st_writer_meta(dp_st_writer *w, const char *key, const char *value);
int dp_st_writer_save(dp_st_writer *w, const char *path);
void dp_st_writer_free(dp_st_writer *w);

#endif
