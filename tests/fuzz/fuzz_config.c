/* fuzz_config.c - libFuzzer target: the config loader on arbitrary bytes, no crash, no leak */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct conf *c;

	/* so that inject auth with key_env can load; key_file and ca_file reach only reads */
	setenv("MERIDIAN_FUZZ_KEY", "fuzz-key", 0);
	c = conf_load_string((const char *)data, size, "fuzz.yaml", err, sizeof(err));
	if (c) {
		struct buf out = BUF_INIT;
		conf_describe(c, &out);
		buf_release(&out);
		conf_unref(conf_ref(c));
		conf_unref(c);
	}
	return 0;
}
