/* Encode throughput (MB/s, one thread) on >= 20 MB of chat text, side by side with Hugging Face
 * `tokenizers` (Rust, one thread) on the same text and tokenizer, with the ratio.
 * Usage: bench_tokenizer [TOKENIZER_DIR_OR_JSON] [TEXT_FILE]
 * Defaults: ../shared/tokenizers/qwen3 and /tmp/doppel-bench-chat.txt (made by the peer script
 * tests/bench/hf_tokenizer_speed.py when absent; needs `pip install tokenizers`). */
#include "data/base/error.h"
#include "data/base/io.h"
#include "data/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const char *tok_path = argc > 1 ? argv[1] : DOPPEL_SOURCE_DIR "/../shared/tokenizers/qwen3";
    const char *text_path = argc > 2 ? argv[2] : "/tmp/doppel-bench-chat.txt";
    char json[4096];
    struct stat st;
    if (stat(tok_path, &st) == 0 && S_ISDIR(st.st_mode))
        snprintf(json, sizeof json, "%s/tokenizer.json", tok_path);
    else
        snprintf(json, sizeof json, "%s", tok_path);

    /* the peer first: it also writes the text file when absent */
    char cmd[16384], hf_line[256] = "";
    snprintf(cmd, sizeof cmd,
             "python3 %s/tests/bench/hf_tokenizer_speed.py --tokenizer '%s' "
             "--text '%s' --mb 20",
             DOPPEL_SOURCE_DIR, json, text_path);
    double hf_mbps = 0;
    long hf_tokens = -1;
    FILE *p = popen(cmd, "r");
    if (p) {
        while (fgets(hf_line, sizeof hf_line, p)) {
            sscanf(hf_line, "hf_mb_per_s %lf", &hf_mbps);
            sscanf(hf_line, "hf_tokens %ld", &hf_tokens);
        }
        pclose(p);
    }

    dp_tokenizer *t = dp_tokenizer_load(tok_path);
    if (!t) {
        fprintf(stderr, "bench_tokenizer: %s\n", dp_last_error());
        return 1;
    }
    char *text;
    size_t len;
    if (dp_read_file(text_path, &text, &len)) {
        fprintf(stderr, "bench_tokenizer: %s (run with the peer script first)\n", dp_last_error());
        return 1;
    }
    dp_ids ids = {0};
    /* line by line, like the peer's encode_batch of lines; ids are counted, not kept */
    double best = 1e30;
    long ntok = 0;
    for (int rep = 0; rep < 2; rep++) {
        double t0 = now();
        ntok = 0;
        for (char *s = text; s < text + len;) {
            char *nl = memchr(s, '\n', (size_t)(text + len - s));
            size_t l = nl ? (size_t)(nl - s) : (size_t)(text + len - s);
            ids.n = 0;
            if (dp_tokenizer_encode(t, s, l, true, &ids)) {
                fprintf(stderr, "bench_tokenizer: %s\n", dp_last_error());
                return 1;
            }
            ntok += (long)ids.n;
            s += l + 1;
        }
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    double mbps = (double)len / best / 1e6;
    printf("tokenizer: %s\n", dp_tokenizer_describe(t));
    printf("text: %s, %.1f MB\n", text_path, (double)len / 1e6);
    printf("doppel  encode: %8.2f MB/s  (%ld tokens, one thread)\n", mbps, ntok);
    if (hf_mbps > 0) {
        printf("HF tokenizers : %8.2f MB/s  (%ld tokens, RAYON_NUM_THREADS=1)\n", hf_mbps,
               hf_tokens);
        printf("ratio doppel / HF: %.2fx%s\n", mbps / hf_mbps,
               hf_tokens == ntok ? "" : "  (token counts differ!)");
    } else
        printf("HF tokenizers : not measured (pip install tokenizers)\n");
    dp_ids_free(&ids);
    free(text);
    dp_tokenizer_free(t);
    return 0;
}
