/* Counter-based random numbers: every draw is a pure function of (seed, stream, counter), so
 * LoRA init, dropout masks, shuffles and prep's train/val split are reproducible and resumable
 * without carrying generator state (the checkpoint stores the seed and the step). Not a hash
 * (data/base/hash.h is): the values are part of what a seed means, so they never change. */
#ifndef DOPPEL_RNG_H
#define DOPPEL_RNG_H

#include <stdint.h>

static inline uint64_t dp_mix64(uint64_t z) { /* splitmix64 finalizer */
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 64 random bits for (seed, stream, counter). */
static inline uint64_t dp_rng_bits(uint64_t seed, uint64_t stream, uint64_t counter) {
    return dp_mix64(dp_mix64(seed ^ dp_mix64(stream)) ^ counter);
}

/* Uniform float in [0, 1) with 24 random bits. */
static inline float dp_rng_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
    return (float)(dp_rng_bits(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

#endif
