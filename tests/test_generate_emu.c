/* Generation on a GPU backend (dp_gen_state_create_gpu, what `doppel chat` runs on a CUDA device)
 * under EMU (or on the device: DOPPEL_TEST_BACKEND=cuda), against the CPU path on the tiny
 * reference models: the same greedy continuation with an unmerged LoRA adapter, fp32 and NF4
 * weights, and the same prefix reuse when a second prompt extends the first (the next chat turn).
 */
#include "check.h"
#include "fixture_emu.h"
#include "data/base/error.h"
#include "infer/generate.h"
#include "infer/model_load.h"
#include "kernels/cuda/kernels.h"
#include "infer/adapter.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_T = 64, NEW = 10 };
static const dp_gpu_ops *gpu; /* dp_emu_ops, or dp_cuda_ops under DOPPEL_TEST_BACKEND=cuda */

/* Greedy turn 1 on prompt, then turn 2 on prompt + reply + extra; ids and reuse per turn. */
static int run(dp_gen_state *g, const dp_model *m, const int32_t *prompt, int np, dp_ids *reply1,
               dp_ids *reply2, int *reused2) {
    dp_sampler_params sp = dp_sampler_defaults();
    sp.temperature = 0;
    dp_sampler s;
    if (dp_sampler_create(&s, &sp, m->cfg.V, m->cfg.V)) return -1;
    dp_gen_opts o = {.max_tokens = NEW};
    dp_gen_result res;
    int rc = dp_generate(g, &s, prompt, np, &o, NULL, NULL, reply1, &res);
    int32_t turn2[MAX_T];
    int n2 = 0;
    for (int i = 0; i < np; i++) turn2[n2++] = prompt[i];
    for (size_t i = 0; i < reply1->n; i++) turn2[n2++] = reply1->v[i];
    for (int i = 0; i < 5; i++) turn2[n2++] = (prompt[i] * 7 + 3) % m->cfg.V;
    if (!rc) rc = dp_generate(g, &s, turn2, n2, &o, NULL, NULL, reply2, &res);
    *reused2 = res.n_reused;
    dp_sampler_free(&s);
    return rc;
}

static void compare(const dp_model *m, const dp_lora *lora, const char *name) {
    const int32_t prompt[] = {1, 17, 42, 5, 99, 23, 8, 64, 3, 11, 50, 7};
    const int np = (int)(sizeof prompt / sizeof prompt[0]);
    dp_ids c1 = {0}, c2 = {0}, e1 = {0}, e2 = {0};
    int cr = -1, er = -2;
    dp_gen_state cpu, emu;
    CHECK(dp_gen_state_create(&cpu, m, MAX_T) == 0);
    dp_forward_set_hook(&cpu.fwd, dp_lora_hook, (void *)lora);
    CHECK_REPORT(run(&cpu, m, prompt, np, &c1, &c2, &cr) == 0, "%s cpu: %s", name, dp_last_error());
    dp_gen_state_free(&cpu);
    if (dp_gen_state_create_gpu(&emu, gpu, m, lora, MAX_T, false)) {
        CHECK_REPORT(0, "%s %s: %s", name, gpu->backend, dp_last_error());
    } else {
        CHECK_REPORT(run(&emu, m, prompt, np, &e1, &e2, &er) == 0, "%s %s: %s", name, gpu->backend,
                     dp_last_error());
        CHECK_EQ_INT(dp_gen_capacity(&emu), MAX_T);
        dp_gen_state_free(&emu);
    }
    CHECK_EQ_INT((int)c1.n, NEW);
    CHECK_EQ_INT((int)e1.n, (int)c1.n);
    CHECK_EQ_INT((int)e2.n, (int)c2.n);
    CHECK_REPORT(c1.n == e1.n && !memcmp(c1.v, e1.v, c1.n * 4), "%s: turn 1 ids differ", name);
    CHECK_REPORT(c2.n == e2.n && !memcmp(c2.v, e2.v, c2.n * 4), "%s: turn 2 ids differ", name);
    /* turn 2 reuses turn 1's prompt and every reply token but the last (never fed) */
    CHECK_EQ_INT(cr, np + NEW - 1);
    CHECK_EQ_INT(er, cr);
    fprintf(stderr, "  %s: greedy turns of %d + %d ids (cpu), %d reused\n", name, (int)c1.n,
            (int)c2.n, er);
    dp_ids_free(&c1), dp_ids_free(&c2), dp_ids_free(&e1), dp_ids_free(&e2);
}

int main(void) {
    gpu = test_gpu_backend_or_fail();
    if (!gpu) return check_done();
    for (int i = 0; i < EMU_N_MODELS; i++) {
        for (int nf4 = 0; nf4 < 2; nf4++) {
            dp_model *m = emu_tiny_model(EMU_MODELS[i], nf4);
            if (!m) continue;
            dp_lora_config lc = {.r = 4, .alpha = 8, .targets = DP_LORA_ALL_TARGETS};
            dp_lora *lora = dp_lora_create(&m->cfg, &lc);
            CHECK_REPORT(lora != NULL, "%s", dp_last_error());
            if (lora) {
                emu_fill_lora(lora, 777);
                char name[64];
                snprintf(name, sizeof name, "%s %s", EMU_MODELS[i], nf4 ? "nf4" : "fp32");
                compare(m, lora, name);
            }
            dp_lora_free(lora);
            dp_model_free(m);
        }
    }
    return check_done();
}
