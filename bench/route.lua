-- route.lua - wrk script for the routing rows: chat.lua's request, a location header, conversation ids
--
-- Environment: BENCH_LOCATION ("lat,lon", sent as x-client-location on every request; empty:
-- none), BENCH_CONV=1 (every second request carries x-grok-conv-id, one of 1000 per thread, so
-- the gateway looks each conversation up and records it again). Every row of the routing section
-- runs this same script with the same request() callback, so wrk spends the same on each
-- request of the baseline as of the routed rows: the requests are formatted once in init() and
-- request() only hands out the next one. done() prints the same BENCH_RESULT line as chat.lua.

local location = os.getenv("BENCH_LOCATION") or ""
local conv = os.getenv("BENCH_CONV") == "1"
local nconv = 1000

local body = '{"model":"mock-1","messages":['
	.. '{"role":"system","content":"You are a concise assistant."},'
	.. '{"role":"user","content":"Write one sentence about the sea."}],'
	.. '"max_tokens":64,"temperature":0.2}'

local threads = 0

function setup(thread)
	thread:set("tid", threads)
	threads = threads + 1
end

local reqs = {}
local nreqs = 0
local i = 0

function init(args)
	local headers = {
		["Content-Type"] = "application/json",
		["Authorization"] = "Bearer sk-bench-0000000000000000",
	}
	if location ~= "" then
		headers["x-client-location"] = location
	end
	if not conv then
		reqs[1] = wrk.format("POST", nil, headers, body)
		nreqs = 1
		return
	end
	for k = 1, nconv do
		headers["x-grok-conv-id"] = string.format("bench-conv-%d-%04d", tid or 0, k)
		reqs[2 * k - 1] = wrk.format("POST", nil, headers, body)
		headers["x-grok-conv-id"] = nil
		reqs[2 * k] = wrk.format("POST", nil, headers, body)
	end
	nreqs = 2 * nconv
end

function request()
	i = i % nreqs + 1
	return reqs[i]
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
