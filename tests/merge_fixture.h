/* For the merge tests: a random LoRA adapter over a model written as `doppel train` writes one
 * (PEFT files + doppel.json with the base's fingerprint), and the logits of a model with an
 * adapter applied unmerged (chat's forward: infer/forward.c + dp_lora_hook). */
#ifndef DOPPEL_MERGE_FIXTURE_H
#define DOPPEL_MERGE_FIXTURE_H

#include "data/base/error.h"
#include "data/base/rng.h"
#include "data/tokenizer.h"
#include "infer/adapter.h"
#include "infer/forward.h"
#include "infer/generate.h"
#include "infer/model_load.h"
#include "train/adapter.h"
#include "train/lora.h"

#include <stdio.h>
#include <stdlib.h>

/* An adapter of rank 4 on every module with A, B uniform in [-amp, amp): large enough that the
 * merged logits move by whole units, so a wrong merge cannot hide under the tolerance. */
static inline int mfx_make_adapter(const char *model_dir, const char *out_dir, const char *system,
                                   const char *chat_format, uint64_t seed, float amp) {
    dp_load_opts lo = {.nf4 = true, .quiet = true};
    dp_model *m = dp_model_load(model_dir, &lo);
    if (!m) return -1;
    dp_lora_config lc = {.r = 4, .alpha = 8, .targets = DP_LORA_ALL_TARGETS};
    dp_lora *lora = dp_lora_create(&m->cfg, &lc);
    dp_tokenizer *tok = dp_model_tokenizer(model_dir); /* a directory or a .gguf */
    int rc = -1;
    if (lora && tok) {
        for (size_t i = 0; i < lora->n; i++)
            lora->params[i] = amp * (2.0f * dp_rng_uniform(seed, 1, i) - 1.0f);
        dp_adapter_meta meta = {.persona = "mossy",
                                .system_prompt = system,
                                .chat_format = chat_format,
                                .tokenizer_fingerprint = dp_tokenizer_fingerprint(tok),
                                .base_model = model_dir};
        char *dj = dp_adapter_meta_json(&meta, m);
        rc = dj ? dp_lora_save_peft(lora, out_dir, model_dir, dj) : -1;
        free(dj);
    }
    dp_tokenizer_free(tok);
    dp_lora_free(lora);
    dp_model_free(m);
    return rc;
}

/* logits (T, V) of model_dir (NF4 base when nf4, else fp32) with adapter_dir unmerged, or of the
 * model alone when adapter_dir is NULL. *V_out gets V. malloc'd, NULL on failure. */
static inline float *mfx_logits(const char *model_dir, bool nf4, const char *adapter_dir,
                                const int32_t *ids, int T, int *V_out) {
    dp_load_opts lo = {.nf4 = nf4, .quiet = true};
    dp_model *m = dp_model_load(model_dir, &lo);
    if (!m) return NULL;
    dp_lora *lora = NULL;
    float *logits = NULL;
    dp_forward fw;
    bool fw_ok = false;
    if (adapter_dir && dp_lora_load_peft(adapter_dir, &m->cfg, &lora, NULL)) goto out;
    if (dp_forward_create(&fw, m, T + 1, 0)) goto out;
    fw_ok = true;
    if (lora) dp_forward_set_hook(&fw, dp_lora_hook, lora);
    logits = malloc(sizeof(float) * (size_t)T * (size_t)m->cfg.V);
    if (!logits || dp_forward_tokens(&fw, ids, T, logits)) {
        free(logits);
        logits = NULL;
    }
    *V_out = m->cfg.V;
out:
    if (fw_ok) dp_forward_free(&fw);
    dp_lora_free(lora);
    dp_model_free(m);
    return logits;
}

#endif
