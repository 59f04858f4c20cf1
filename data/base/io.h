/* File I/O shared by every command: whole-file and streaming reads that decompress zstd
 * transparently, and atomic writes (temporary file, fsync, rename) so a crash or an error
 * never leaves a partial output behind. */
#ifndef DOPPEL_IO_H
#define DOPPEL_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* True when the path ends in ".zst". */
bool dp_path_is_zstd(const char *path);

/* Reads a whole file (zstd-decompressed when it is a zstd frame), NUL-terminated.
 * Returns 0 and sets *data (free()) and *len, or -1 with dp_last_error(). */
int dp_read_file(const char *path, char **data, size_t *len);

/* Maps a regular file read-only (a zero-length file maps to NULL with *size 0).
 * Returns 0, or -1 with "PATH: why" recorded. Release with dp_unmap_file. */
int dp_map_file(const char *path, void **map, size_t *size);
void dp_unmap_file(void *map, size_t size);

/* Streaming reader: plain or zstd (detected by the frame magic, not the name). */
typedef struct dp_reader dp_reader;
dp_reader *dp_reader_open(const char *path);
/* Reads up to cap bytes; returns the count, 0 at end of file, -1 on error. */
int64_t dp_reader_read(dp_reader *r, void *buf, size_t cap);
/* Bytes consumed from the file so far (compressed bytes for zstd), and the file's size. */
uint64_t dp_reader_file_pos(const dp_reader *r);
uint64_t dp_reader_file_size(const dp_reader *r);
void dp_reader_close(dp_reader *r);

/* Atomic writer: writes go to "PATH.tmp.PID"; dp_writer_commit flushes, fsyncs and renames
 * over PATH; dp_writer_abort (or destroy without commit) removes the temporary file.
 * When the path ends in ".zst" the content is zstd-compressed. */
typedef struct dp_writer dp_writer;
dp_writer *dp_writer_open(const char *path);
int dp_writer_write(dp_writer *w, const void *data, size_t len);
int dp_writer_printf(dp_writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int dp_writer_commit(dp_writer *w); /* frees w */
void dp_writer_abort(dp_writer *w); /* frees w */

/* Writes a whole buffer atomically. */
int dp_write_file_atomic(const char *path, const void *data, size_t len);

/* The kernel's MemAvailable in bytes (what can be allocated without swapping), or -1 where
 * /proc/meminfo does not say; DOPPEL_TEST_MEM_AVAILABLE_MIB stands in for it in tests. */
double dp_mem_available(void);

/* Growable byte buffer, used for building strings and JSON. */
typedef struct {
    char *data;
    size_t len, cap;
} dp_buf;
int dp_buf_append(dp_buf *b, const void *data, size_t len);
int dp_buf_puts(dp_buf *b, const char *s);
int dp_buf_printf(dp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_buf_free(dp_buf *b);

#ifdef __cplusplus
}
#endif
#endif
