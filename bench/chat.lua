-- chat.lua - wrk script: POST a small chat/completions request; done() prints one JSON line
--
-- Environment: BENCH_STREAM=1 asks for a stream ("stream": true, usage included) and sends
-- x-mock-tokens: BENCH_STREAM_TOKENS (default 20) so `meridian mock` streams that many tokens.
-- BENCH_KEY: the key sent as Authorization: Bearer (default a provider-looking placeholder, which
-- the passthrough gateways forward and the origin ignores; the limits section sends a gateway key).
-- No response() callback: defining one makes wrk hand every response to Lua, which would put
-- the load generator's own cost on the measured path. Bodies are checked once with curl by
-- bench/run before each load instead.

local stream = os.getenv("BENCH_STREAM") == "1"
local tokens = os.getenv("BENCH_STREAM_TOKENS") or "20"
local key = os.getenv("BENCH_KEY") or "sk-bench-0000000000000000"

local body = '{"model":"mock-1","messages":['
	.. '{"role":"system","content":"You are a concise assistant."},'
	.. '{"role":"user","content":"Write one sentence about the sea."}],'
	.. '"max_tokens":64,"temperature":0.2'
if stream then
	body = body .. ',"stream":true,"stream_options":{"include_usage":true}'
end
body = body .. '}'

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
if stream then
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
