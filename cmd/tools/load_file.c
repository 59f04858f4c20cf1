/* load_file: a doppel chat tool. Prints a text file that lies under the current directory.
 * Paths that leave it (`..`, absolute paths elsewhere, symlinks pointing out) and files that
 * are not UTF-8 text are refused. Limit: DOPPEL_LOAD_FILE_MAX_BYTES (default 65536) shown. */
#define _GNU_SOURCE
#include "data/base/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int refuse(const char *path, const char *why) {
    fprintf(stderr, "load_file: %s: %s\n", path, why);
    return 1;
}

/* inside: path is root itself or below it */
static int under(const char *root, const char *path) {
    size_t n = strlen(root);
    if (strncmp(root, path, n)) return 0;
    return path[n] == 0 || path[n] == '/' || (n == 1 && root[0] == '/');
}

int main(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--describe")) {
        puts("shows a text file from the current directory or below: LOAD_FILE path");
        return 0;
    }
    if (argc != 2 || !argv[1][0]) {
        fprintf(stderr, "load_file: expected one argument, the path of a file under the "
                        "current directory\n");
        return 2;
    }
    const char *path = argv[1];
    long max = 65536;
    const char *env = getenv("DOPPEL_LOAD_FILE_MAX_BYTES");
    if (env && atol(env) > 0) max = atol(env);

    char root[PATH_MAX], real[PATH_MAX];
    if (!getcwd(root, sizeof root)) return refuse(".", strerror(errno));
    if (!realpath(path, real)) return refuse(path, strerror(errno));
    if (!under(root, real))
        return refuse(path, "outside the current directory (only files under it can be read)");
    int fd = open(real, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return refuse(path, strerror(errno));
    /* what was opened, seen by the kernel: a path swapped after realpath is caught here */
    char link[64], opened[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t ln = readlink(link, opened, sizeof opened - 1);
    if (ln > 0) {
        opened[ln] = 0;
        if (!under(root, opened)) return refuse(path, "outside the current directory");
    }
    struct stat st;
    if (fstat(fd, &st)) return refuse(path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return refuse(path, "a directory, not a file");
    if (!S_ISREG(st.st_mode)) return refuse(path, "not a regular file");

    char *buf = malloc((size_t)max + 4);
    if (!buf) return refuse(path, "out of memory");
    size_t n = 0;
    while (n < (size_t)max + 4) {
        ssize_t r = read(fd, buf + n, (size_t)max + 4 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            free(buf);
            return refuse(path, strerror(errno));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    int cut = n > (size_t)max;
    size_t shown = cut ? (size_t)max : n;
    size_t valid = dp_utf8_valid_prefix(buf, shown);
    /* a cut may fall inside a character: up to 3 bytes of it are dropped, not refused */
    if (cut && valid < shown && shown - valid < 4 &&
        dp_utf8_valid_prefix(buf + valid, n - valid) >= shown - valid)
        shown = valid;
    if (memchr(buf, 0, shown) || dp_utf8_valid_prefix(buf, shown) != shown) {
        free(buf);
        return refuse(path, "a binary file (not UTF-8 text); only text files can be read");
    }
    fwrite(buf, 1, shown, stdout);
    if (cut)
        printf("\n[load_file: %s is %lld bytes; the first %zu are shown]\n", path,
               (long long)st.st_size, shown);
    free(buf);
    return 0;
}
