/* GGUF (v2/v3) reader (REFERENCE.md section 5): header, metadata key/values (all types,
 * arrays included), tensor infos, and dequantization of F32/F16/BF16/Q8_0/Q4_0/Q4_1 to fp32.
 * Every count, length and offset is checked against the file size before use. */
#ifndef DOPPEL_GGUF_H
#define DOPPEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* metadata value types */
typedef enum {
    DP_GGUF_U8 = 0,
    DP_GGUF_I8 = 1,
    DP_GGUF_U16 = 2,
    DP_GGUF_I16 = 3,
    DP_GGUF_U32 = 4,
    DP_GGUF_I32 = 5,
    DP_GGUF_F32 = 6,
    DP_GGUF_BOOL = 7,
    DP_GGUF_STRING = 8,
    DP_GGUF_ARRAY = 9,
    DP_GGUF_U64 = 10,
    DP_GGUF_I64 = 11,
    DP_GGUF_F64 = 12,
} dp_gguf_vtype;

/* tensor types (ggml numbering) */
enum {
    DP_GGML_F32 = 0,
    DP_GGML_F16 = 1,
    DP_GGML_Q4_0 = 2,
    DP_GGML_Q4_1 = 3,
    DP_GGML_Q8_0 = 8,
    DP_GGML_BF16 = 30,
};

#define DP_GGUF_MAX_DIMS 4

typedef struct {
    char *key;
    dp_gguf_vtype type;
    /* scalars (every numeric/bool type is also available as i, u and f) */
    int64_t i;
    uint64_t u;
    double f;
    char *str; /* DP_GGUF_STRING: NUL-terminated copy (str_len bytes, may hold NULs) */
    uint64_t str_len;
    /* DP_GGUF_ARRAY */
    dp_gguf_vtype arr_type;
    uint64_t arr_n;
    const uint8_t *arr_data; /* numeric arrays: raw little-endian elements in the file */
    char **arr_str;          /* string arrays: arr_n NUL-terminated copies */
    uint64_t *arr_str_len;
} dp_gguf_kv;

typedef struct {
    char *name;
    int n_dims;
    int64_t ne[DP_GGUF_MAX_DIMS]; /* innermost first: ne[0] = columns */
    int type;                     /* ggml type */
    uint64_t offset;              /* relative to the data section */
    uint64_t nbytes;
    int64_t numel;
    const void *data; /* into the mapping */
} dp_gguf_tensor;

typedef struct {
    char *path;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    dp_gguf_kv *kv;
    dp_gguf_tensor *tensors;
    uint64_t alignment;
    uint64_t data_offset; /* start of the data section in the file */
    /* private */
    void *map;
    size_t map_size;
    bool owns_map;
} dp_gguf;

dp_gguf *dp_gguf_open(const char *path);
/* Parses a caller's buffer (not copied; must outlive the result). */
dp_gguf *dp_gguf_open_memory(const void *buf, size_t len, const char *name);
void dp_gguf_close(dp_gguf *g);

/* ---- metadata look-up. Each getter returns 0, or -1 with dp_last_error() naming the key
 * when it is missing or of the wrong type. dp_gguf_find returns NULL when absent. */
const dp_gguf_kv *dp_gguf_find(const dp_gguf *g, const char *key);
int dp_gguf_get_str(const dp_gguf *g, const char *key, const char **out);
/* any integer type (u8..i64, bool); fails when the value does not fit int64 */
int dp_gguf_get_int(const dp_gguf *g, const char *key, int64_t *out);
/* any numeric type as double */
int dp_gguf_get_num(const dp_gguf *g, const char *key, double *out);
/* array of strings: pointers into g (valid until close), n elements, lens may be NULL */
int dp_gguf_get_str_array(const dp_gguf *g, const char *key, char *const **strs,
                          const uint64_t **lens, uint64_t *n);
/* array of any integer type, converted; *out is malloc'd (free it) */
int dp_gguf_get_int_array(const dp_gguf *g, const char *key, int64_t **out, uint64_t *n);
/* array of any numeric type as float; *out is malloc'd */
int dp_gguf_get_f32_array(const dp_gguf *g, const char *key, float **out, uint64_t *n);

/* ---- tensors */
const dp_gguf_tensor *dp_gguf_find_tensor(const dp_gguf *g, const char *name);
/* "Q4_1" etc.; "?" when unknown */
const char *dp_ggml_type_name(int type);
/* Elements per block and bytes per block; 0 when the type is unknown. */
int64_t dp_ggml_block_elems(int type);
int64_t dp_ggml_block_bytes(int type);
/* Dequantizes n elements (a multiple of the block size) of a supported type to fp32. */
int dp_ggml_dequantize(float *out, const void *src, int type, int64_t n);
/* The whole tensor as fp32 (numel floats). */
int dp_gguf_tensor_f32(const dp_gguf_tensor *t, float *out);

#endif
