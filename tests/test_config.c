/* config.json parsing for the supported families (values as published in each model's
 * config.json), generation_config.json stop ids, and clear errors for anything else. */
#include "check.h"
#include "data/base/error.h"
#include "infer/config.h"

static int parse(dp_model_config *c, const char *json) {
    return dp_config_from_json(c, json, strlen(json), "config.json");
}

static void expect_error(const char *json, const char *want) {
    dp_model_config c;
    CHECK_REPORT(parse(&c, json) != 0, "accepted: %s", json);
    CHECK_REPORT(strstr(dp_last_error(), want) != NULL, "message \"%s\" lacks \"%s\"",
                 dp_last_error(), want);
}

int main(void) {
    dp_model_config c;
    /* Qwen2.5-0.5B-Instruct */
    const char *qwen2 =
        "{\"architectures\":[\"Qwen2ForCausalLM\"],\"attention_dropout\":0.0,\"bos_token_id\":"
        "151643,"
        "\"eos_token_id\":151645,\"hidden_act\":\"silu\",\"hidden_size\":896,\"initializer_range\":"
        "0.02,"
        "\"intermediate_size\":4864,\"max_position_embeddings\":32768,\"max_window_layers\":21,"
        "\"model_type\":\"qwen2\",\"num_attention_heads\":14,\"num_hidden_layers\":24,"
        "\"num_key_value_heads\":2,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000.0,"
        "\"sliding_window\":32768,\"tie_word_embeddings\":true,\"torch_dtype\":\"bfloat16\","
        "\"use_cache\":true,\"use_sliding_window\":false,\"vocab_size\":151936}";
    CHECK_REPORT(parse(&c, qwen2) == 0, "%s", dp_last_error());
    CHECK_EQ_INT(DP_ARCH_QWEN2, c.arch);
    CHECK_EQ_INT(24, c.L);
    CHECK_EQ_INT(896, c.C);
    CHECK_EQ_INT(4864, c.F);
    CHECK_EQ_INT(14, c.H);
    CHECK_EQ_INT(2, c.KVH);
    CHECK_EQ_INT(64, c.D);
    CHECK_EQ_INT(151936, c.V);
    CHECK_EQ_INT(32768, c.max_position);
    CHECK_NEAR(1e-6, c.rms_eps, 0, 1e-6);
    CHECK_NEAR(1e6, c.rope_theta, 0, 0);
    CHECK(c.tied_embeddings && c.qkv_bias && !c.qk_norm && !c.rope_scaling.llama3);
    CHECK_EQ_INT(151643, c.bos_id);
    CHECK_EQ_INT(1, c.n_eos);
    const char *gen =
        "{\"bos_token_id\":151643,\"do_sample\":true,\"eos_token_id\":[151645,151643],"
        "\"temperature\":0.7,\"top_p\":0.8}";
    CHECK(dp_config_add_generation(&c, gen, strlen(gen), "generation_config.json") == 0);
    CHECK_EQ_INT(2, c.n_eos);
    CHECK(c.eos_ids[0] == 151645 && c.eos_ids[1] == 151643);

    /* SmolLM2-135M-Instruct */
    const char *smol =
        "{\"architectures\":[\"LlamaForCausalLM\"],\"bos_token_id\":1,\"eos_token_id\":2,"
        "\"hidden_act\":\"silu\",\"hidden_size\":576,\"intermediate_size\":1536,"
        "\"max_position_embeddings\":8192,\"model_type\":\"llama\",\"num_attention_heads\":9,"
        "\"num_hidden_layers\":30,\"num_key_value_heads\":3,\"pretraining_tp\":1,"
        "\"rms_norm_eps\":1e-05,\"rope_scaling\":null,\"rope_theta\":100000,"
        "\"tie_word_embeddings\":true,\"vocab_size\":49152}";
    CHECK_REPORT(parse(&c, smol) == 0, "%s", dp_last_error());
    CHECK(c.arch == DP_ARCH_LLAMA && c.L == 30 && c.C == 576 && c.H == 9 && c.KVH == 3 &&
          c.F == 1536 && c.V == 49152 && c.D == 64 && c.tied_embeddings && !c.qkv_bias);
    CHECK_NEAR(1e5, c.rope_theta, 0, 0);
    CHECK(c.n_eos == 1 && c.eos_ids[0] == 2 && c.bos_id == 1);

    /* Llama-3.1-8B-Instruct: llama3 RoPE scaling, untied, eos list */
    const char *llama =
        "{\"model_type\":\"llama\",\"hidden_size\":4096,\"intermediate_size\":14336,"
        "\"num_hidden_layers\":32,\"num_attention_heads\":32,\"num_key_value_heads\":8,"
        "\"rms_norm_eps\":1e-05,\"rope_theta\":500000.0,\"rope_scaling\":{\"factor\":8.0,"
        "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,\"original_max_position_embeddings\":"
        "8192,"
        "\"rope_type\":\"llama3\"},\"max_position_embeddings\":131072,\"vocab_size\":128256,"
        "\"eos_token_id\":[128001,128008,128009],\"bos_token_id\":128000,"
        "\"tie_word_embeddings\":false,\"attention_bias\":false,\"mlp_bias\":false}";
    CHECK_REPORT(parse(&c, llama) == 0, "%s", dp_last_error());
    CHECK(c.rope_scaling.llama3 && c.rope_scaling.factor == 8 &&
          c.rope_scaling.low_freq_factor == 1 && c.rope_scaling.high_freq_factor == 4 &&
          c.rope_scaling.original_max_position == 8192);
    CHECK(!c.tied_embeddings && c.D == 128 && c.n_eos == 3 && c.eos_ids[2] == 128009);

    /* Qwen3-0.6B: explicit head_dim (H * D != C), q/k norms */
    const char *qwen3 =
        "{\"model_type\":\"qwen3\",\"hidden_size\":1024,\"head_dim\":128,"
        "\"intermediate_size\":3072,\"num_hidden_layers\":28,\"num_attention_heads\":16,"
        "\"num_key_value_heads\":8,\"rms_norm_eps\":1e-06,\"rope_theta\":1000000,"
        "\"max_position_embeddings\":40960,\"vocab_size\":151936,\"tie_word_embeddings\":true,"
        "\"attention_bias\":false,\"eos_token_id\":151645,\"bos_token_id\":151643,"
        "\"rope_scaling\":null}";
    CHECK_REPORT(parse(&c, qwen3) == 0, "%s", dp_last_error());
    CHECK(c.arch == DP_ARCH_QWEN3 && c.D == 128 && c.H == 16 && c.qk_norm && !c.qkv_bias);

    /* transformers 5 layout: rope_parameters */
    const char *v5 = "{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                     "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100,"
                     "\"rope_parameters\":{\"rope_theta\":12345.0,\"rope_type\":\"default\"}}";
    CHECK_REPORT(parse(&c, v5) == 0, "%s", dp_last_error());
    CHECK(c.rope_theta == 12345.0f && c.KVH == 4 && !c.rope_scaling.llama3);

    expect_error("{\"model_type\":\"mistral\",\"hidden_size\":64}",
                 "unsupported architecture \"mistral\" (supported: llama, qwen2, qwen3)");
    expect_error("{\"hidden_size\":64}", "no \"model_type\"");
    expect_error("[1]", "not a JSON object");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64}", "missing \"num_hidden_layers\"");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                 "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"num_key_value_heads\":3,"
                 "\"vocab_size\":100}",
                 "not a multiple of num_key_value_heads");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                 "\"num_hidden_layers\":1e12,\"num_attention_heads\":4,\"vocab_size\":100}",
                 "num_hidden_layers");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                 "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100,"
                 "\"rope_scaling\":{\"rope_type\":\"yarn\",\"factor\":4}}",
                 "rope_scaling type \"yarn\" is not supported");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                 "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":100,"
                 "\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8}}",
                 "original_max_position_embeddings");
    expect_error("{\"model_type\":\"llama\",\"hidden_size\":64,\"intermediate_size\":128,"
                 "\"num_hidden_layers\":2,\"num_attention_heads\":4,\"vocab_size\":\"x\"}",
                 "\"vocab_size\" must be an integer");
    return check_done();
}
