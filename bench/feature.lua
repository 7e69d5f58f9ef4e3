-- feature.lua - wrk script of the features section: POST one fixed body as an OpenAI or an Anthropic client
--
-- Environment: BENCH_BODY, the request body (bench/run makes it, and checks the same bytes with
-- curl before the load); BENCH_API=openai (Authorization: Bearer) or anthropic (x-api-key and
-- anthropic-version, as the Anthropic SDKs send them); BENCH_KEY, the gateway key;
-- BENCH_STREAM_TOKENS, when set, sent as x-mock-tokens so that `meridian mock` streams that many
-- tokens. The URL's path is the endpoint (bench/run gives the /v1/{account}/{gateway}/... one).
-- As in chat.lua, no response() callback: wrk's own work stays the same on every row, and the
-- bodies are checked with curl instead. done() prints one JSON line.

local body = os.getenv("BENCH_BODY")
local api = os.getenv("BENCH_API") or "openai"
local key = os.getenv("BENCH_KEY") or "sk-bench-0000000000000000"
local tokens = os.getenv("BENCH_STREAM_TOKENS")

if not body or body == "" then
	error("feature.lua: BENCH_BODY is not set")
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
if api == "anthropic" then
	wrk.headers["x-api-key"] = key
	wrk.headers["anthropic-version"] = "2023-06-01"
elseif api == "openai" then
	wrk.headers["Authorization"] = "Bearer " .. key
else
	error("feature.lua: BENCH_API must be openai or anthropic, not " .. api)
end
if tokens and tokens ~= "" then
	wrk.headers["x-mock-tokens"] = tokens
end

function done(summary, latency, requests)
	local e = summary.errors
	io.write(string.format('BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
		.. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
		.. '"latency_us":{"mean":%.1f,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
		summary.requests, summary.duration, summary.bytes,
		e.connect, e.read, e.write, e.status, e.timeout,
		latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90),
		latency:percentile(99), latency.max))
end
