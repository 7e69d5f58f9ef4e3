/* test_xlate.c - OpenAI <-> Anthropic translation: requests, refusals, answers, errors, streams */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/buf.h"
#include "http/sse.h"
#include "core/alloc.h"
#include "xlate/scan.h"
#include "xlate/xlate.h"

/* ---- helpers ---- */

/* JSON written with single quotes (readable in C) made real: ' becomes ". Test data holds no
 * apostrophes; \u0027 spells one. */
static json_t *J(const char *sq)
{
	char *s = strdup(sq);
	json_error_t e;
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	json_t *j = json_loads(s, 0, &e);
	if (!j)
		fail_msg("bad test JSON at %d: %s\n%s", e.position, e.text, s);
	free(s);
	return j;
}

/* Asserts got equals the single-quoted expected JSON; steals got. */
static void expect_json(json_t *got, const char *sq)
{
	json_t *want = J(sq);
	if (!json_equal(got, want)) {
		char *g = json_dumps(got, JSON_SORT_KEYS | JSON_INDENT(1));
		char *w = json_dumps(want, JSON_SORT_KEYS | JSON_INDENT(1));
		print_error("got:\n%s\nwant:\n%s\n", g ? g : "NULL", w);
		free(g);
		free(w);
		json_decref(want);
		json_decref(got);
		fail();
	}
	json_decref(want);
	json_decref(got);
}

static json_t *translate(enum api_format from, const char *sq, struct xlate_req *info)
{
	struct xlate_refusal why;
	json_t *req = J(sq);
	json_t *out = xlate_request(from, req, info, &why);
	json_decref(req);
	if (!out)
		fail_msg("refused: %s (param %s)", why.message, why.param);
	return out;
}

/* Asserts the request is refused naming param, and that the message names it too. */
static void expect_refusal(enum api_format from, const char *sq, const char *param)
{
	struct xlate_refusal why;
	json_t *req = J(sq);
	json_t *out = xlate_request(from, req, NULL, &why);
	json_decref(req);
	if (out) {
		char *s = json_dumps(out, JSON_COMPACT);
		json_decref(out);
		fail_msg("not refused (want '%s'): %s", param, s);
	}
	assert_string_equal(why.param, param);
	char quoted[160];
	snprintf(quoted, sizeof(quoted), "'%s'", param);
	assert_non_null(strstr(why.message, quoted));
}

/* ---- OpenAI client -> Anthropic upstream: requests ---- */

static void test_openai_request_full(void **state)
{
	struct xlate_req info = {0};
	json_t *out = translate(API_OPENAI,
		"{'model':'claude-sonnet-4-5','messages':["
		" {'role':'system','content':'You are terse.'},"
		" {'role':'developer','content':[{'type':'text','text':'Answer in French.'}]},"
		" {'role':'user','content':[{'type':'text','text':'What is in these?'},"
		"  {'type':'image_url','image_url':{'url':'https://example.com/cat.png'}},"
		"  {'type':'image_url','image_url':{'url':'data:image/png;base64,iVBORw0KGgo=',"
		"   'detail':'auto'}}]},"
		" {'role':'assistant','content':'A cat and a dot.'},"
		" {'role':'user','content':'Weather in Paris and Rome?'},"
		" {'role':'assistant','content':null,'refusal':null,'tool_calls':["
		"  {'id':'call_1','type':'function','function':{'name':'get_weather',"
		"   'arguments':'{\\'city\\':\\'Paris\\'}'}},"
		"  {'id':'call_2','type':'function','function':{'name':'get_weather',"
		"   'arguments':'{\\'city\\':\\'Rome\\'}'}}]},"
		" {'role':'tool','tool_call_id':'call_1','content':'18C sunny'},"
		" {'role':'tool','tool_call_id':'call_2','content':[{'type':'text','text':'21C'}]},"
		" {'role':'user','content':'Thanks. Which is warmer?'}],"
		"'tools':[{'type':'function','function':{'name':'get_weather',"
		" 'description':'Current weather','parameters':{'type':'object',"
		" 'properties':{'city':{'type':'string'}},'required':['city']},'strict':false}},"
		" {'type':'function','function':{'name':'now'}}],"
		"'tool_choice':'required','parallel_tool_calls':false,"
		"'max_completion_tokens':300,'temperature':0.5,'top_p':0.9,"
		"'stop':['END','STOP'],'stream':true,'stream_options':{'include_usage':true},"
		"'user':'user-42','n':1,'logprobs':false,'presence_penalty':0,"
		"'response_format':{'type':'text'},'store':false,'service_tier':'auto',"
		"'prompt_cache_key':'conv-7'}", &info);
	expect_json(
		out,
		"{'model':'claude-sonnet-4-5',"
		"'system':[{'type':'text','text':'You are terse.'},"
		"  {'type':'text','text':'Answer in French.'}],"
		"'messages':["
		" {'role':'user','content':[{'type':'text','text':'What is in these?'},"
		"  {'type':'image','source':{'type':'url','url':'https://example.com/cat.png'}},"
		"  {'type':'image','source':{'type':'base64','media_type':'image/png',"
		"   'data':'iVBORw0KGgo='}}]},"
		" {'role':'assistant','content':[{'type':'text','text':'A cat and a dot.'}]},"
		" {'role':'user','content':[{'type':'text','text':'Weather in Paris and Rome?'}]},"
		" {'role':'assistant','content':["
		"  {'type':'tool_use','id':'call_1','name':'get_weather','input':{'city':'Paris'}},"
		"  "
		"{'type':'tool_use','id':'call_2','name':'get_weather','input':{'city':'Rome'}}]},"
		" {'role':'user','content':["
		"  {'type':'tool_result','tool_use_id':'call_1','content':'18C sunny'},"
		"  "
		"{'type':'tool_result','tool_use_id':'call_2','content':[{'type':'text','text':'"
		"21C'}]},"
		"  {'type':'text','text':'Thanks. Which is warmer?'}]}],"
		"'max_tokens':300,'temperature':0.5,'top_p':0.9,'stop_sequences':['END','STOP'],"
		"'stream':true,'metadata':{'user_id':'user-42'},"
		"'tools':[{'name':'get_weather','description':'Current weather','input_schema':"
		"  {'type':'object','properties':{'city':{'type':'string'}},'required':['city']}},"
		" {'name':'now','input_schema':{'type':'object','properties':{}}}],"
		"'tool_choice':{'type':'any','disable_parallel_tool_use':true}}");
	assert_true(info.stream);
	assert_true(info.include_usage);
	assert_string_equal(xlate_upstream_path(API_OPENAI), "/v1/messages");
}

static void test_openai_request_defaults(void **state)
{
	struct xlate_req info = {true, true};
	/* no maximum: Anthropic requires one, the documented default goes up; one system string
	 * stays a string; stop as a string; max_tokens (the older name) is read too */
	expect_json(translate(API_OPENAI,
		"{'model':'m','messages':[{'role':'system','content':'Be kind.'},"
		"{'role':'user','content':'Hi'}],'stop':'\\n\\n'}", &info),
		"{'model':'m','system':'Be kind.','messages':[{'role':'user','content':"
		"[{'type':'text','text':'Hi'}]}],'max_tokens':4096,'stop_sequences':['\\n\\n']}");
	assert_false(info.stream);
	assert_false(info.include_usage);
	expect_json(translate(API_OPENAI,
		"{'model':'m','messages':[{'role':'user','content':'Hi'}],'max_tokens':7,"
		"'safety_identifier':'u1','user':'u1','temperature':1}", NULL),
		"{'model':'m','messages':[{'role':'user','content':[{'type':'text','text':'Hi'}]}],"
		"'max_tokens':7,'temperature':1,'metadata':{'user_id':'u1'}}");
}

static void test_openai_tool_choice(void **state)
{
	static const char *const cases[][2] = {
		{"'auto'", "{'type':'auto'}"},
		{"'none'", "{'type':'none'}"},
		{"{'type':'function','function':{'name':'f'}}", "{'type':'tool','name':'f'}"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char req[512], want[512];
		snprintf(req, sizeof(req),
			 "{'model':'m','messages':[{'role':'user','content':'x'}],"
			 "'tools':[{'type':'function','function':{'name':'f','parameters':"
			 "{'type':'object'}}}],'tool_choice':%s}",
			 cases[i][0]);
		snprintf(want, sizeof(want), "{'model':'m','messages':[{'role':'user','content':"
			 "[{'type':'text','text':'x'}]}],'max_tokens':4096,'tools':[{'name':'f',"
			 "'input_schema':{'type':'object'}}],'tool_choice':%s}", cases[i][1]);
		expect_json(translate(API_OPENAI, req, NULL), want);
	}
	/* parallel_tool_calls false alone still reaches Anthropic, inside an auto choice */
	expect_json(
		translate(API_OPENAI,
			  "{'model':'m','messages':[{'role':'user','content':'x'}],"
			  "'tools':[{'type':'function','function':{'name':'f'}}],'parallel_tool_"
			  "calls':false}",
			  NULL),
		"{'model':'m','messages':[{'role':'user','content':[{'type':'text','text':'x'}]}],"
		"'max_tokens':4096,'tools':[{'name':'f','input_schema':{'type':'object',"
		"'properties':{}}}],'tool_choice':{'type':'auto','disable_parallel_tool_use':true}"
		"}");
}

#define OA_BASE "'model':'m','messages':[{'role':'user','content':'hi'}]"

static void test_openai_refusals(void **state)
{
	static const char *const cases[][2] = {
		{"{" OA_BASE ",'n':2}", "n"},
		{"{" OA_BASE ",'logprobs':true}", "logprobs"},
		{"{" OA_BASE ",'top_logprobs':3}", "top_logprobs"},
		{"{" OA_BASE ",'response_format':{'type':'json_schema','json_schema':{'name':'x',"
		 "'schema':{'type':'object'}}}}",
		 "response_format"},
		{"{" OA_BASE ",'response_format':{'type':'json_object'}}", "response_format"},
		{"{" OA_BASE ",'temperature':1.5}", "temperature"},
		{"{" OA_BASE ",'seed':7}", "seed"},
		{"{" OA_BASE ",'frequency_penalty':0.5}", "frequency_penalty"},
		{"{" OA_BASE ",'logit_bias':{'50256':-100}}", "logit_bias"},
		{"{" OA_BASE ",'store':true}", "store"},
		{"{" OA_BASE ",'reasoning_effort':'high'}", "reasoning_effort"},
		{"{" OA_BASE ",'audio':{'voice':'alloy','format':'mp3'}}", "audio"},
		{"{" OA_BASE ",'modalities':['text','audio']}", "modalities"},
		{"{" OA_BASE ",'functions':[{'name':'f'}]}", "functions"},
		{"{" OA_BASE ",'service_tier':'flex'}", "service_tier"},
		{"{" OA_BASE ",'stream':true,'stream_options':{'include_obfuscation':true}}",
		 "stream_options.include_obfuscation"},
		{"{" OA_BASE ",'user':'a','safety_identifier':'b'}", "safety_identifier"},
		{"{" OA_BASE ",'max_tokens':0}", "max_tokens"},
		{"{" OA_BASE ",'tools':[{'type':'custom','custom':{'name':'g'}}]}",
		 "tools[0].type"},
		{"{" OA_BASE
		 ",'tools':[{'type':'function','function':{'name':'f','strict':true}}]}",
		 "tools[0].function.strict"},
		{"{" OA_BASE ",'tool_choice':{'type':'allowed_tools','allowed_tools':{}}}",
		 "tool_choice"},
		{"{'model':'m','messages':[{'role':'user','name':'bob','content':'hi'}]}",
		 "messages[0].name"},
		{"{'model':'m','messages':[{'role':'user','content':'hi'},"
		 "{'role':'system','content':'late'},{'role':'user','content':'x'}]}",
		 "messages[1].role"},
		{"{'model':'m','messages':[{'role':'user','content':'hi'},"
		 "{'role':'assistant','content':'Sure,'}]}",
		 "messages[1].role"},
		{"{'model':'m','messages':[{'role':'system','content':'only'}]}", "messages"},
		{"{'model':'m','messages':[{'role':'function','name':'f','content':'x'}]}",
		 "messages[0].name"},
		{"{'model':'m','messages':[{'role':'user','content':[{'type':'image_url',"
		 "'image_url':{'url':'https://x/y.png','detail':'high'}}]}]}",
		 "messages[0].content[0].image_url.detail"},
		{"{'model':'m','messages':[{'role':'user','content':[{'type':'input_audio',"
		 "'input_audio':{'data':'AAA','format':'wav'}}]}]}",
		 "messages[0].content[0].type"},
		{"{'model':'m','messages':[{'role':'user','content':[{'type':'image_url',"
		 "'image_url':{'url':'ftp://x/y.png'}}]}]}",
		 "messages[0].content[0].image_url.url"},
		{"{'model':'m','messages':[{'role':'user','content':'x'},{'role':'assistant',"
		 "'tool_calls':[{'id':'c','type':'function','function':{'name':'f',"
		 "'arguments':'{oops'}}]},{'role':'tool','tool_call_id':'c','content':'r'}]}",
		 "messages[1].tool_calls[0].function.arguments"},
		{"{'model':'m','messages':[{'role':'user','content':'x'},{'role':'assistant',"
		 "'content':'no','refusal':'I cannot'},{'role':'user','content':'y'}]}",
		 "messages[1].refusal"},
		{"{'model':'m','messages':[{'role':'user','content':'x'},{'role':'assistant',"
		 "'content':[{'type':'refusal','refusal':'no'}]},{'role':'user','content':'y'}]}",
		 "messages[1].content[0].type"},
		{"{'model':'m','messages':[{'role':'tool','content':'r'}]}",
		 "messages[0].tool_call_id"},
		{"{'messages':[{'role':'user','content':'x'}]}", "model"},
		{"{'model':'m','messages':'hi'}", "messages"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_refusal(API_OPENAI, cases[i][0], cases[i][1]);
}

/* ---- Anthropic client -> OpenAI upstream: requests ---- */

static void test_anthropic_request_full(void **state)
{
	struct xlate_req info = {0};
	json_t *out = translate(
		API_ANTHROPIC,
		"{'model':'grok-4','max_tokens':1024,"
		"'system':[{'type':'text','text':'You are "
		"terse.','cache_control':{'type':'ephemeral'}},"
		" {'type':'text','text':'Answer in French.'}],"
		"'messages':["
		" {'role':'user','content':[{'type':'text','text':'What is this?'},"
		"  "
		"{'type':'image','source':{'type':'base64','media_type':'image/jpeg','data':'/9j/"
		"4AA='}},"
		"  {'type':'image','source':{'type':'url','url':'https://example.com/a.png'}}]},"
		" {'role':'assistant','content':[{'type':'text','text':'Checking.'},"
		"  "
		"{'type':'tool_use','id':'toolu_1','name':'get_weather','input':{'city':'Paris'}},"
		"  {'type':'tool_use','id':'toolu_2','name':'get_weather','input':{}}]},"
		" {'role':'user','content':["
		"  {'type':'tool_result','tool_use_id':'toolu_1','content':'18C'},"
		"  {'type':'tool_result','tool_use_id':'toolu_2','is_error':false,"
		"   'content':[{'type':'text','text':'21'},{'type':'text','text':'C'}]},"
		"  {'type':'text','text':'Which is "
		"warmer?','cache_control':{'type':'ephemeral'}}]},"
		" {'role':'assistant','content':'Rome.'},"
		" {'role':'user','content':'Why?'}],"
		"'tools':[{'name':'get_weather','description':'Current weather','input_schema':"
		" {'type':'object','properties':{'city':{'type':'string'}}},"
		" 'cache_control':{'type':'ephemeral'}}],"
		"'tool_choice':{'type':'any','disable_parallel_tool_use':true},"
		"'stop_sequences':['END'],'temperature':0.2,'top_p':0.8,"
		"'metadata':{'user_id':'u-9'},'stream':true,'thinking':{'type':'disabled'},"
		"'service_tier':'auto'}",
		&info);
	expect_json(out,
		"{'model':'grok-4','messages':["
		" {'role':'system','content':[{'type':'text','text':'You are terse.'},"
		"  {'type':'text','text':'Answer in French.'}]},"
		" {'role':'user','content':[{'type':'text','text':'What is this?'},"
		"  {'type':'image_url','image_url':{'url':'data:image/jpeg;base64,/9j/4AA='}},"
		"  {'type':'image_url','image_url':{'url':'https://example.com/a.png'}}]},"
		" {'role':'assistant','content':'Checking.','tool_calls':["
		"  {'id':'toolu_1','type':'function','function':{'name':'get_weather',"
		"   'arguments':'{\\'city\\':\\'Paris\\'}'}},"
		"  {'id':'toolu_2','type':'function','function':{'name':'get_weather',"
		"   'arguments':'{}'}}]},"
		" {'role':'tool','tool_call_id':'toolu_1','content':'18C'},"
		" {'role':'tool','tool_call_id':'toolu_2','content':[{'type':'text','text':'21'},"
		"  {'type':'text','text':'C'}]},"
		" {'role':'user','content':'Which is warmer?'},"
		" {'role':'assistant','content':'Rome.'},"
		" {'role':'user','content':'Why?'}],"
		"'max_tokens':1024,'temperature':0.2,'top_p':0.8,'stop':['END'],"
		"'stream':true,'stream_options':{'include_usage':true},'user':'u-9',"
		"'tools':[{'type':'function','function':{'name':'get_weather',"
		" 'description':'Current weather','parameters':{'type':'object',"
		" 'properties':{'city':{'type':'string'}}}}}],"
		"'tool_choice':'required','parallel_tool_calls':false}");
	assert_true(info.stream);
	assert_false(info.include_usage);
	assert_string_equal(xlate_upstream_path(API_ANTHROPIC), "/v1/chat/completions");
}

static void test_anthropic_request_small(void **state)
{
	/* a string system prompt; tool_choice forms */
	expect_json(translate(API_ANTHROPIC,
			      "{'model':'m','max_tokens':5,'system':'Be brief.',"
			      "'messages':[{'role':'user','content':'Hi'}],"
			      "'tools':[{'type':'custom','name':'f','input_schema':{'type':'object'"
			      "},'strict':true}],"
			      "'tool_choice':{'type':'tool','name':'f'}}",
			      NULL),
		    "{'model':'m','messages':[{'role':'system','content':'Be brief.'},"
		    "{'role':'user','content':'Hi'}],'max_tokens':5,'tools':[{'type':'function',"
		    "'function':{'name':'f','parameters':{'type':'object'},'strict':true}}],"
		    "'tool_choice':{'type':'function','function':{'name':'f'}}}");
	expect_json(translate(API_ANTHROPIC,
			      "{'model':'m','max_tokens':5,"
			      "'messages':[{'role':'user','content':'Hi'}],'tools':[{'name':'f','"
			      "input_schema':{}}],"
			      "'tool_choice':{'type':'none'}}",
			      NULL),
		    "{'model':'m','messages':[{'role':'user','content':'Hi'}],'max_tokens':5,"
		    "'tools':[{'type':'function','function':{'name':'f','parameters':{}}}],"
		    "'tool_choice':'none'}");
	expect_json(translate(API_ANTHROPIC, "{'model':'m','max_tokens':5,"
		"'messages':[{'role':'user','content':'Hi'}],'tool_choice':{'type':'auto'}}", NULL),
		"{'model':'m','messages':[{'role':'user','content':'Hi'}],'max_tokens':5,"
		"'tool_choice':'auto'}");
}

#define AN_BASE "'model':'m','max_tokens':10,'messages':[{'role':'user','content':'hi'}]"

static void test_anthropic_refusals(void **state)
{
	static const char *const cases[][2] = {
		{"{" AN_BASE ",'thinking':{'type':'enabled','budget_tokens':2048}}", "thinking"},
		{"{" AN_BASE ",'top_k':40}", "top_k"},
		{"{" AN_BASE ",'service_tier':'standard_only'}", "service_tier"},
		{"{" AN_BASE ",'container':'c1'}", "container"},
		{"{" AN_BASE ",'mcp_servers':[]}", "mcp_servers"},
		{"{" AN_BASE ",'metadata':{'user_id':'u','session':'s'}}", "metadata.session"},
		{"{" AN_BASE ",'stop_sequences':['a','b','c','d','e']}", "stop_sequences"},
		{"{" AN_BASE ",'tools':[{'type':'web_search_20250305','name':'web_search'}]}",
		 "tools[0].type"},
		{"{" AN_BASE ",'tools':[{'name':'f'}]}", "tools[0].input_schema"},
		{"{" AN_BASE ",'tool_choice':{'type':'sometimes'}}", "tool_choice.type"},
		{"{'model':'m','messages':[{'role':'user','content':'hi'}]}", "max_tokens"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':'hi'},"
		 "{'role':'assistant','content':'The answer is'}]}",
		 "messages[1].role"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':["
		 "{'type':'tool_result','tool_use_id':'t','is_error':true,'content':'boom'}]}]}",
		 "messages[0].content[0].is_error"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':["
		 "{'type':'tool_result','tool_use_id':'t','content':[{'type':'image','source':"
		 "{'type':'url','url':'https://x/y.png'}}]}]}]}",
		 "messages[0].content[0].content[0].type"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':["
		 "{'type':'document','source':{'type':'text','media_type':'text/"
		 "plain','data':'x'}}]}]}",
		 "messages[0].content[0].type"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':["
		 "{'type':'image','source':{'type':'file','file_id':'f1'}}]}]}",
		 "messages[0].content[0].source"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':'q'},"
		 "{'role':'assistant','content':[{'type':'thinking','thinking':'hmm','signature':'"
		 "s'},"
		 "{'type':'text','text':'a'}]},{'role':'user','content':'q2'}]}",
		 "messages[1].content[0].type"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'user','content':["
		 "{'type':'text','text':'x','citations':[{'type':'char_location'}]}]}]}",
		 "messages[0].content[0].citations"},
		{"{'model':'m','max_tokens':10,'messages':[{'role':'system','content':'x'}]}",
		 "messages[0].role"},
		{"{'model':'m','max_tokens':10,'system':[{'type':'image','source':{}}],"
		 "'messages':[{'role':'user','content':'x'}]}",
		 "system[0].type"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_refusal(API_ANTHROPIC, cases[i][0], cases[i][1]);
}

/* ---- whole answers ---- */

static void test_response_openai_to_anthropic(void **state)
{
	json_t *resp =
		J("{'id':'chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT','object':'chat.completion',"
		  "'created':1741569952,'model':'gpt-4.1-2025-04-14','choices':[{'index':0,"
		  "'message':{'role':'assistant','content':'Hello! How can I assist you today?',"
		  "'refusal':null,'annotations':[]},'logprobs':null,'finish_reason':'stop'}],"
		  "'usage':{'prompt_tokens':19,'completion_tokens':10,'total_tokens':29,"
		  "'prompt_tokens_details':{'cached_tokens':4,'audio_tokens':0}},"
		  "'service_tier':'default'}");
	json_t *out = xlate_response(API_ANTHROPIC, resp, "claude-via-gpt", "req-1");
	json_t *again = xlate_response(API_ANTHROPIC, resp, "claude-via-gpt", "req-1");
	json_t *other = xlate_response(API_ANTHROPIC, resp, NULL, "req-2");
	const char *id = json_string_value(json_object_get(out, "id"));
	assert_non_null(id);
	assert_int_equal(strlen(id), 28);
	assert_memory_equal(id, "msg_", 4);
	/* deterministic from the seed, different for another */
	assert_string_equal(id, json_string_value(json_object_get(again, "id")));
	assert_string_not_equal(id, json_string_value(json_object_get(other, "id")));
	assert_string_equal(json_string_value(json_object_get(other, "model")),
			    "gpt-4.1-2025-04-14");
	json_object_del(out, "id");
	expect_json(out, "{'type':'message','role':'assistant','model':'claude-via-gpt',"
		"'content':[{'type':'text','text':'Hello! How can I assist you today?'}],"
		"'stop_reason':'end_turn','stop_sequence':null,'usage':{'input_tokens':15,"
		"'cache_creation_input_tokens':0,'cache_read_input_tokens':4,'output_tokens':10}}");
	json_decref(again);
	json_decref(other);
	json_decref(resp);

	/* tool calls, cut by length */
	resp = J("{'id':'x','object':'chat.completion','created':1,'model':'gpt-4o','choices':[{"
		"'index':0,'message':{'role':'assistant','content':null,'tool_calls':["
		"{'id':'call_abc','type':'function','function':{'name':'get_weather',"
		"'arguments':'{\\'location\\':\\'Boston, MA\\'}'}},"
		"{'type':'function','function':{'name':'now','arguments':''}}]},"
		"'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':82,'completion_tokens':17,"
		"'total_tokens':99}}");
	out = xlate_response(API_ANTHROPIC, resp, NULL, "req-1");
	json_object_del(out, "id");
	/* a call without an id gets a generated one, the same every time */
	json_t *content = json_object_get(out, "content");
	const char *gen = json_string_value(json_object_get(json_array_get(content, 1), "id"));
	assert_non_null(gen);
	assert_memory_equal(gen, "toolu_", 6);
	json_object_del(json_array_get(content, 1), "id");
	expect_json(out, "{'type':'message','role':'assistant','model':'gpt-4o','content':["
		"{'type':'tool_use','id':'call_abc','name':'get_weather','input':"
		"{'location':'Boston, MA'}},{'type':'tool_use','name':'now','input':{}}],"
		"'stop_reason':'tool_use','stop_sequence':null,'usage':{'input_tokens':82,"
		"'cache_creation_input_tokens':0,'cache_read_input_tokens':0,'output_tokens':17}}");
	json_decref(resp);

	static const char *const finishes[][2] = {
		{"length", "max_tokens"}, {"content_filter", "refusal"}, {"stop", "end_turn"},
	};
	for (size_t i = 0; i < 3; i++) {
		char body[256];
		snprintf(body, sizeof(body), "{'choices':[{'index':0,'message':{'role':'assistant',"
			 "'content':'x'},'finish_reason':'%s'}]}", finishes[i][0]);
		resp = J(body);
		out = xlate_response(API_ANTHROPIC, resp, "m", NULL);
		assert_string_equal(json_string_value(json_object_get(out, "stop_reason")),
				    finishes[i][1]);
		json_decref(out);
		json_decref(resp);
	}
	/* cached tokens beyond the prompt (a confused upstream) never make input negative */
	resp = J("{'choices':[{'index':0,'message':{'role':'assistant','content':'x'},"
		 "'finish_reason':'stop'}],'usage':{'prompt_tokens':3,'completion_tokens':1,"
		 "'prompt_tokens_details':{'cached_tokens':9}}}");
	out = xlate_response(API_ANTHROPIC, resp, "m", NULL);
	expect_json(
		json_incref(json_object_get(out, "usage")),
		"{'input_tokens':0,"
		"'cache_creation_input_tokens':0,'cache_read_input_tokens':3,'output_tokens':1}");
	json_decref(out);
	json_decref(resp);
	/* a refusal is text, stopped for refusal */
	resp = J("{'choices':[{'index':0,'message':{'role':'assistant','content':null,"
		 "'refusal':'I can\\u0027t help with that.'},'finish_reason':'stop'}]}");
	out = xlate_response(API_ANTHROPIC, resp, "m", NULL);
	json_object_del(out, "id");
	json_object_del(out, "usage");
	expect_json(out, "{'type':'message','role':'assistant','model':'m','content':[{'type':"
		"'text','text':'I can\\u0027t help with that.'}],'stop_reason':'refusal',"
		"'stop_sequence':null}");
	json_decref(resp);
	/* not translatable: arguments that are not an object, no choices */
	resp = J("{'choices':[{'index':0,'message':{'role':'assistant','tool_calls':[{'id':'c',"
		 "'type':'function','function':{'name':'f','arguments':'[1,2'}}]},"
		 "'finish_reason':'tool_calls'}]}");
	assert_null(xlate_response(API_ANTHROPIC, resp, "m", NULL));
	json_decref(resp);
	resp = J("{'object':'list','data':[]}");
	assert_null(xlate_response(API_ANTHROPIC, resp, "m", NULL));
	json_decref(resp);
}

static void test_response_anthropic_to_openai(void **state)
{
	json_t *resp = J("{'id':'msg_01XFDUDYJgAACzvnptvVoYEL','type':'message','role':'assistant',"
		"'model':'claude-sonnet-4-5-20250929','content':[{'type':'text','text':"
		"'I will check.'},{'type':'tool_use','id':'toolu_01A09q90qw90lq917835lq9',"
		"'name':'get_weather','input':{'location':'San Francisco, CA','unit':'celsius'}}],"
		"'stop_reason':'tool_use','stop_sequence':null,'usage':{'input_tokens':472,"
		"'cache_creation_input_tokens':100,'cache_read_input_tokens':2000,"
		"'output_tokens':89}}");
	json_t *out = xlate_response(API_OPENAI, resp, "gpt-via-claude", "req-1");
	const char *id = json_string_value(json_object_get(out, "id"));
	assert_non_null(id);
	assert_memory_equal(id, "chatcmpl-", 9);
	assert_int_equal(strlen(id), 33);
	assert_true(json_integer_value(json_object_get(out, "created")) > 1700000000);
	json_object_del(out, "id");
	json_object_del(out, "created");
	expect_json(out, "{'object':'chat.completion','model':'gpt-via-claude','choices':[{"
		"'index':0,'message':{'role':'assistant','content':'I will check.','tool_calls':["
		"{'id':'toolu_01A09q90qw90lq917835lq9','type':'function','function':{'name':"
		"'get_weather','arguments':'{\\'location\\':\\'San Francisco, CA\\',\\'unit\\':"
		"\\'celsius\\'}'}}],'refusal':null},'logprobs':null,'finish_reason':'tool_calls'}],"
		"'usage':{'prompt_tokens':2572,'completion_tokens':89,'total_tokens':2661,"
		"'prompt_tokens_details':{'cached_tokens':2000}}}");
	json_decref(resp);

	static const char *const stops[][2] = {
		{"end_turn", "stop"}, {"stop_sequence", "stop"}, {"max_tokens", "length"},
		{"refusal", "content_filter"},
	};
	for (size_t i = 0; i < 4; i++) {
		char body[256];
		snprintf(body, sizeof(body),
			 "{'type':'message','model':'c','content':[{'type':'text',"
			 "'text':'a'},{'type':'text','text':'b'}],'stop_reason':'%s'}",
			 stops[i][0]);
		resp = J(body);
		out = xlate_response(API_OPENAI, resp, NULL, "s");
		const json_t *ch = json_array_get(json_object_get(out, "choices"), 0);
		assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")),
				    stops[i][1]);
		assert_string_equal(json_string_value(json_object_get(
					    json_object_get(ch, "message"), "content")),
				    "ab");
		assert_string_equal(json_string_value(json_object_get(out, "model")), "c");
		json_decref(out);
		json_decref(resp);
	}
	resp = J("{'type':'message','content':[{'type':'server_tool_use','id':'s','name':'w',"
		 "'input':{}}],'stop_reason':'end_turn'}");
	assert_null(xlate_response(API_OPENAI, resp, "m", NULL));
	json_decref(resp);
}

/* ---- errors ---- */

static void expect_error(enum api_format to, int status, const char *body, const char *want)
{
	struct buf out = BUF_INIT;
	assert_int_equal(xlate_error(to, status, body, body ? strlen(body) : 0, &out), status);
	json_t *got = json_loadb(out.data, out.len, 0, NULL);
	assert_non_null(got);
	expect_json(got, want);
	buf_release(&out);
}

static void test_errors(void **state)
{
	expect_error(
		API_ANTHROPIC, 429,
		"{\"error\":{\"message\":\"Rate limit reached for gpt-4o "
		"in organization org-x on tokens per min (TPM)\",\"type\":\"tokens\","
		"\"param\":null,\"code\":\"rate_limit_exceeded\"}}",
		"{'type':'error','error':{'type':'rate_limit_error','message':'Rate limit reached "
		"for gpt-4o in organization org-x on tokens per min (TPM)'}}");
	expect_error(API_ANTHROPIC, 400, "{\"error\":{\"message\":\"Invalid value for 'messages'\","
		     "\"type\":\"invalid_request_error\",\"param\":\"messages\",\"code\":null}}",
		     "{'type':'error','error':{'type':'invalid_request_error','message':"
		     "'Invalid value for \\u0027messages\\u0027'}}");
	expect_error(
		API_ANTHROPIC, 401, "{\"error\":\"bad key\"}",
		"{'type':'error','error':{'type':'authentication_error','message':'bad key'}}");
	expect_error(API_OPENAI, 529,
		     "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
		     "\"message\":\"Overloaded\"},\"request_id\":\"req_011CSHoEeqs5C35K2UUqR7Fy\"}",
		     "{'error':{'message':'Overloaded','type':'server_error','param':null,"
		     "'code':'overloaded_error'}}");
	expect_error(API_OPENAI, 404, "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\","
		     "\"message\":\"model: claude-x\"}}",
		     "{'error':{'message':'model: claude-x','type':'invalid_request_error',"
		     "'param':null,'code':'not_found_error'}}");
	expect_error(API_OPENAI, 502, "<html>Bad Gateway</html>",
		     "{'error':{'message':'the upstream answered HTTP 502','type':'server_error',"
		     "'param':null,'code':null}}");
	expect_error(API_ANTHROPIC, 503, NULL,
		     "{'type':'error','error':{'type':'overloaded_error','message':"
		     "'the upstream answered HTTP 503'}}");
}

/* ---- streams ---- */

/* Upstream samples, as the providers send them. */
#define OAI_CHUNK "data: {\"id\":\"chatcmpl-A1b2C3d4E5\",\"object\":\"chat.completion.chunk\"," \
	"\"created\":1723902049,\"model\":\"gpt-4o-mini-2024-07-18\"," \
	"\"system_fingerprint\":\"fp_48196bc67a\",\"choices\":["
#define OAI_DELTA(d) OAI_CHUNK "{\"index\":0,\"delta\":" d ",\"logprobs\":null," \
	"\"finish_reason\":null}],\"usage\":null}\n\n"
#define OAI_FINISH(r) OAI_CHUNK "{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":" \
	"\"" r "\"}],\"usage\":null}\n\n"
#define OAI_USAGE(p, c, cached) OAI_CHUNK "],\"usage\":{\"prompt_tokens\":" #p "," \
	"\"completion_tokens\":" #c ",\"total_tokens\":0,\"prompt_tokens_details\":" \
	"{\"cached_tokens\":" #cached "}}}\n\n"

static const char oai_text_stream[] =
	OAI_DELTA("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}")
	OAI_DELTA("{\"content\":\"Hello\"}")
	OAI_DELTA("{\"content\":\"!\"}")
	OAI_DELTA("{\"content\":\" How can I\"}")
	OAI_DELTA("{\"content\":\" help \\\"you\\\" today?\\n\"}")
	OAI_FINISH("stop")
	OAI_USAGE(19, 10, 3)
	"data: [DONE]\n\n";

#define OAI_ARGS(i, a) OAI_DELTA("{\"tool_calls\":[{\"index\":" #i ",\"function\":" \
	"{\"arguments\":\"" a "\"}}]}")
static const char oai_tool_stream[] =
	OAI_DELTA("{\"role\":\"assistant\",\"content\":\"Let me look.\"}") OAI_DELTA(
		"{\"tool_calls\":[{\"index\":0,\"id\":\"call_DdmO9pD3xa9XTPNJ32zg2hcA\","
		"\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]"
		"}") OAI_ARGS(0, "{\\\"") OAI_ARGS(0, "location") OAI_ARGS(0, "\\\":\\\"")
		OAI_ARGS(0, "Paris, France") OAI_ARGS(0, "\\\"}") OAI_DELTA(
			"{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\","
			"\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]}")
			OAI_FINISH("tool_calls") OAI_USAGE(82, 17, 0) "data: [DONE]\n\n";

#define ANT(ev, d) "event: " ev "\ndata: " d "\n\n"
static const char ant_text_stream[] = ANT(
	"message_start",
	"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_"
	"1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY\","
	"\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-"
	"20250929\","
	"\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,"
	"\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}")
	ANT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
				   "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
		ANT("ping", "{\"type\": \"ping\"}") ANT(
			"content_block_delta",
			"{\"type\":\"content_block_delta\",\"index\":0,"
			"\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}")
			ANT("content_block_delta",
			    "{\"type\":\"content_block_delta\",\"index\":0,"
			    "\"delta\":{\"type\":\"text_delta\",\"text\":\"!\\n\\\"Hi\\\"\"}}")
				ANT("content_block_stop", "{\"type\":\"content_block_stop\","
							  "\"index\":0}") ANT(
					"message_delta",
					"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
					"\"end_turn\","
					"\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}")
					ANT("message_stop", "{\"type\":\"message_stop\"}");

static const char ant_tool_stream[] = ANT(
	"message_start",
	"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_014p7gG3wDgGV9EUtLvnow3U\","
	"\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"stop_"
	"sequence\":null,"
	"\"usage\":{\"input_tokens\":472,\"output_tokens\":2},\"content\":[],\"stop_reason\":null}"
	"}") ANT("content_block_start",
		 "{\"type\":\"content_block_start\",\"index\":0,"
		 "\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}")
	ANT("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,"
				   "\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Weather "
				   "tool.\"}}") ANT("content_block_delta",
						    "{\"type\":\"content_block_delta\",\"index\":0,"
						    "\"delta\":{\"type\":\"signature_delta\","
						    "\"signature\":\"EqQB\"}}")
		ANT("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}") ANT(
			"content_block_start", "{\"type\":\"content_block_start\",\"index\":1,"
					       "\"content_block\":{\"type\":\"text\",\"text\":\"\"}"
					       "}") ANT("content_block_delta",
							"{\"type\":\"content_block_delta\","
							"\"index\":1,"
							"\"delta\":{\"type\":\"text_delta\","
							"\"text\":\"Okay, let me check.\"}}")
			ANT(
				"content_block_stop", "{\"type\":\"content_block_stop\",\"index\":"
						      "1}") ANT("content_block_start",
								"{\"type\":\"content_block_start\","
								"\"index\":2,"
								"\"content_block\":{\"type\":"
								"\"tool_use\",\"id\":\"toolu_"
								"01T1x1fJ34qAmk2tNTrN7Up6\","
								"\"name\":\"get_weather\","
								"\"input\":{}}}")
				ANT("content_block_delta",
				    "{\"type\":\"content_block_delta\",\"index\":2,"
				    "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
				    "\"\"}}") ANT("content_block_delta",
						  "{\"type\":\"content_block_delta\",\"index\":2,"
						  "\"delta\":{\"type\":\"input_json_delta\","
						  "\"partial_json\":\"{\\\"location\\\":\"}}")
					ANT(
						"content_block_delta",
						"{\"type\":\"content_block_delta\",\"index\":2,"
						"\"delta\":{\"type\":\"input_json_delta\","
						"\"partial_json\":\" \\\"San Francisco, "
						"CA\\\"}\"}}") ANT("content_block_stop",
								   "{\"type\":\"content_block_"
								   "stop\",\"index\":2}")
						ANT("content_block_start",
						    "{\"type\":\"content_block_start\",\"index\":3,"
						    "\"content_block\":{\"type\":\"tool_use\","
						    "\"id\":\"toolu_2\",\"name\":\"now\",\"input\":"
						    "{}}}") ANT("content_block_stop",
								"{\"type\":\"content_block_stop\","
								"\"index\":3}")
							ANT("message_delta",
							    "{\"type\":\"message_delta\",\"delta\":"
							    "{\"stop_reason\":\"tool_use\","
							    "\"stop_sequence\":null},\"usage\":{"
							    "\"output_tokens\":89}}")
								ANT("message_stop",
								    "{\"type\":\"message_stop\"}");

/* One parsed client event. */
struct cev {
	char name[32];     /* "event:" value, "" if none */
	json_t *data;      /* parsed data, NULL for "[DONE]" */
	bool done;         /* data was "[DONE]" */
};

struct cevs {
	struct cev ev[256];
	size_t n;
};

static int collect(const struct sse_event *ev, void *ud)
{
	struct cevs *c = ud;
	assert_true(c->n < 256);
	struct cev *e = &c->ev[c->n++];
	memset(e, 0, sizeof(*e));
	assert_true(ev->event.len < sizeof(e->name));
	memcpy(e->name, ev->event.base ? ev->event.base : "", ev->event.len);
	assert_true(ev->has_data);
	if (iov_eq(ev->data, "[DONE]")) {
		e->done = true;
		return 0;
	}
	e->data = json_loadb(ev->data.base, ev->data.len, 0, NULL);
	if (!e->data)
		fail_msg("client event is not JSON: %.*s", (int)ev->data.len, ev->data.base);
	return 0;
}

static void parse_client(const struct buf *out, struct cevs *c)
{
	struct sse_parser p;
	sse_parser_init(&p, 0);
	c->n = 0;
	assert_int_equal(sse_feed(&p, out->data ? out->data : "", out->len, collect, c, NULL), 0);
	assert_false(sse_has_partial(&p));
	sse_parser_release(&p);
}

static void cevs_free(struct cevs *c)
{
	for (size_t i = 0; i < c->n; i++)
		json_decref(c->ev[i].data);
	c->n = 0;
}

struct run {
	struct xlate_stream *s;
	struct buf *out;
	size_t events, stop_after;  /* feed at most stop_after upstream events */
	int last;
};

static int on_upstream(const struct sse_event *ev, void *ud)
{
	struct run *r = ud;
	if (r->events >= r->stop_after)
		return 1;
	r->events++;
	/* incremental: every upstream event's translation is there as soon as it is fed */
	r->last = xlate_stream_feed(r->s, ev, r->out);
	return r->last < 0 ? 1 : 0;
}

/* Feeds the upstream bytes in pieces of step bytes (0: whole), at most max_events events;
 * returns the last feed result. */
static int feed_stream(struct xlate_stream *s, const char *up, size_t step, size_t max_events,
		       struct buf *out)
{
	struct sse_parser p;
	struct run r = {s, out, 0, max_events, 0};
	size_t len = strlen(up), off = 0;
	sse_parser_init(&p, 0);
	while (off < len) {
		size_t n = step && step < len - off ? step : len - off;
		if (sse_feed(&p, up + off, n, on_upstream, &r, NULL) != 0)
			break;
		off += n;
	}
	sse_parser_release(&p);
	return r.last;
}

static size_t count_events(const char *up)
{
	size_t n = 0;
	for (const char *p = up; (p = strstr(p, "\n\n")); p += 2)
		n++;
	return n;
}

static const char *jstr(const json_t *o, const char *path)
{
	/* "a.b.c" lookups */
	char key[64];
	const json_t *v = o;
	while (*path && v) {
		size_t n = strcspn(path, ".");
		snprintf(key, sizeof(key), "%.*s", (int)n, path);
		v = json_object_get(v, key);
		path += n + (path[n] == '.');
	}
	return json_string_value(v);
}

static json_int_t jint(const json_t *o, const char *a, const char *b)
{
	const json_t *v = json_object_get(o, a);
	if (b)
		v = json_object_get(v, b);
	if (!json_is_integer(v))
		fail_msg("no integer at %s.%s", a, b ? b : "");
	return json_integer_value(v);
}

static void expect_name(const struct cev *e, const char *name)
{
	assert_string_equal(e->name, name);
	assert_non_null(e->data);
	assert_string_equal(jstr(e->data, "type"), name);
}

/* OpenAI upstream, Anthropic client: text. */
static void test_stream_openai_to_anthropic_text(void **state)
{
	struct xlate_stream s;
	struct xlate_req info = {true, false};
	struct buf out = BUF_INIT;
	struct cevs c;

	xlate_stream_init(&s, API_ANTHROPIC, &info, "claude-compat", "req-77");
	assert_int_equal(feed_stream(&s, oai_text_stream, 0, SIZE_MAX, &out), XLATE_END);
	assert_int_equal(xlate_stream_finish(&s, true, &out), 0);
	parse_client(&out, &c);
	assert_int_equal(c.n, 9);
	expect_name(&c.ev[0], "message_start");
	const json_t *m = json_object_get(c.ev[0].data, "message");
	assert_memory_equal(jstr(m, "id"), "msg_", 4);
	assert_string_equal(jstr(m, "model"), "claude-compat");
	assert_string_equal(jstr(m, "role"), "assistant");
	assert_int_equal(json_array_size(json_object_get(m, "content")), 0);
	assert_true(json_is_null(json_object_get(m, "stop_reason")));
	expect_name(&c.ev[1], "content_block_start");
	assert_int_equal(jint(c.ev[1].data, "index", NULL), 0);
	assert_string_equal(jstr(c.ev[1].data, "content_block.type"), "text");
	static const char *const texts[] = {"Hello", "!", " How can I", " help \"you\" today?\n"};
	for (int i = 0; i < 4; i++) {
		expect_name(&c.ev[2 + i], "content_block_delta");
		assert_int_equal(jint(c.ev[2 + i].data, "index", NULL), 0);
		assert_string_equal(jstr(c.ev[2 + i].data, "delta.type"), "text_delta");
		assert_string_equal(jstr(c.ev[2 + i].data, "delta.text"), texts[i]);
	}
	expect_name(&c.ev[6], "content_block_stop");
	assert_int_equal(jint(c.ev[6].data, "index", NULL), 0);
	expect_name(&c.ev[7], "message_delta");
	assert_string_equal(jstr(c.ev[7].data, "delta.stop_reason"), "end_turn");
	assert_int_equal(jint(c.ev[7].data, "usage", "output_tokens"), 10);
	assert_int_equal(jint(c.ev[7].data, "usage", "input_tokens"), 16);
	assert_int_equal(jint(c.ev[7].data, "usage", "cache_read_input_tokens"), 3);
	expect_name(&c.ev[8], "message_stop");
	/* incremental: once the finish_reason chunk (the 6th event) is in, the block is closed */
	struct xlate_stream part;
	struct buf pout = BUF_INIT;
	struct cevs pc;
	xlate_stream_init(&part, API_ANTHROPIC, &info, NULL, "req-77");
	assert_int_equal(feed_stream(&part, oai_text_stream, 0, 6, &pout), XLATE_MORE);
	parse_client(&pout, &pc);
	assert_int_equal(pc.n, 7);
	expect_name(&pc.ev[6], "content_block_stop");
	cevs_free(&pc);
	xlate_stream_release(&part);
	buf_release(&pout);
	/* the id matches the whole answer's for the same seed */
	json_t *resp = J("{'choices':[{'index':0,'message':{'role':'assistant','content':'x'},"
			 "'finish_reason':'stop'}]}");
	json_t *whole = xlate_response(API_ANTHROPIC, resp, NULL, "req-77");
	assert_string_equal(jstr(whole, "id"), jstr(m, "id"));
	json_decref(whole);
	json_decref(resp);
	cevs_free(&c);
	xlate_stream_release(&s);
	buf_release(&out);
}

static void test_stream_openai_to_anthropic_tools(void **state)
{
	struct xlate_stream s;
	struct buf out = BUF_INIT, whole = BUF_INIT;
	struct cevs c;

	xlate_stream_init(&s, API_ANTHROPIC, NULL, NULL, "r");
	assert_int_equal(feed_stream(&s, oai_tool_stream, 0, SIZE_MAX, &whole), XLATE_END);
	xlate_stream_release(&s);
	/* byte by byte, the same bytes */
	xlate_stream_init(&s, API_ANTHROPIC, NULL, NULL, "r");
	assert_int_equal(feed_stream(&s, oai_tool_stream, 1, SIZE_MAX, &out), XLATE_END);
	assert_int_equal(out.len, whole.len);
	assert_memory_equal(out.data, whole.data, out.len);
	assert_int_equal(xlate_stream_finish(&s, true, &out), 0);
	assert_int_equal(out.len, whole.len);  /* the end was written at [DONE] */
	parse_client(&out, &c);
	static const char *const names[] = {
		"message_start", "content_block_start", "content_block_delta", "content_block_stop",
		"content_block_start", "content_block_delta", "content_block_delta",
		"content_block_delta", "content_block_delta", "content_block_delta",
		"content_block_stop", "content_block_start", "content_block_delta",
		"content_block_stop", "message_delta", "message_stop",
	};
	assert_int_equal(c.n, sizeof(names) / sizeof(names[0]));
	for (size_t i = 0; i < c.n; i++)
		expect_name(&c.ev[i], names[i]);
	assert_string_equal(jstr(c.ev[0].data, "message.model"), "gpt-4o-mini-2024-07-18");
	assert_string_equal(jstr(c.ev[2].data, "delta.text"), "Let me look.");
	assert_int_equal(jint(c.ev[4].data, "index", NULL), 1);
	assert_string_equal(jstr(c.ev[4].data, "content_block.type"), "tool_use");
	assert_string_equal(jstr(c.ev[4].data, "content_block.id"),
			    "call_DdmO9pD3xa9XTPNJ32zg2hcA");
	assert_string_equal(jstr(c.ev[4].data, "content_block.name"), "get_weather");
	assert_int_equal(json_object_size(json_object_get(json_object_get(c.ev[4].data,
						"content_block"), "input")), 0);
	struct buf args = BUF_INIT;
	for (size_t i = 5; i < 10; i++) {
		assert_int_equal(jint(c.ev[i].data, "index", NULL), 1);
		assert_string_equal(jstr(c.ev[i].data, "delta.type"), "input_json_delta");
		buf_puts(&args, jstr(c.ev[i].data, "delta.partial_json"));
	}
	assert_string_equal(args.data, "{\"location\":\"Paris, France\"}");
	buf_release(&args);
	assert_int_equal(jint(c.ev[10].data, "index", NULL), 1);
	assert_int_equal(jint(c.ev[11].data, "index", NULL), 2);
	assert_string_equal(jstr(c.ev[11].data, "content_block.name"), "now");
	assert_string_equal(jstr(c.ev[12].data, "delta.partial_json"), "{}");
	assert_int_equal(jint(c.ev[13].data, "index", NULL), 2);
	assert_string_equal(jstr(c.ev[14].data, "delta.stop_reason"), "tool_use");
	assert_int_equal(jint(c.ev[14].data, "usage", "input_tokens"), 82);
	assert_int_equal(jint(c.ev[14].data, "usage", "output_tokens"), 17);
	cevs_free(&c);
	xlate_stream_release(&s);
	buf_release(&out);
	buf_release(&whole);
}

/* Anthropic upstream, OpenAI client with include_usage. */
static void test_stream_anthropic_to_openai_text(void **state)
{
	struct xlate_stream s;
	struct xlate_req info = {true, true};
	struct buf out = BUF_INIT;
	struct cevs c;

	xlate_stream_init(&s, API_OPENAI, &info, "gpt-compat", "req-9");
	assert_int_equal(feed_stream(&s, ant_text_stream, 7, SIZE_MAX, &out), XLATE_END);
	assert_int_equal(xlate_stream_finish(&s, true, &out), 0);
	parse_client(&out, &c);
	assert_int_equal(c.n, 6);
	const char *id = jstr(c.ev[0].data, "id");
	assert_memory_equal(id, "chatcmpl-", 9);
	for (size_t i = 0; i < 5; i++) {
		const json_t *d = c.ev[i].data;
		assert_string_equal(c.ev[i].name, "");
		assert_string_equal(jstr(d, "object"), "chat.completion.chunk");
		assert_string_equal(jstr(d, "id"), id);
		assert_string_equal(jstr(d, "model"), "gpt-compat");
		assert_int_equal(jint(d, "created", NULL), s.created);
		/* include_usage: null usage on every chunk but the last */
		assert_true(i == 4 ? json_is_object(json_object_get(d, "usage"))
				   : json_is_null(json_object_get(d, "usage")));
	}
	const json_t *ch = json_array_get(json_object_get(c.ev[0].data, "choices"), 0);
	assert_string_equal(jstr(ch, "delta.role"), "assistant");
	assert_true(json_is_null(json_object_get(ch, "finish_reason")));
	ch = json_array_get(json_object_get(c.ev[1].data, "choices"), 0);
	assert_string_equal(jstr(ch, "delta.content"), "Hello");
	ch = json_array_get(json_object_get(c.ev[2].data, "choices"), 0);
	assert_string_equal(jstr(ch, "delta.content"), "!\n\"Hi\"");
	ch = json_array_get(json_object_get(c.ev[3].data, "choices"), 0);
	assert_string_equal(jstr(ch, "finish_reason"), "stop");
	assert_int_equal(json_object_size(json_object_get(ch, "delta")), 0);
	assert_int_equal(json_array_size(json_object_get(c.ev[4].data, "choices")), 0);
	expect_json(json_incref(json_object_get(c.ev[4].data, "usage")),
		    "{'prompt_tokens':30,'completion_tokens':15,'total_tokens':45,"
		    "'prompt_tokens_details':{'cached_tokens':5}}");
	assert_true(c.ev[5].done);
	cevs_free(&c);
	xlate_stream_release(&s);

	/* without include_usage: no usage member at all, no usage chunk */
	buf_reset(&out);
	xlate_stream_init(&s, API_OPENAI, NULL, NULL, "req-9");
	assert_int_equal(feed_stream(&s, ant_text_stream, 0, SIZE_MAX, &out), XLATE_END);
	parse_client(&out, &c);
	assert_int_equal(c.n, 5);
	for (size_t i = 0; i < 4; i++) {
		assert_null(json_object_get(c.ev[i].data, "usage"));
		assert_string_equal(jstr(c.ev[i].data, "model"), "claude-sonnet-4-5-20250929");
	}
	assert_true(c.ev[4].done);
	cevs_free(&c);
	xlate_stream_release(&s);
	buf_release(&out);
}

static void test_stream_anthropic_to_openai_tools(void **state)
{
	struct xlate_stream s;
	struct xlate_req info = {true, true};
	struct buf out = BUF_INIT;
	struct cevs c;

	xlate_stream_init(&s, API_OPENAI, &info, NULL, "req-9");
	assert_int_equal(feed_stream(&s, ant_tool_stream, 3, SIZE_MAX, &out), XLATE_END);
	assert_int_equal(xlate_stream_finish(&s, true, &out), 0);
	parse_client(&out, &c);
	/* role, text, call 0 head, 2 argument pieces (the empty one is not sent), call 1 head,
	 * finish, usage, [DONE]; the thinking block is not relayed */
	assert_int_equal(c.n, 9);
	const json_t *d;
#define DELTA(i)                                                                                   \
	json_object_get(json_array_get(json_object_get(c.ev[i].data, "choices"), 0), "delta")
#define CALL(i) json_array_get(json_object_get(DELTA(i), "tool_calls"), 0)
	assert_string_equal(jstr(DELTA(1), "content"), "Okay, let me check.");
	d = CALL(2);
	assert_int_equal(jint(d, "index", NULL), 0);
	assert_string_equal(jstr(d, "id"), "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
	assert_string_equal(jstr(d, "type"), "function");
	assert_string_equal(jstr(d, "function.name"), "get_weather");
	assert_string_equal(jstr(d, "function.arguments"), "");
	assert_int_equal(jint(CALL(3), "index", NULL), 0);
	assert_null(json_object_get(CALL(3), "id"));
	assert_string_equal(jstr(CALL(3), "function.arguments"), "{\"location\":");
	assert_string_equal(jstr(CALL(4), "function.arguments"), " \"San Francisco, CA\"}");
	assert_int_equal(jint(CALL(5), "index", NULL), 1);
	assert_string_equal(jstr(CALL(5), "function.name"), "now");
	assert_string_equal(jstr(json_array_get(json_object_get(c.ev[6].data, "choices"), 0),
				 "finish_reason"), "tool_calls");
	assert_int_equal(jint(c.ev[7].data, "usage", "prompt_tokens"), 472);
	assert_int_equal(jint(c.ev[7].data, "usage", "completion_tokens"), 89);
	assert_true(c.ev[8].done);
#undef CALL
#undef DELTA
	cevs_free(&c);
	xlate_stream_release(&s);
	buf_release(&out);
}

/* A stream cut after each event: nothing that claims completion unless the upstream got that
 * far; finish(false) never completes it. */
static void cut_everywhere(enum api_format to, const char *up, const char *end_marker,
			   size_t events_to_stop)
{
	size_t n = count_events(up);
	for (size_t k = 0; k <= n; k++) {
		for (int complete = 0; complete < 2; complete++) {
			struct xlate_stream s;
			struct xlate_req info = {true, true};
			struct buf out = BUF_INIT;
			struct cevs c;
			xlate_stream_init(&s, to, &info, "m", "seed");
			int last = feed_stream(&s, up, 5, k, &out);
			assert_true(last >= 0);
			int rc = xlate_stream_finish(&s, complete, &out);
			bool ended = k == n;  /* the upstream's own end was fed */
			/* complete transfer after the stop reason: the owed end is written */
			bool closes = ended || (complete && k >= events_to_stop);
			assert_int_equal(rc, closes ? 0 : XLATE_EINCOMPLETE);
			bool has_end = out.data && strstr(out.data, end_marker);
			if (closes != has_end)
				fail_msg("cut after %zu of %zu events, complete=%d: end %s", k, n,
					 complete, has_end ? "written" : "missing");
			parse_client(&out, &c);  /* whatever was written is whole events */
			cevs_free(&c);
			xlate_stream_release(&s);
			buf_release(&out);
		}
	}
}

static void test_stream_cuts(void **state)
{
	/* OpenAI upstream: the finish_reason chunk is the 6th (text) / 9th (tools) event */
	cut_everywhere(API_ANTHROPIC, oai_text_stream, "message_stop", 6);
	cut_everywhere(API_ANTHROPIC, oai_tool_stream, "message_stop", 9);
	/* Anthropic upstream: message_delta is the 7th / 16th event */
	cut_everywhere(API_OPENAI, ant_text_stream, "[DONE]", 7);
	cut_everywhere(API_OPENAI, ant_tool_stream, "[DONE]", 16);
}

static void test_stream_errors(void **state)
{
	struct xlate_stream s;
	struct buf out = BUF_INIT;
	struct cevs c;

	/* Anthropic's overloaded error mid-stream reaches the OpenAI client as its error event */
	xlate_stream_init(&s, API_OPENAI, NULL, "m", "r");
	const char *up = ANT("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":"
			     "\"msg_1\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}")
		ANT("error", "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
		    "\"message\":\"Overloaded\"}}")
		ANT("ping", "{\"type\":\"ping\"}");
	assert_int_equal(feed_stream(&s, up, 0, SIZE_MAX, &out), XLATE_END);
	assert_int_equal(xlate_stream_finish(&s, true, &out), 0);
	parse_client(&out, &c);
	assert_int_equal(c.n, 2);
	assert_string_equal(jstr(c.ev[1].data, "error.message"), "Overloaded");
	assert_string_equal(jstr(c.ev[1].data, "error.code"), "overloaded_error");
	assert_null(strstr(out.data, "[DONE]"));
	cevs_free(&c);
	xlate_stream_release(&s);

	/* an OpenAI error chunk reaches the Anthropic client as event: error */
	buf_reset(&out);
	xlate_stream_init(&s, API_ANTHROPIC, NULL, "m", "r");
	up = OAI_DELTA("{\"content\":\"Hi\"}") "data: {\"error\":{\"message\":\"The server had an "
					       "error\",\"type\":\"server_error\"}}\n\n";
	assert_int_equal(feed_stream(&s, up, 0, SIZE_MAX, &out), XLATE_END);
	assert_int_equal(xlate_stream_finish(&s, true, &out), 0);
	parse_client(&out, &c);
	assert_int_equal(c.n, 4);
	expect_name(&c.ev[3], "error");
	assert_string_equal(jstr(c.ev[3].data, "error.message"), "The server had an error");
	assert_null(strstr(out.data, "message_stop"));
	cevs_free(&c);
	xlate_stream_release(&s);

	/* untranslatable upstream events break the stream: nothing claims completion */
	/* {client format, upstream bytes, client events written before the bad event} */
	static const char *const bad[][3] = {
		{"a", "data: {not json\n\n", "0"},
		{"a", OAI_DELTA("{\"content\":\"x\"}") "data: [DONE]\n\n",
		 "3"}, /* no finish_reason */
		{"a",
		 OAI_ARGS(1, "") OAI_DELTA("{\"tool_calls\":[{\"index\":0,\"id\":\"c\","
					   "\"function\":{\"name\":\"f\"}}]}"),
		 "0"}, /* first call has no name */
		{"a",
		 OAI_DELTA("{\"tool_calls\":[{\"index\":1,\"id\":\"c\",\"function\":{\"name\":"
			   "\"f\"}}]}") OAI_DELTA("{\"tool_calls\":[{\"index\":0,\"id\":\"d\","
						  "\"function\":{\"name\":\"g\"}}]}"),
		 "2"}, /* back to an earlier call */
		{"a", OAI_CHUNK "{\"index\":1,\"delta\":{\"content\":\"x\"}}]}\n\n",
		 "0"}, /* n > 1 */
		{"o",
		 ANT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
					    "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}"),
		 "0"}, /* no start */
		{"o",
		 ANT("message_start", "{\"type\":\"message_start\",\"message\":{}}")
			 ANT("content_block_delta",
			     "{\"type\":\"content_block_delta\",\"index\":0,"
			     "\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}"),
		 "1"}, /* no block */
		{"o",
		 ANT("message_start", "{\"type\":\"message_start\",\"message\":{}}")
			 ANT("message_stop", "{\"type\":\"message_stop\"}"),
		 "1"}, /* no stop reason */
		{"o",
		 ANT("message_start", "{\"type\":\"message_start\",\"message\":{}}")
			 ANT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
						    "\"content_block\":{\"type\":\"server_tool_"
						    "use\",\"id\":\"s\",\"name\":\"w\"}}"),
		 "1"},
		{"o",
		 ANT("message_start", "{\"type\":\"message_start\",\"message\":{}}") ANT(
			 "content_block_start",
			 "{\"type\":\"content_block_start\",\"index\":0,"
			 "\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"f\"}}")
			 ANT("content_block_delta",
			     "{\"type\":\"content_block_delta\",\"index\":0,"
			     "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":5}}"),
		 "2"}, /* arguments that are not text */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		enum api_format to = bad[i][0][0] == 'a' ? API_ANTHROPIC : API_OPENAI;
		buf_reset(&out);
		xlate_stream_init(&s, to, NULL, "m", "r");
		int rc = feed_stream(&s, bad[i][1], 0, SIZE_MAX, &out);
		if (rc != XLATE_EPROTO)
			fail_msg("case %zu: feed returned %d", i, rc);
		size_t len = out.len;
		struct sse_event ev = {.data = IOV_LIT("[DONE]"), .has_data = true};
		assert_int_equal(xlate_stream_feed(&s, &ev, &out), XLATE_EPROTO);
		assert_int_equal(xlate_stream_finish(&s, true, &out), XLATE_EINCOMPLETE);
		assert_int_equal(out.len, len);
		assert_true(!out.data || (!strstr(out.data, "message_stop") &&
					  !strstr(out.data, "[DONE]")));
		/* whole events only, and none for the event that broke the stream */
		parse_client(&out, &c);
		assert_int_equal(c.n, bad[i][2][0] - '0');
		cevs_free(&c);
		xlate_stream_release(&s);
	}
	assert_string_equal(xlate_strerror(XLATE_EINCOMPLETE),
			    "the upstream stream ended before its end");
	buf_release(&out);
}

/* A long tool call streams through: output is consumed as it goes and the translator's own
 * memory does not grow with the stream. */
static void test_stream_bounded(void **state)
{
	struct xlate_stream s;
	struct buf out = BUF_INIT, up = BUF_INIT;
	struct sse_parser p;
	struct run r = {&s, &out, 0, SIZE_MAX, 0};
	size_t pre = 0, model = 0, total = 0;

	xlate_stream_init(&s, API_OPENAI, NULL, NULL, "r");
	sse_parser_init(&p, 0);
	buf_puts(&up,
		 ANT("message_start", "{\"type\":\"message_start\",\"message\":{\"model\":\"c\"}}")
			 ANT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
						    "\"content_block\":{\"type\":\"tool_use\","
						    "\"id\":\"t\",\"name\":\"write\","
						    "\"input\":{}}}"));
	for (int i = 0; i < 20000; i++) {
		if (i == 1)
			buf_puts(&up,
				 ANT("content_block_delta", "{\"type\":\"content_block_delta\","
							    "\"index\":0,\"delta\":{\"type\":"
							    "\"input_json_delta\",\"partial_json\":"
							    "\"{\\\"text\\\":\\\"\"}}"));
		else if (i > 1)
			buf_puts(&up, ANT("content_block_delta",
					  "{\"type\":\"content_block_delta\","
					  "\"index\":0,\"delta\":{\"type\":\"input_json_delta\","
					  "\"partial_json\":"
					  "\"abcdefghijklmnopqrstuvwxyz0123456789\"}}"));
		assert_int_equal(sse_feed(&p, up.data, up.len, on_upstream, &r, NULL), 0);
		assert_true(r.last >= 0);
		buf_reset(&up);
		total += out.len;
		assert_true(out.len < 512);  /* one event in, one bounded chunk out */
		buf_reset(&out);
		if (i == 1) {
			pre = s.pre.cap;
			model = s.model.cap;
		}
		if (i > 1) {
			assert_int_equal(s.pre.cap, pre);
			assert_int_equal(s.model.cap, model);
		}
	}
	assert_true(total > 20000 * 36);

	/* reset keeps the buffers and translates the next stream as a fresh one would */
	struct buf fresh = BUF_INIT, reused = BUF_INIT;
	struct xlate_stream f;
	const char *pre_data = s.pre.data;
	xlate_stream_reset(&s, API_OPENAI, NULL, "gpt-compat", "req-9");
	s.created = 1;
	xlate_stream_init(&f, API_OPENAI, NULL, "gpt-compat", "req-9");
	f.created = 1;
	assert_int_equal(feed_stream(&s, ant_tool_stream, 0, SIZE_MAX, &reused), XLATE_END);
	assert_int_equal(feed_stream(&f, ant_tool_stream, 0, SIZE_MAX, &fresh), XLATE_END);
	assert_int_equal(reused.len, fresh.len);
	assert_memory_equal(reused.data, fresh.data, fresh.len);
	assert_ptr_equal(s.pre.data, pre_data);
	xlate_stream_release(&f);
	buf_release(&fresh);
	buf_release(&reused);
	sse_parser_release(&p);
	xlate_stream_release(&s);
	buf_release(&out);
	buf_release(&up);
}

/* ---- the stream scanner: the same translation as the tree, or none ---- */

/* Translates up (fed in 7-byte pieces) with the scanner and (whole) through the tree only;
 * asserts the same bytes and results; returns the scanner's output in out. */
static void scan_same(enum api_format to, const char *up, struct buf *out)
{
	struct xlate_req info = {true, true};
	struct xlate_stream s;
	struct buf tree = BUF_INIT;
	int rc[2], fin[2];

	for (int off = 0; off < 2; off++) {
		struct buf *b = off ? &tree : out;
		xlate__scan_off = off;
		xlate_stream_init(&s, to, &info, NULL, "seed-1");
		s.created = 1;
		rc[off] = feed_stream(&s, up, off ? 0 : 7, SIZE_MAX, b);
		fin[off] = xlate_stream_finish(&s, true, b);
		xlate_stream_release(&s);
	}
	xlate__scan_off = false;
	assert_int_equal(rc[0], rc[1]);
	assert_int_equal(fin[0], fin[1]);
	if (out->len != tree.len || memcmp(out->data, tree.data, out->len))
		fail_msg("scanner:\n%.*s\ntree:\n%.*s", (int)out->len, out->data, (int)tree.len,
			 tree.data);
	buf_release(&tree);
}

#define OAI_FIRST OAI_DELTA("{\"role\":\"assistant\",\"content\":\"\"}")
#define OAI_RAW(c) "data: " c "\n\n"
#define OAI_END OAI_FINISH("stop") "data: [DONE]\n\n"
#define ANT_FIRST ANT("message_start", "{\"type\":\"message_start\",\"message\":{\"id\":\"m\"," \
	"\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}") \
	ANT("content_block_start", "{\"type\":\"content_block_start\",\"index\":0," \
	"\"content_block\":{\"type\":\"text\",\"text\":\"\"}}")
#define ANT_TEXT(t) ANT("content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0," \
	"\"delta\":{\"type\":\"text_delta\",\"text\":\"" t "\"}}")
#define ANT_END ANT("content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}") \
	ANT("message_delta", "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":" \
	"\"end_turn\"},\"usage\":{\"output_tokens\":9}}") \
	ANT("message_stop", "{\"type\":\"message_stop\"}")

/* Escapes and unicode are decoded and written again as the tree writes them. */
static void test_stream_scan_escapes(void **state)
{
	struct buf out = BUF_INIT;
	struct cevs c;
	/* every escape, \u of one to three bytes, a surrogate pair, raw UTF-8 */
#define ESC "a\\\"b\\\\c\\/d\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f\\u00e9" \
				  "\\u4E2D\\ud83d\\ude00 \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80 \\u0022"
	static const char dec[] = "a\"b\\c/d\n\r\t\b\f\x01\x1f\x7f\xc3\xa9\xe4\xb8\xad"
				  "\xf0\x9f\x98\x80 \xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80 \"";

	scan_same(API_ANTHROPIC, OAI_FIRST OAI_DELTA("{\"content\":\"" ESC "\"}") OAI_END, &out);
	parse_client(&out, &c);
	assert_string_equal(jstr(c.ev[2].data, "delta.text"), dec);
	/* the tree's spelling: short escapes for \n \r \t, \u00XX for other controls */
	assert_non_null(strstr(out.data, "\\n\\r\\t\\u0008\\u000c\\u0001\\u001f\x7f"));
	cevs_free(&c);
	buf_reset(&out);

	scan_same(API_OPENAI, ANT_FIRST ANT_TEXT(ESC) ANT_END, &out);
	parse_client(&out, &c);
	const json_t *ch = json_array_get(json_object_get(c.ev[1].data, "choices"), 0);
	assert_string_equal(jstr(ch, "delta.content"), dec);
	cevs_free(&c);
	buf_release(&out);
}

/* Streams the providers send, in pieces: the same whichever reader. */
static void test_stream_scan_samples(void **state)
{
	static const char *const oai[] = {oai_text_stream, oai_tool_stream};
	static const char *const ant[] = {ant_text_stream, ant_tool_stream};
	struct buf out = BUF_INIT;

	for (size_t i = 0; i < 2; i++) {
		scan_same(API_ANTHROPIC, oai[i], &out);
		buf_reset(&out);
		scan_same(API_OPENAI, ant[i], &out);
		buf_reset(&out);
	}
	buf_release(&out);
}

/* Chunks the scanner leaves to the tree (or reads the same way): whatever they are, the client
 * gets the same bytes. */
static void test_stream_scan_unusual(void **state)
{
	static const char *const oai[] = {
		/* duplicate members: the tree keeps the last */
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\",\"content\":\"b\"}}]}",
		"{\"choices\":[],\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}",
		/* a member name spelled with an escape */
		"{\"choices\":[{\"index\":0,\"delta\":{\"cont\\u0065nt\":\"b\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"},"
		"\"finish_reason\":\"len\\u0067th\"}]}",
		/* numbers: big, exponent, fraction, negative */
		"{\"x\":123456789012345678901234,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}",
		"{\"x\":1e999,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}",
		"{\"x\":-1.5,\"choices\":[{\"index\":0.0,\"delta\":{\"content\":\"b\"}}]}",
		"{\"choices\":[{\"index\":-1,\"delta\":{\"content\":\"b\"}}]}",
		"{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"}}]}",
		"{\"choices\":[{\"index\":01,\"delta\":{\"content\":\"b\"}}]}",
		/* invalid or refused strings */
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\u0000b\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\ud83db\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\ude00b\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\xc0\xafz\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\xed\xa0\x80z\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\tb\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\\xb\"}}]}",
		/* shapes */
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}},{\"index\":0,"
		"\"delta\":{\"content\":\"b\"}}]}",
		"{\"choices\":{},\"usage\":null}",
		"{\"choices\":[7]}",
		"{\"choices\":[{\"index\":0,\"delta\":\"x\"}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":7,\"refusal\":\"no\"}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":{}}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":\"0\"}]}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\","
		"\"arguments\":7}}]}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\"}},"
		"{\"function\":{\"arguments\":\"{}\"}},{\"id\":\"c\\u00e9\",\"function\":{\"name\":"
		"\"g\\n\",\"arguments\":\"\\\"\"}}]}}]}",
		"{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":7}]}",
		"{\"error\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}",
		"{\"error\":{\"message\":\"boom\"}}",
		"{\"usage\":{\"prompt_tokens\":-4,\"completion_tokens\":\"3\",\"prompt_tokens_details\":"
		"{\"cached_tokens\":9}},\"choices\":[]}",
		/* not one object */
		"{\"choices\":[]} x", "{\"choices\":[]}{}", "[]", "{\"choices\":[}", "{\"a\" 1}",
		"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}],}", " \t\r\n{} \n",
		"{\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
		"{\"x\":nul}", "{\"x\":truefalse}", "{\"x\":-}",
	};
	static const char *const ant[] = {
		"{\"type\":\"content_block_delta\",\"type\":\"ping\",\"index\":0,\"delta\":{}}",
		"{\"type\":\"content_block_d\\u0065lta\",\"index\":0,\"delta\":{\"type\":"
		"\"text_delta\",\"text\":\"x\"}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		"\"text_d\\u0065lta\",\"text\":\"x\"}}",
		"{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
		"\"text_delta\",\"text\":\"x\"}}",
		"{\"type\":\"content_block_delta\",\"index\":\"0\",\"delta\":{\"type\":"
		"\"text_delta\",\"text\":\"x\"}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		"\"text_delta\",\"text\":7}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		"\"input_json_delta\",\"partial_json\":\"{}\"}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		"\"bogus\",\"text\":\"x\"}}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":[]}",
		"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
		"\"text_delta\",\"text\":\"x\\u0000\"}}",
		"{\"type\":\"content_block_stop\",\"index\":0}",
		"{\"type\":\"content_block_stop\",\"index\":-0}",
		"{\"type\":\"content_block_stop\"}",
		"{\"type\":\"ping\",\"x\":[1,2,{\"y\":\"\xff\"}]}",
		"{\"type\":\"ping\"", "{\"type\":7}", "{\"type\":\"new_event\",\"index\":0}",
		"{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}",
	};
	struct buf out = BUF_INIT, up = BUF_INIT;

	for (size_t i = 0; i < ARRAY_SIZE(oai); i++) {
		buf_reset(&up);
		buf_puts(&up, OAI_FIRST OAI_DELTA("{\"content\":\"a\"}") "data: ");
		buf_puts(&up, oai[i]);
		buf_puts(&up, "\n\n" OAI_END);
		scan_same(API_ANTHROPIC, up.data, &out);
		buf_reset(&out);
	}
	for (size_t i = 0; i < ARRAY_SIZE(ant); i++) {
		buf_reset(&up);
		buf_puts(&up, ANT_FIRST ANT_TEXT("a") "data: ");
		buf_puts(&up, ant[i]);
		buf_puts(&up, "\n\n" ANT_END);
		scan_same(API_OPENAI, up.data, &out);
		buf_reset(&out);
	}
	buf_release(&up);
	buf_release(&out);
}

/* The scanner on its own: what it refuses is never something the tree takes differently, and
 * what it accepts the tree accepts. */
static void test_scan_reader(void **state)
{
	static const char *const names[] = {"a", "b"};
	static const char *const ok[] = {
		"{}", " {\"a\":1,\"b\":\"x\\n\"} ", "{\"c\":[1,-2.5,true,false,null,{},[]],\"a\":null}",
		"{\"a\":\"\xf4\x8f\xbf\xbf\xe0\xa0\x80\"}", "{\"a\":-0}",
	};
	static const char *const refused[] = {
		"", "{", "{\"a\":1,\"a\":2}", "{\"\\u0061\":1}", "{\"a\":1e3}", "{\"a\":1234567890123456789}",
		"{\"a\":\"\\u0000\"}", "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"\xe0\x80\x80\"}",
		"{\"a\":\"\xc2\"}", "{\"a\":\"\\ud800\\u0041\"}", "{\"a\":.5}", "{\"a\":+1}",
		"{\"a\":1.}", "{\"a\":[1,]}", "{\"a\":1,}", "{,}", "{\"a\":\"x\x01\"}", "[1]",
	};
	struct xscan_val v[2];

	for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
		const char *end = ok[i] + strlen(ok[i]);
		const char *p = xlate__scan_object(ok[i], end, names, 2, v);
		assert_non_null(p);
		assert_ptr_equal(xlate__scan_ws(p, end), end);
		json_t *j = json_loadb(ok[i], strlen(ok[i]), 0, NULL);
		assert_non_null(j);
		json_decref(j);
	}
	for (size_t i = 0; i < ARRAY_SIZE(refused); i++) {
		const char *end = refused[i] + strlen(refused[i]);
		const char *p = xlate__scan_object(refused[i], end, names, 2, v);
		assert_true(!p || xlate__scan_ws(p, end) != end);
	}
	assert_non_null(xlate__scan_object(ok[1], ok[1] + strlen(ok[1]), names, 2, v));
	assert_int_equal(v[0].type, XJ_INT);
	assert_int_equal(v[0].i, 1);
	assert_int_equal(v[1].type, XJ_STRING);
	assert_true(v[1].esc);
	assert_true(xlate__scan_is(&v[1], "x\\n"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_openai_request_full),
		cmocka_unit_test(test_openai_request_defaults),
		cmocka_unit_test(test_openai_tool_choice),
		cmocka_unit_test(test_openai_refusals),
		cmocka_unit_test(test_anthropic_request_full),
		cmocka_unit_test(test_anthropic_request_small),
		cmocka_unit_test(test_anthropic_refusals),
		cmocka_unit_test(test_response_openai_to_anthropic),
		cmocka_unit_test(test_response_anthropic_to_openai),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_stream_openai_to_anthropic_text),
		cmocka_unit_test(test_stream_openai_to_anthropic_tools),
		cmocka_unit_test(test_stream_anthropic_to_openai_text),
		cmocka_unit_test(test_stream_anthropic_to_openai_tools),
		cmocka_unit_test(test_stream_cuts),
		cmocka_unit_test(test_stream_errors),
		cmocka_unit_test(test_stream_bounded),
		cmocka_unit_test(test_stream_scan_escapes),
		cmocka_unit_test(test_stream_scan_samples),
		cmocka_unit_test(test_stream_scan_unusual),
		cmocka_unit_test(test_scan_reader),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
