/* Whole-file and streaming reads (zstd-aware) and atomic writes. */
#include "data/base/io.h"
#include "data/base/error.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

bool dp_path_is_zstd(const char *path) {
    size_t n = strlen(path);
    return n >= 4 && strcmp(path + n - 4, ".zst") == 0;
}

static bool is_zstd_magic(const unsigned char *p, size_t n) {
    return n >= 4 && p[0] == 0x28 && p[1] == 0xB5 && p[2] == 0x2F && p[3] == 0xFD;
}

/* ------------------------------------------------------------------ read-only mapping */

int dp_map_file(const char *path, void **map, size_t *size) {
    *map = NULL;
    *size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dp_fail("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return dp_fail("%s: not a regular file", path);
    }
    if (sb.st_size > 0) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            close(fd);
            return dp_fail("%s: cannot mmap %lld bytes: %s", path, (long long)sb.st_size,
                           strerror(errno));
        }
        *map = m;
        *size = (size_t)sb.st_size;
    }
    close(fd);
    return 0;
}

void dp_unmap_file(void *map, size_t size) {
    if (map && size) munmap(map, size);
}

/* ------------------------------------------------------------------ streaming reader */

struct dp_reader {
    FILE *f;
    char *path;
    uint64_t file_size, file_pos;
    ZSTD_DStream *zs; /* NULL for plain files */
    unsigned char *zin;
    size_t zin_cap;
    ZSTD_inBuffer in;
    bool eof;
    size_t last_ret; /* last ZSTD_decompressStream result: 0 means a frame just ended */
};

dp_reader *dp_reader_open(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        dp_fail("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    dp_reader *r = dp_calloc(1, sizeof *r);
    if (!r) {
        fclose(f);
        return NULL;
    }
    r->f = f;
    r->path = dp_strdup(path);
    struct stat st;
    if (fstat(fileno(f), &st) == 0) r->file_size = (uint64_t)st.st_size;
    unsigned char magic[4];
    size_t n = fread(magic, 1, 4, f);
    rewind(f);
    if (is_zstd_magic(magic, n)) {
        r->zs = ZSTD_createDStream();
        r->zin_cap = ZSTD_DStreamInSize();
        r->zin = dp_malloc(r->zin_cap);
        if (!r->zs || !r->zin) {
            dp_reader_close(r);
            dp_fail("%s: cannot start zstd decompression", path);
            return NULL;
        }
        ZSTD_initDStream(r->zs);
        r->in = (ZSTD_inBuffer){r->zin, 0, 0};
        r->last_ret = 0;
    }
    return r;
}

int64_t dp_reader_read(dp_reader *r, void *buf, size_t cap) {
    if (!r->zs) {
        size_t n = fread(buf, 1, cap, r->f);
        if (n == 0 && ferror(r->f)) return dp_fail("%s: read error: %s", r->path, strerror(errno));
        r->file_pos += n;
        return (int64_t)n;
    }
    ZSTD_outBuffer out = {buf, cap, 0};
    while (out.pos == 0) {
        if (r->in.pos == r->in.size) {
            if (r->eof) {
                if (r->last_ret != 0)
                    return dp_fail("%s: truncated zstd stream (the file ends inside a frame)",
                                   r->path);
                return 0;
            }
            size_t n = fread(r->zin, 1, r->zin_cap, r->f);
            if (n == 0) {
                if (ferror(r->f)) return dp_fail("%s: read error: %s", r->path, strerror(errno));
                r->eof = true;
                continue;
            }
            r->file_pos += n;
            r->in = (ZSTD_inBuffer){r->zin, n, 0};
        }
        size_t ret = ZSTD_decompressStream(r->zs, &out, &r->in);
        if (ZSTD_isError(ret))
            return dp_fail("%s: corrupt zstd data: %s", r->path, ZSTD_getErrorName(ret));
        r->last_ret = ret;
    }
    return (int64_t)out.pos;
}

uint64_t dp_reader_file_pos(const dp_reader *r) {
    return r->file_pos;
}
uint64_t dp_reader_file_size(const dp_reader *r) {
    return r->file_size;
}

void dp_reader_close(dp_reader *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    if (r->zs) ZSTD_freeDStream(r->zs);
    free(r->zin);
    free(r->path);
    free(r);
}

int dp_read_file(const char *path, char **data, size_t *len) {
    *data = NULL;
    *len = 0;
    dp_reader *r = dp_reader_open(path);
    if (!r) return -1;
    size_t cap = dp_reader_file_size(r) + 1 + 4096, n = 0;
    char *buf = dp_malloc(cap);
    if (!buf) goto fail;
    for (;;) {
        if (cap - n < 4096) {
            size_t ncap = cap * 2;
            char *nb = dp_realloc(buf, ncap);
            if (!nb) goto fail;
            buf = nb;
            cap = ncap;
        }
        int64_t got = dp_reader_read(r, buf + n, cap - n - 1);
        if (got < 0) goto fail;
        if (got == 0) break;
        n += (size_t)got;
    }
    buf[n] = 0;
    dp_reader_close(r);
    *data = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    dp_reader_close(r);
    return -1;
}

/* ------------------------------------------------------------------ atomic writer */

struct dp_writer {
    FILE *f;
    char *path, *tmp;
    ZSTD_CStream *zs;
    unsigned char *zout;
    size_t zout_cap;
    bool failed;
};

dp_writer *dp_writer_open(const char *path) {
    dp_writer *w = dp_calloc(1, sizeof *w);
    if (!w) return NULL;
    size_t n = strlen(path) + 32;
    w->path = dp_strdup(path);
    w->tmp = dp_malloc(n);
    if (!w->path || !w->tmp) goto fail;
    snprintf(w->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        dp_fail("%s: cannot create: %s", w->tmp, strerror(errno));
        goto fail;
    }
    if (dp_path_is_zstd(path)) {
        w->zs = ZSTD_createCStream();
        w->zout_cap = ZSTD_CStreamOutSize();
        w->zout = dp_malloc(w->zout_cap);
        if (!w->zs || !w->zout) goto fail;
        ZSTD_initCStream(w->zs, 6);
    }
    return w;
fail:
    dp_writer_abort(w);
    return NULL;
}

static int writer_put(dp_writer *w, const void *data, size_t len) {
    if (len && fwrite(data, 1, len, w->f) != len) {
        w->failed = true;
        return dp_fail("%s: write error: %s", w->tmp, strerror(errno));
    }
    return 0;
}

int dp_writer_write(dp_writer *w, const void *data, size_t len) {
    if (w->failed) return -1;
    if (!w->zs) return writer_put(w, data, len);
    ZSTD_inBuffer in = {data, len, 0};
    while (in.pos < in.size) {
        ZSTD_outBuffer out = {w->zout, w->zout_cap, 0};
        size_t ret = ZSTD_compressStream(w->zs, &out, &in);
        if (ZSTD_isError(ret)) {
            w->failed = true;
            return dp_fail("%s: zstd: %s", w->tmp, ZSTD_getErrorName(ret));
        }
        if (writer_put(w, w->zout, out.pos)) return -1;
    }
    return 0;
}

int dp_writer_printf(dp_writer *w, const char *fmt, ...) {
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return dp_fail("%s: formatting error", w->tmp);
    if ((size_t)n < sizeof small) return dp_writer_write(w, small, (size_t)n);
    char *big = dp_malloc((size_t)n + 1);
    if (!big) return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = dp_writer_write(w, big, (size_t)n);
    free(big);
    return rc;
}

int dp_writer_commit(dp_writer *w) {
    int rc = w->failed ? -1 : 0;
    if (rc == 0 && w->zs) {
        size_t left;
        do {
            ZSTD_outBuffer out = {w->zout, w->zout_cap, 0};
            left = ZSTD_endStream(w->zs, &out);
            if (ZSTD_isError(left)) {
                rc = dp_fail("%s: zstd: %s", w->tmp, ZSTD_getErrorName(left));
                break;
            }
            if (writer_put(w, w->zout, out.pos)) {
                rc = -1;
                break;
            }
        } while (left > 0);
    }
    if (rc == 0 && (fflush(w->f) != 0 || fsync(fileno(w->f)) != 0))
        rc = dp_fail("%s: cannot flush: %s", w->tmp, strerror(errno));
    if (rc == 0) {
        fclose(w->f);
        w->f = NULL;
        if (rename(w->tmp, w->path) != 0)
            rc = dp_fail("%s: cannot rename to %s: %s", w->tmp, w->path, strerror(errno));
    }
    if (rc != 0) {
        dp_writer_abort(w);
        return -1;
    }
    ZSTD_freeCStream(w->zs);
    free(w->zout);
    free(w->path);
    free(w->tmp);
    free(w);
    return 0;
}

void dp_writer_abort(dp_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) unlink(w->tmp);
    ZSTD_freeCStream(w->zs);
    free(w->zout);
    free(w->path);
    free(w->tmp);
    free(w);
}

int dp_write_file_atomic(const char *path, const void *data, size_t len) {
    dp_writer *w = dp_writer_open(path);
    if (!w) return -1;
    if (dp_writer_write(w, data, len)) {
        dp_writer_abort(w);
        return -1;
    }
    return dp_writer_commit(w);
}

/* ------------------------------------------------------------------ dp_buf */

static int buf_reserve(dp_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + extra + 1) ncap *= 2;
    char *nd = dp_realloc(b->data, ncap);
    if (!nd) return -1;
    b->data = nd;
    b->cap = ncap;
    return 0;
}

int dp_buf_append(dp_buf *b, const void *data, size_t len) {
    if (buf_reserve(b, len)) return -1;
    if (len) memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = 0;
    return 0;
}

int dp_buf_puts(dp_buf *b, const char *s) {
    return dp_buf_append(b, s, strlen(s));
}

int dp_buf_printf(dp_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return dp_fail("formatting error");
    if (buf_reserve(b, (size_t)n)) return -1;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void dp_buf_free(dp_buf *b) {
    free(b->data);
    *b = (dp_buf){0};
}

double dp_mem_available(void) {
    const char *test = getenv("DOPPEL_TEST_MEM_AVAILABLE_MIB");
    if (test) return atof(test) * 1048576.0;
    FILE *f = fopen("/proc/meminfo", "r");
    double kib = -1;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    if (f) fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}
