#!/usr/bin/env bash
# The public HTTP caching conformance suite (http-cache-tests, from the npm registry)
# against an edge on loopback: the suite's own server is the origin, its client sends
# every test through the edge, and the results are classified by the suite's own rules
# (pass, fail, optional fail, yes/no for checks, setup and dependency failures).
#
#   benches/conformance.sh [--set-cookie strip|bypass|store] [--out FILE]
#
# Needs node and npm. Bounded: the suite's client runs for at most 10 minutes.
set -euo pipefail

set_cookie=strip
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --set-cookie) set_cookie="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "conformance.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release --quiet --bin edgecache
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release/edgecache"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && npm pack --silent http-cache-tests >/dev/null && tar xzf http-cache-tests-*.tgz)
suite="$work/package"
(cd "$suite" && npm install --silent --omit=dev --no-audit --no-fund >/dev/null)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin_port="$(free_port)"
(cd "$suite" && npm_config_port="$origin_port" npm_config_protocol=http \
    npm_config_pidfile="$work/server.pid" exec node server/server.mjs) >"$work/server.log" 2>&1 &
pids+=($!)

cat >"$work/edge.toml" <<TOML
[edge]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
pop = "conformance"
cache.set_cookie = "$set_cookie"

[[edge.origins]]
url = "http://127.0.0.1:$origin_port"
TOML
RUST_LOG=warn "$bin" edge --config "$work/edge.toml" >"$work/edge.out" 2>"$work/edge.log" &
pids+=($!)
for _ in $(seq 100); do
    grep -q '^listening on ' "$work/edge.out" 2>/dev/null && break
    sleep 0.1
done
edge_url="$(sed -n 's/^listening on //p' "$work/edge.out" | head -n 1)"
[ -n "$edge_url" ] || { echo "conformance.sh: the edge did not start" >&2; cat "$work/edge.log" >&2; exit 1; }
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$origin_port/" && break
    sleep 0.1
done

results="${out:-$work/results.json}"
(cd "$suite" && npm_config_base="$edge_url" npm_config_id= npm_package_config_id= \
    timeout 600 node --no-warnings cli.mjs) >"$results"

cat >"$suite/classify.mjs" <<'JS'
import * as display from './lib/display.mjs'
import tests from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'
import fs from 'fs'
tests.push(surrogate)
const results = JSON.parse(fs.readFileSync(process.argv[2]))
const names = { '✅': 'pass', '⛔️': 'fail', '⚠️': 'optional fail', Y: 'check yes', N: 'check no',
  '🔹': 'setup fail', '⁉️': 'harness fail', '⚪️': 'dependency fail', '↻': 'retry', '-': 'untested' }
const counts = {}
const failed = []
for (const suite of tests) {
  for (const test of suite.tests) {
    const symbol = display.determineTestResult(tests, test.id, results)[2]
    const name = names[symbol] || symbol
    counts[name] = (counts[name] || 0) + 1
    if (name === 'fail') failed.push(test.id)
  }
}
console.log(Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', '))
console.log('required tests failed: ' + failed.join(' '))
JS
echo "set_cookie = $set_cookie, $edge_url in front of the suite's origin"
node "$suite/classify.mjs" "$results"
