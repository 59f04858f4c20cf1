/* What the attention sandboxes share: the packed-sequence shape (B ragged sequences, the
 * longest T, heads H, kv heads KVH, head dim D) parsed from the command line, and its
 * cu_seqlens. */
#ifndef DOPPEL_SANDBOX_ATTENTION_SHAPE_CUH
#define DOPPEL_SANDBOX_ATTENTION_SHAPE_CUH

#include "dev/cuda/sandbox.cuh"

#define SB_ATT_MAXD 128

struct sb_att_shape {
    int B, T, H, KVH, D, G, N; /* G = H / KVH; N = packed rows */
    int32_t *cu;               /* (B + 1) host row offsets; sequence s has T - s*floor(T/2B) rows */
};

/* Parses the options into *o and the shape into *a; exits 2 on a shape the kernels refuse.
 * Returns the program description the sweep and the summary take. */
static inline sb_program sb_att_parse(int argc, char **argv, const char *name,
                                      const char *const *variants, int nvariants, sb_opts *o,
                                      sb_att_shape *a) {
    static const int defaults[] = {4, 1024, 28, 4, 128}; /* Qwen2.5-7B heads, 4 packed sequences */
    static const int emu_defaults[] = {2, 21, 4, 2, 40}; /* small and ragged: seconds under EMU */
    sb_program p = {name,
                    "B,T,H,KVH,D",
                    "sequences B (sequence s has T - s*floor(T/2B) rows), longest T, heads H, "
                    "kv heads KVH, head dim D <= 128",
                    5,
                    defaults,
                    emu_defaults,
                    variants,
                    nvariants};
    sb_parse(argc, argv, p, o);
    a->B = o->shape[0], a->T = o->shape[1], a->H = o->shape[2], a->KVH = o->shape[3];
    a->D = o->shape[4];
    if (a->H % a->KVH || a->D > SB_ATT_MAXD || a->B > 2 * a->T) {
        fprintf(stderr, "sandbox_%s: need H %% KVH == 0, D <= %d, B <= 2T\n", name, SB_ATT_MAXD);
        exit(2);
    }
    a->G = a->H / a->KVH;
    a->cu = (int32_t *)malloc((a->B + 1) * sizeof(int32_t));
    a->cu[0] = 0;
    for (int s = 0; s < a->B; s++) a->cu[s + 1] = a->cu[s] + a->T - s * (a->T / (2 * a->B));
    a->N = a->cu[a->B];
    return p;
}

#endif
