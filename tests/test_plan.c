/* The memory planner against the published figures in REFERENCE.md section 9 (Qwen2.5-7B:
 * NF4 linears about 3.4 GB, bf16 embeddings + lm_head about 2.2 GB, LoRA r16 on all linears
 * exactly 40,370,176 parameters) and the on-paper targets of issue 7. */
#include "check.h"
#include "train/memplan.h"

static dp_model_config qwen(int L, int C, int H, int KVH, int F, int V, bool tied) {
    return (dp_model_config){.arch = DP_ARCH_QWEN2,
                             .L = L,
                             .C = C,
                             .F = F,
                             .H = H,
                             .KVH = KVH,
                             .D = C / H,
                             .V = V,
                             .tied_embeddings = tied,
                             .qkv_bias = true};
}

int main(void) {
    dp_model_config q7 = qwen(28, 3584, 28, 4, 18944, 152064, false);
    dp_model_config q3 = qwen(36, 2048, 16, 2, 11008, 151936, true);
    dp_train_shape s = dp_train_shape_default();
    s.seq = 4096;
    dp_memplan p;
    CHECK_EQ_INT(0, dp_memplan_build(&p, &q7, &s));
    CHECK_EQ_INT(40370176, p.lora_params);
    CHECK_NEAR(3.4e9, (double)p.by_category[DP_MEM_BASE_NF4], 0.1e9, 0);
    CHECK_NEAR(2.2e9, (double)p.by_category[DP_MEM_BASE_16BIT], 0.05e9, 0);
    /* fp32 weights + grads + m + v: 16 bytes per parameter, about 0.65 GB */
    CHECK_NEAR(0.65e9,
               (double)(p.by_category[DP_MEM_LORA_WEIGHTS] + p.by_category[DP_MEM_LORA_GRADS] +
                        p.by_category[DP_MEM_OPTIMIZER]),
               0.01e9, 0);
    uint64_t sum = 0;
    for (int i = 0; i < p.n; i++) sum += p.items[i].bytes;
    CHECK_EQ_INT(p.total, sum);
    dp_memplan_free(&p);

    /* NF4 + double quantization costs 4 + 8/64 + 32/(64*256) bits per parameter */
    double bits = 8.0 * (double)dp_nf4_size(4096, 4096, 64) / (4096.0 * 4096.0);
    CHECK_NEAR(4.0 + 8.0 / 64 + 32.0 / (64 * 256), bits, 1e-4, 0);

    /* the plan grows with the sequence, and max_seq is exactly the fitting boundary */
    uint64_t vram = 12ull << 30;
    int m7 = dp_memplan_max_seq(&q7, &s, vram), m3 = dp_memplan_max_seq(&q3, &s, vram);
    fprintf(stderr, "  max seq in 12 GiB: Qwen2.5-7B %d, Qwen2.5-3B %d\n", m7, m3);
    CHECK(m7 >= 4096);  /* issue 7's on-paper target */
    CHECK(m3 >= 16384); /* issue 7's on-paper target */
    s.seq = m7;
    dp_memplan_build(&p, &q7, &s);
    CHECK(p.total <= vram);
    dp_memplan_free(&p);
    s.seq = m7 + 1;
    dp_memplan_build(&p, &q7, &s);
    CHECK(p.total > vram);
    dp_memplan_free(&p);

    /* recomputation must save memory at long sequences */
    s.seq = 4096;
    dp_memplan with, without;
    dp_memplan_build(&with, &q7, &s);
    s.recompute = false;
    dp_memplan_build(&without, &q7, &s);
    CHECK(with.by_category[DP_MEM_ACTIVATIONS] < without.by_category[DP_MEM_ACTIVATIONS]);
    dp_memplan_free(&with);
    dp_memplan_free(&without);

    s = dp_train_shape_default();
    s.seq = 0;
    CHECK_EQ_INT(-1, dp_memplan_build(&p, &q7, &s));
    return check_done();
}
