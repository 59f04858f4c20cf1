/* The floor under doppel prep's CSV speed: libcsv alone (strict mode, no-op callbacks) over a
 * file, in CPU seconds. tests/bench/bench_prep.sh prints it beside prep's own figures.
 *   bench_libcsv EXPORT.csv */
#include <csv.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long fields, records;
static void on_field(void *d, size_t n, void *ctx) {
    (void)d, (void)n, (void)ctx;
    fields++;
}
static void on_record(int t, void *ctx) {
    (void)t, (void)ctx;
    records++;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench_libcsv EXPORT.csv\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    static char buf[1 << 20];
    struct csv_parser p;
    csv_init(&p, CSV_STRICT);
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (csv_parse(&p, buf, n, on_field, on_record, NULL) != n) {
            fprintf(stderr, "%s: %s\n", argv[1], csv_strerror(csv_error(&p)));
            return 1;
        }
        total += n;
    }
    csv_fini(&p, on_field, on_record, NULL);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    csv_free(&p);
    fclose(f);
    double s = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) * 1e-9;
    printf("libcsv alone: %ld records, %.1f MB in %.3f CPU s = %.0f MB/cpu-s\n", records,
           (double)total / 1e6, s, (double)total / 1e6 / s);
    return 0;
}
