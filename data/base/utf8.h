/* UTF-8 helpers shared by the export readers and the tokenizer. */
#ifndef DOPPEL_UTF8_H
#define DOPPEL_UTF8_H

#include <stddef.h>

/* Length of the longest valid UTF-8 prefix (== n when all of s is valid). */
size_t dp_utf8_valid_prefix(const char *s, size_t n);

#endif
