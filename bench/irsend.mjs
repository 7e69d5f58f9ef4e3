// irsend.mjs - N chat requests one after another on one keep-alive connection, for the
// instruction counts of bench/ircount.sh: the same bytes as bench/route.lua's requests.
//
// Usage: node bench/irsend.mjs N PORT [LOCATION] [conv]
//   LOCATION "lat,lon" sent as x-client-location ("" for none); conv: every second request
//   carries x-grok-conv-id, one of 1000 conversations. Exits 1 on any answer other than 200.
import http from 'node:http';

const [n, port, location = '', conv] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4], process.argv[5]];
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const body = '{"model":"mock-1","messages":['
	+ '{"role":"system","content":"You are a concise assistant."},'
	+ '{"role":"user","content":"Write one sentence about the sea."}],'
	+ '"max_tokens":64,"temperature":0.2}';

function one(i) {
	const headers = { 'content-type': 'application/json', authorization: 'Bearer bench' };
	if (location) headers['x-client-location'] = location;
	if (conv === 'conv' && i % 2) headers['x-grok-conv-id'] = `bench-conv-${i % 1000}`;
	return new Promise((resolve, reject) => {
		const r = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/v1/chat/completions', agent, headers }, (res) => {
			res.resume();
			res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`request ${i}: HTTP ${res.statusCode}`))));
		});
		r.on('error', reject);
		r.end(body);
	});
}

try {
	for (let i = 0; i < n; i++) await one(i);
} catch (e) {
	console.error(`irsend: ${e.message}`);
	process.exitCode = 1;
}
agent.destroy();
