/* key.c - gateway keys: made at random, stored only as their SHA-256 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "auth/key.h"

int key_new(char out[KEY_LEN + 1])
{
	static const char b64url[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char raw[33];
	size_t n = 0;

	if (getrandom(raw, 32, 0) != 32)
		return -1;
	raw[32] = 0;
	memcpy(out, KEY_PREFIX, 4);
	n = 4;
	/* 32 bytes are 256 bits: 42 full sextets and 4 bits in the 43rd */
	for (size_t bit = 0; bit < 256; bit += 6) {
		size_t byte = bit / 8, shift = bit % 8;
		unsigned v = ((unsigned)raw[byte] << 8 | raw[byte + 1]) >> (10 - shift);
		out[n++] = b64url[v & 63];
	}
	out[n] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return n == KEY_LEN ? 0 : -1;
}

void key_hash(const char *key, size_t len, char out[KEY_HASH_LEN + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char d[32];
	unsigned dlen = 0;

	EVP_Digest(key, len, d, &dlen, EVP_sha256(), NULL);
	memcpy(out, "sha256:", 7);
	for (size_t i = 0; i < 32; i++) {
		out[7 + 2 * i] = hex[d[i] >> 4];
		out[8 + 2 * i] = hex[d[i] & 15];
	}
	out[KEY_HASH_LEN] = '\0';
}

static void usage(FILE *f)
{
	fputs("usage: meridian key new          make a gateway key; prints it and its hash\n"
	      "       meridian key hash KEY     print the hash of KEY for accounts.<id>.keys\n"
	      "       meridian key hash -       the same, reading KEY from the first line of stdin\n"
	      "\n"
	      "Only the hash goes into the configuration; the key is shown once and stored nowhere.\n",
	      f);
}

int key_main(int argc, char **argv)
{
	char key[KEY_LEN + 1], hash[KEY_HASH_LEN + 1];

	if (argc == 2 && !strcmp(argv[1], "new")) {
		if (key_new(key) < 0) {
			fputs("meridian key: no random bytes from the kernel\n", stderr);
			return 1;
		}
		key_hash(key, KEY_LEN, hash);
		printf("key:  %s\nhash: %s\n", key, hash);
		OPENSSL_cleanse(key, sizeof(key));
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "hash")) {
		char line[4096];
		const char *k = argv[2];
		size_t len;
		if (!strcmp(k, "-")) {
			if (!fgets(line, sizeof(line), stdin)) {
				fputs("meridian key hash: nothing on stdin\n", stderr);
				return 1;
			}
			len = strcspn(line, "\r\n");
			line[len] = '\0';
			k = line;
		}
		len = strlen(k);
		if (!len) {
			fputs("meridian key hash: the key is empty\n", stderr);
			return 1;
		}
		key_hash(k, len, hash);
		puts(hash);
		OPENSSL_cleanse(line, sizeof(line));
		return 0;
	}
	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	usage(stderr);
	return 2;
}
