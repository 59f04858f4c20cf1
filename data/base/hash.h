/* The one 64-bit hash of doppel: xxHash's XXH3 (libxxhash), for hash-table slots, cache keys and
 * fingerprints. Its values are not a file format: what stores one (the tokenized-batch cache
 * key, doppel.json's model and tokenizer fingerprints) recomputes it with the same build.
 * The counter-based random numbers are not hashes: see data/base/rng.h. */
#ifndef DOPPEL_HASH_H
#define DOPPEL_HASH_H

#include <stddef.h>
#include <stdint.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack for streamed fingerprints */
#include <xxhash.h>

/* Hash of len bytes. Chained calls hash a sequence of pieces:
 * h = dp_hash_bytes(b, nb, dp_hash_bytes(a, na, seed)). */
static inline uint64_t dp_hash_bytes(const void *data, size_t len, uint64_t seed) {
    return XXH3_64bits_withSeed(data, len, seed);
}

/* Hash of one 64-bit key (table slots keyed by ids or id pairs). */
static inline uint64_t dp_hash_u64(uint64_t key) {
    return XXH3_64bits(&key, sizeof key);
}

/* Content hash of a file, streamed (the decompressed bytes of a .zst); -1 with dp_fail. */
int dp_hash_file(const char *path, uint64_t *hash);

#endif
