#!/usr/bin/env bash
# ircount.sh - instructions a gateway executes per request, counted by callgrind: deterministic,
# so unlike wrk's ratios it resolves a few percent on a shared machine.
#
# Usage: bench/ircount.sh MERIDIAN CONF PORT ROW N1 N2 [LOCATION] [conv]
#   Starts `MERIDIAN serve -c CONF` (listening on PORT) under callgrind twice, sends N1 and then
#   N2 requests (bench/irsend.mjs) and prints one JSON line: the instructions of all threads per
#   request, (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up and shutdown cancel out.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
meridian="$1" conf="$2" port="$3" row="$4" n1="$5" n2="$6" location="${7:-}" conv="${8:-}"
work="$(mktemp -d "${TMPDIR:-/tmp}/meridian-ircount.XXXXXX")"
gw=
cleanup() {
	[ -z "$gw" ] || kill -KILL "$gw" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

count() { # count N: total Ir of a gateway that served N requests
	local n="$1" i
	valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" "$meridian" serve -c "$conf" \
		>"$work/gw.$n.log" 2>&1 &
	gw=$!
	for (( i = 0; i < 300; i++ )); do
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
		kill -0 "$gw" 2>/dev/null || { echo "ircount: gateway exited: $(tail -n 3 "$work/gw.$n.log")" >&2; exit 2; }
		sleep 0.1
	done
	node "$here/irsend.mjs" "$n" "$port" "$location" "$conv" >&2 || exit 2
	kill -TERM "$gw"
	wait "$gw" || { echo "ircount: gateway exit status $?" >&2; exit 2; }
	gw=
	# one file per thread with --separate-threads; one in all otherwise
	awk '/^summary:/ { s += $2 } END { printf "%d\n", s }' "$work"/cg."$n"*
}

ir1="$(count "$n1")"
ir2="$(count "$n2")"
python3 -c 'import json, sys
row, n1, n2, ir1, ir2 = sys.argv[1], *map(int, sys.argv[2:])
print(json.dumps({"row": row, "n1": n1, "n2": n2, "ir1": ir1, "ir2": ir2,
                  "ir_per_request": (ir2 - ir1) / (n2 - n1)}))' "$row" "$n1" "$n2" "$ir1" "$ir2"
