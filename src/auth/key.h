/* key.h - gateway keys: made at random, stored only as their SHA-256 */
#ifndef MERIDIAN_AUTH_KEY_H
#define MERIDIAN_AUTH_KEY_H

#include <stddef.h>

#define KEY_PREFIX "mrd_"
#define KEY_LEN (4 + 43)               /* the prefix and 32 random bytes in base64url */
#define KEY_HASH_LEN (7 + 64)          /* "sha256:" and 64 hex digits */

/* Writes a new key (KEY_LEN chars and a NUL) from the kernel's random source. 0 or -1. */
int key_new(char out[KEY_LEN + 1]);
/* Writes "sha256:<hex of SHA-256(key)>" and a NUL. */
void key_hash(const char *key, size_t len, char out[KEY_HASH_LEN + 1]);

/* `meridian key new | hash KEY | hash -` */
int key_main(int argc, char **argv);

#endif
