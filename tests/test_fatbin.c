/* Proves the CUDA build holds machine code for the RTX 3060 (sm_86) and its neighbours:
 * reads libdoppel.a (ar archive of ELF objects) and the doppel executable, finds each
 * .nv_fatbin section, and walks the fatbin containers (magic 0xBA55ED50) entry by entry,
 * collecting (kind, arch): kind 1 = PTX, 2 = cubin (SASS). No cuobjdump needed.
 * Without nvcc at build time there is nothing to check: SKIP. */
#include "check.h"
#include "data/base/error.h"
#include "data/base/io.h"

#include <libgen.h>
#include <stdint.h>

#define FATBIN_MAGIC 0xBA55ED50u

static uint64_t rd(const unsigned char *p, int bytes) { /* little-endian */
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

typedef struct {
    int cubin[128], ptx[128]; /* counts by sm arch (80, 86, ...) */
    int containers, bad;
} fat_stats;

/* A .nv_fatbin section: containers one after another (8-byte aligned), each a 16-byte header
 * (magic, version, header size, payload size) then entries, each with its own header:
 * kind u16 at 0, header size u32 at 4, payload size u64 at 8, sm arch u32 at 28. */
static void walk_fatbin(const unsigned char *s, size_t n, fat_stats *st) {
    size_t pos = 0;
    while (pos + 16 <= n) {
        if (rd(s + pos, 4) != FATBIN_MAGIC) {
            pos += 8;
            continue;
        }
        size_t hsize = rd(s + pos + 6, 2), fsize = rd(s + pos + 8, 8);
        if (hsize < 16 || fsize > n - pos - hsize) {
            st->bad++;
            return;
        }
        st->containers++;
        size_t e = pos + hsize, end = pos + hsize + fsize;
        while (e + 32 <= end) {
            unsigned kind = (unsigned)rd(s + e, 2), arch = (unsigned)rd(s + e + 28, 4);
            size_t ehsize = rd(s + e + 4, 4), esize = rd(s + e + 8, 8);
            if (ehsize < 32 || esize > end - e - ehsize) {
                st->bad++;
                break;
            }
            if (arch < 128) {
                if (kind == 2) st->cubin[arch]++;
                if (kind == 1) st->ptx[arch]++;
            }
            e += ehsize + esize;
        }
        pos = (end + 7) & ~(size_t)7;
    }
}

/* The .nv_fatbin section of one ELF64 object or executable, if any. */
static void scan_elf(const unsigned char *f, size_t n, fat_stats *st) {
    if (n < 64 ||
        memcmp(f,
               "\x7f"
               "ELF",
               4) ||
        f[4] != 2)
        return;
    uint64_t shoff = rd(f + 0x28, 8);
    unsigned shentsize = (unsigned)rd(f + 0x3A, 2), shnum = (unsigned)rd(f + 0x3C, 2),
             shstrndx = (unsigned)rd(f + 0x3E, 2);
    if (shentsize < 64 || shoff > n || (uint64_t)shnum * shentsize > n - shoff || shstrndx >= shnum)
        return;
    const unsigned char *strh = f + shoff + (size_t)shstrndx * shentsize;
    uint64_t stroff = rd(strh + 24, 8), strsize = rd(strh + 32, 8);
    if (stroff > n || strsize > n - stroff) return;
    for (unsigned i = 0; i < shnum; i++) {
        const unsigned char *sh = f + shoff + (size_t)i * shentsize;
        uint64_t name = rd(sh, 4), off = rd(sh + 24, 8), size = rd(sh + 32, 8);
        unsigned type = (unsigned)rd(sh + 4, 4);
        if (name >= strsize || type == 8 /* SHT_NOBITS */ || off > n || size > n - off) continue;
        const char *nm = (const char *)f + stroff + name;
        if (strnlen(nm, strsize - name) < strsize - name && !strcmp(nm, ".nv_fatbin"))
            walk_fatbin(f + off, size, st);
    }
}

/* Every member of an ar archive; `only` (a member name such as "attention.cu.o") or NULL. */
static int scan_archive(const unsigned char *f, size_t n, const char *only, fat_stats *st) {
    if (n < 8 || memcmp(f, "!<arch>\n", 8)) return -1;
    const char *longnames = NULL;
    size_t longlen = 0, pos = 8;
    while (pos + 60 <= n) {
        const unsigned char *h = f + pos;
        char sz[11] = {0}, name[256] = {0};
        memcpy(sz, h + 48, 10);
        size_t size = strtoull(sz, NULL, 10), data = pos + 60;
        if (size > n - data) return -1;
        if (!memcmp(h, "// ", 3)) {
            longnames = (const char *)f + data, longlen = size;
        } else if (h[0] == '/' && h[1] >= '0' && h[1] <= '9' && longnames) {
            size_t o = strtoull((const char *)h + 1, NULL, 10), k = 0;
            while (o + k < longlen && longnames[o + k] != '/' && longnames[o + k] != '\n' &&
                   k < 255)
                name[k] = longnames[o + k], k++;
        } else {
            for (int k = 0; k < 16 && h[k] != '/' && h[k] != ' '; k++) name[k] = (char)h[k];
        }
        if (!only || !strcmp(name, only)) scan_elf(f + data, size, st);
        pos = data + size + (size & 1);
    }
    return 0;
}

static void report(const char *what, const fat_stats *st) {
    fprintf(stderr, "  %s: %d fatbin container(s); cubin:", what, st->containers);
    for (int a = 0; a < 128; a++)
        if (st->cubin[a]) fprintf(stderr, " sm_%d x%d", a, st->cubin[a]);
    fprintf(stderr, "; ptx:");
    for (int a = 0; a < 128; a++)
        if (st->ptx[a]) fprintf(stderr, " compute_%d x%d", a, st->ptx[a]);
    fprintf(stderr, "\n");
}

int main(void) {
    const char *bin = getenv("DOPPEL_BIN");
    if (!bin || !*bin) SKIP("DOPPEL_BIN is not set (run through ctest)");
    char dir[4096], lib[4200];
    snprintf(dir, sizeof dir, "%s", bin);
    snprintf(lib, sizeof lib, "%s/libdoppel.a", dirname(dir));
    char *data;
    size_t len;
    if (dp_read_file(lib, &data, &len) != 0) {
        fprintf(stderr, "%s\n", dp_last_error());
        return 1;
    }
    fat_stats all = {0}, att = {0};
    CHECK_EQ_INT(0, scan_archive((const unsigned char *)data, len, NULL, &all));
    scan_archive((const unsigned char *)data, len, "attention.cu.o", &att);
    free(data);
#ifndef DOPPEL_HAVE_CUDA
    if (!all.containers) SKIP("built without nvcc: libdoppel.a holds no CUDA code to check");
#endif
    report("libdoppel.a", &all);
    report("attention.cu.o", &att);
    CHECK_EQ_INT(0, all.bad);
    CHECK(all.containers >= 8); /* every .cu with kernels */
    const int archs[] = {80, 86, 89, 90};
    for (int i = 0; i < 4; i++) {
        CHECK_REPORT(all.cubin[archs[i]] >= 8,
                     "libdoppel.a: %d sm_%d cubins, expected one per .cu "
                     "with kernels",
                     all.cubin[archs[i]], archs[i]);
        CHECK_REPORT(att.cubin[archs[i]] == 1, "attention.cu.o has no sm_%d cubin", archs[i]);
    }
    CHECK(all.ptx[90] >= 1); /* PTX for the newest arch: JIT on GPUs newer than sm_90 */

    /* the executable: machine code is there once a command links the CUDA backend */
    if (dp_read_file(bin, &data, &len) == 0) {
        fat_stats exe = {0};
        scan_elf((const unsigned char *)data, len, &exe);
        free(data);
        report("doppel executable", &exe);
        CHECK_EQ_INT(0, exe.bad);
        if (exe.containers) CHECK(exe.cubin[86] >= 1);
    }
    return check_done();
}
