/* fuzz_json.c - request body validation: accepted bodies re-serialise to an equal object */
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "api/surface.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct api_route route = {.ep = API_EP_CHAT, .format = API_OPENAI, .json_body = true,
				  .needs_model = true};
	struct api_body facts;
	const char *param;
	char err[256];

	json_t *j = api_parse_body((const char *)data, size, &route, &facts, err, sizeof(err), &param);
	if (!j)
		return 0;
	if (!facts.model)
		abort();
	char *out = json_dumps(j, JSON_COMPACT);
	if (!out)
		abort();
	json_error_t jerr;
	json_t *again = json_loads(out, JSON_REJECT_DUPLICATES, &jerr);
	if (!again || !json_equal(j, again))
		abort();
	json_decref(again);
	free(out);
	json_decref(j);
	return 0;
}
