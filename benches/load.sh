#!/usr/bin/env bash
# End-to-end load test of an edge on loopback, and with --compare the same load against
# nginx proxy_cache and Varnish in front of the same origin.
#
#   benches/load.sh [--compare] [--duration SECS] [--rounds N] [--connections N]
#                   [--sizes "1k 100k 1m 10m"] [--no-disk] [--no-cold] [--out DIR]
#                   [--congestion ALGO|system] [--client-cores LIST]
#
# The server under test runs on core 0, oha and the origin (nice -10 as root) on core 1,
# or on the cores in --client-cores (a taskset list such as 1-3, none of them core 0).
# Runs are bounded by --duration (oha -z) or a request count; only loopback is used.
# Prints req/s, p50, p99 and errors per object size and target (medians of the rounds,
# rounds interleaved across targets), the server's CPU and oha's, the server's peak memory,
# disk-tier hits, and cold-miss coalescing (1,000 requests over 200 connections for one
# cold object). Rows where oha's own core was saturated are named: their p99 is oha's.
# --compare also runs 1 KiB hits with wrk, a lighter load generator, to check that p99.
#
# Every server runs with the same TCP congestion control, cubic unless --congestion says
# otherwise: as root the script sets it for the run and puts the old one back at exit.
# With BBR on loopback, the sender paces large responses into many small bursts, each of
# which wakes the load generator, and runs flip between a fast and a slow state from one
# minute to the next (see benches/README.md). `--congestion system` keeps the machine's.
set -euo pipefail

compare=0
duration=10
rounds=3
connections=64
sizes="1k 100k 1m 10m"
disk=1
cold=1
out=""
congestion=cubic
client_cores=1

while [ $# -gt 0 ]; do
    case "$1" in
        --compare) compare=1 ;;
        --duration) duration="$2"; shift ;;
        --rounds) rounds="$2"; shift ;;
        --connections) connections="$2"; shift ;;
        --sizes) sizes="$2"; shift ;;
        --no-disk) disk=0 ;;
        --no-cold) cold=0 ;;
        --out) out="$2"; shift ;;
        --congestion) congestion="$2"; shift ;;
        --client-cores) client_cores="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "load.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

case "$duration$rounds$connections" in
    *[!0-9]*) echo "load.sh: --duration, --rounds and --connections take whole numbers" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ "$(nproc)" -lt 2 ]; then
    echo "load.sh: needs 2 cores (server on core 0, load generator on core 1)" >&2
    exit 1
fi
# The cores in --client-cores, one per line; each must exist here, and core 0 is the server's.
client_core_list="$(python3 - "$client_cores" "$(nproc)" <<'PY'
import sys
spec, online = sys.argv[1], int(sys.argv[2])
cores = set()
try:
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
except ValueError:
    sys.exit("load.sh: --client-cores takes a core list such as 1 or 1-3, not %r" % spec)
if not cores or 0 in cores or max(cores) >= online:
    sys.exit("load.sh: --client-cores %s: cores must be from 1 to %d (core 0 runs the server)"
             % (spec, online - 1))
print("\n".join(str(c) for c in sorted(cores)))
PY
)"
client_core_count="$(echo "$client_core_list" | wc -l)"

echo "== building the release binary"
cargo build --release --quiet --bin edgecache
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/release/edgecache"

if ! command -v oha >/dev/null; then
    echo "== installing oha"
    cargo install oha --locked
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if [ "$compare" = 1 ] && { ! command -v nginx >/dev/null || ! command -v varnishd >/dev/null ||
    ! command -v wrk >/dev/null; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing nginx, varnish and wrk"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx varnish wrk >/dev/null
    else
        echo "load.sh: --compare needs nginx, varnishd and wrk (apt-get install nginx varnish wrk)" >&2
        exit 1
    fi
fi

cc_restore=""
work="$(mktemp -d -t edgecache-load.XXXXXX)"
[ -n "$out" ] || out="$work"
mkdir -p "$out"
pids=()
cleanup() {
    if [ -n "$cc_restore" ]; then
        echo "$cc_restore" > "$cc_file" || true
    fi
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "$out" = "$work" ]; then
        rm -rf "$work/site" "$work/disk" "$work/disk-main" "$work/nginx-cache" "$work/varnish"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

cc_file=/proc/sys/net/ipv4/tcp_congestion_control
cc_before="$(cat "$cc_file" 2>/dev/null || echo unknown)"
if [ "$congestion" != system ] && [ "$congestion" != "$cc_before" ]; then
    if ! grep -qw -- "$congestion" /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null; then
        echo "load.sh: congestion control '$congestion' is not available here ($(cat /proc/sys/net/ipv4/tcp_available_congestion_control 2>/dev/null))" >&2
        exit 2
    fi
    if [ -w "$cc_file" ] && { echo "$congestion" > "$cc_file"; } 2>/dev/null; then
        cc_restore="$cc_before"
    else
        echo "load.sh: cannot set TCP congestion control to $congestion (not root); keeping $cc_before" >&2
    fi
fi
echo "== TCP congestion control for every server: $(cat "$cc_file" 2>/dev/null || echo unknown)" \
    "$([ -n "$cc_restore" ] && echo "(was $cc_restore; put back at exit)")"

# Waits (at most 15 s) for a server to print `PREFIX http://ADDR` on stdout; prints ADDR.
address_from() {
    local file="$1" prefix="$2" deadline=$((SECONDS + 15))
    while [ "$SECONDS" -lt "$deadline" ]; do
        local line
        line="$(grep -m1 "^$prefix http://" "$file" 2>/dev/null || true)"
        if [ -n "$line" ]; then
            echo "${line#"$prefix "}"
            return 0
        fi
        sleep 0.05
    done
    echo "load.sh: no '$prefix' line in $file; its log:" >&2
    cat "$file" "${file%.out}.err" >&2 2>/dev/null || true
    return 1
}

# Waits (at most 15 s) until URL answers.
wait_http() {
    local url="$1" deadline=$((SECONDS + 15))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if curl -s -o /dev/null "$url"; then return 0; fi
        sleep 0.05
    done
    echo "load.sh: $url never answered" >&2
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bytes_of() {
    case "$1" in
        *k) echo $(( ${1%k} * 1024 )) ;;
        *m) echo $(( ${1%m} * 1024 * 1024 )) ;;
        *) echo "$1" ;;
    esac
}

# The origin serves these files; names are fingerprinted, so it marks them immutable.
mkdir -p "$work/site"
for size in $sizes; do
    head -c "$(bytes_of "$size")" /dev/urandom > "$work/site/obj-$size.3f9c2a1b.bin"
done
# One cold object per target and round.
for name in edgecache nginx varnish origin; do
    for round in $(seq 1 "$rounds"); do
        head -c 1024 /dev/urandom > "$work/site/cold-$name-$round.3f9c2a1b.bin"
    done
done

# The origin stands for a server elsewhere, which the load generator does not slow down.
# Here it shares oha's cores, and oha opens 200 connections at once for the cold misses,
# so as root it runs at a higher priority (nice -10): it has little to do, and does it
# when asked, for every target alike.
origin_prio=()
if [ "$(id -u)" = 0 ]; then
    origin_prio=(nice -n -10)
    echo "== starting the origin (cores $client_cores, nice -10)"
else
    echo "== starting the origin (cores $client_cores; not root, so at oha's priority)"
fi
RUST_LOG="warn,edgecache_origin=debug" "${origin_prio[@]}" taskset -c "$client_cores" "$bin" origin --root "$work/site" \
    --listen 127.0.0.1:0 > "$work/origin.out" 2> "$work/origin.err" &
pids+=($!)
declare -A url_of pid_of admin_of
pid_of[origin-direct]=$!
origin="$(address_from "$work/origin.out" "listening on")"
origin_hostport="${origin#http://}"

# Requests that reached the origin so far: one debug line per file served.
origin_requests() {
    grep -c ' file' "$work/origin.err" || true
}

targets=()

start_edge() {
    local name="$1" max_object="$2" disk_dir="$3"
    {
        echo '[edge]'
        echo "pop = \"$name\""
        echo '[edge.memory]'
        echo 'size = "4GiB"'
        echo "max_object_size = \"$max_object\""
        if [ -n "$disk_dir" ]; then
            echo '[edge.disk]'
            echo "dir = \"$disk_dir\""
            echo 'size = "8GiB"'
        fi
    } > "$work/$name.toml"
    RUST_LOG=warn taskset -c 0 "$bin" edge --config "$work/$name.toml" --origin "$origin" \
        --listen 127.0.0.1:0 --admin 127.0.0.1:0 > "$work/$name.out" 2> "$work/$name.err" &
    pids+=($!)
    pid_of[$name]=$!
    url_of[$name]="$(address_from "$work/$name.out" "listening on")"
    admin_of[$name]="$(address_from "$work/$name.out" "admin on")"
}

echo "== starting the edge (core 0)"
# Memory tier over a disk tier, as an edge runs in production: hits of 64 KiB and up are
# sent from the disk tier's files (sendfile), as nginx sends its cache files.
start_edge edgecache 16MiB "$work/disk-main"
targets+=(edgecache)

if [ "$disk" = 1 ]; then
    # Bodies above 64 KiB stay out of memory: every hit on them is read from disk.
    start_edge edgecache-disk 64KiB "$work/disk"
fi

if [ "$compare" = 1 ]; then
    echo "== starting nginx proxy_cache (core 0)"
    nginx_port="$(free_port)"
    mkdir -p "$work/nginx-cache" "$work/nginx-tmp"
    cat > "$work/nginx.conf" <<EOF
worker_processes 1;
user root;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $work/nginx-tmp/body;
    proxy_temp_path $work/nginx-tmp/proxy;
    fastcgi_temp_path $work/nginx-tmp/fastcgi;
    uwsgi_temp_path $work/nginx-tmp/uwsgi;
    scgi_temp_path $work/nginx-tmp/scgi;
    proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=edge:64m max_size=8g inactive=1h use_temp_path=off;
    upstream origin { server $origin_hostport; keepalive 32; }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
EOF
    taskset -c 0 nginx -c "$work/nginx.conf" -g 'daemon off;' > "$work/nginx.out" 2>&1 &
    pids+=($!)
    pid_of[nginx]=$!
    url_of[nginx]="http://127.0.0.1:$nginx_port"
    wait_http "${url_of[nginx]}/obj-1k.3f9c2a1b.bin"
    targets+=(nginx)

    echo "== starting Varnish (core 0)"
    varnish_port="$(free_port)"
    mkdir -p "$work/varnish"
    taskset -c 0 varnishd -F -j none -n "$work/varnish" -a "127.0.0.1:$varnish_port" \
        -b "$origin_hostport" -s malloc,8G > "$work/varnish.out" 2>&1 &
    pids+=($!)
    pid_of[varnish]=$!
    url_of[varnish]="http://127.0.0.1:$varnish_port"
    wait_http "${url_of[varnish]}/obj-1k.3f9c2a1b.bin"
    targets+=(varnish)
fi

# A process and all its descendants.
tree_pids() {
    echo "$1"
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        tree_pids "$child"
    done
}

# CPU ticks (user + system) of a process and its descendants.
tree_ticks() {
    local pid
    for pid in $(tree_pids "$1"); do
        sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null || true
    done | awk '{total += $12 + $13} END {print total + 0}'
}

# Peak resident memory (KiB) of a process and its descendants.
tree_peak_kib() {
    local pid
    for pid in $(tree_pids "$1"); do
        cat "/proc/$pid/status" 2>/dev/null || true
    done | awk '/^VmHWM:/ {total += $2} END {print total + 0}'
}

hz="$(getconf CLK_TCK)"
results="$out/results.tsv"
printf 'target\trow\tround\treq_s\tp50_ms\tp99_ms\terrors\tnon_200\tcpu_pct\torigin_requests\tgen_cpu_pct\n' > "$results"

# One run of a load generator, `oha` (arguments after URL go to it) or `wrk` (full speed
# for --duration over --connections, a thread per client core); appends a row to
# results.tsv with the generator's own CPU in gen_cpu_pct.
measure_with() {
    local gen="$1" target="$2" row="$3" round="$4" url="$5"
    shift 5
    local pid="${pid_of[$target]}"
    local before_ticks before_origin output="$out/$gen-$target-$row-$round.out"
    before_ticks="$(tree_ticks "$pid")"
    before_origin="$(origin_requests)"
    # The generator's CPU: this shell's `times` (its waited children's user and system
    # time) just before and after it; a builtin with a redirection runs in this shell.
    times > "$out/times.before"
    if [ "$gen" = wrk ]; then
        taskset -c "$client_cores" wrk -t"$client_core_count" -c"$connections" -d"${duration}s" \
            --latency "$url" > "$output"
    else
        taskset -c "$client_cores" oha --no-tui --output-format json "$@" "$url" > "$output"
    fi
    times > "$out/times.after"
    local ticks=$(( $(tree_ticks "$pid") - before_ticks ))
    local origin_delta=$(( $(origin_requests) - before_origin ))
    python3 - "$gen" "$output" "$target" "$row" "$round" "$ticks" "$hz" "$origin_delta" \
        "$out/times.before" "$out/times.after" >> "$results" <<'EOF'
import json, re, sys
gen, path, target, row, rnd, ticks, hz, origin, times_before, times_after = sys.argv[1:]
text = open(path).read()
def children_seconds(path):
    # `times` prints the shell's user and system time, then its children's: "0m1.250s 0m0.310s".
    line = open(path).read().splitlines()[1]
    return sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", line))
def ms(value):
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]
def field(pattern):
    m = re.search(pattern, text, re.M)
    if not m:
        sys.exit("load.sh: no %r in %s's output (%s)" % (pattern, gen, path))
    return m.group(1)
if gen == "wrk":
    rps = float(field(r"^Requests/sec:\s+([\d.]+)"))
    p50, p99 = ms(field(r"^\s+50%\s+(\S+)")), ms(field(r"^\s+99%\s+(\S+)"))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = sum(int(n) for n in socket.groups()) if socket else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    non200 = int(non2xx.group(1)) if non2xx else 0
    busy = ms(field(r"requests in ([\d.]+(?:us|ms|s|m)),")) / 1000
else:
    d = json.loads(text)
    s = d["summary"]
    rps = s["requestsPerSec"]
    lat = d.get("latencyPercentiles", {})
    p50, p99 = 1000 * (lat.get("p50") or 0), 1000 * (lat.get("p99") or 0)
    codes = d.get("statusCodeDistribution", {})
    # Requests still in flight when -z ends are cut off by oha itself: not the server's errors.
    errors = sum(n for e, n in d.get("errorDistribution", {}).items() if e != "aborted due to deadline")
    non200 = sum(codes.values()) - codes.get("200", 0)
    busy = float(s.get("total", 0))
busy = busy or 1.0
cpu = 100.0 * int(ticks) / int(hz) / busy
gen_cpu = 100.0 * (children_seconds(times_after) - children_seconds(times_before)) / busy
print("\t".join([target, row, rnd, "%.0f" % rps, "%.2f" % p50, "%.2f" % p99,
                 str(errors), str(non200), "%.0f" % cpu, origin, "%.0f" % gen_cpu]))
EOF
    tail -n 1 "$results" | awk -F'\t' -v gen="$gen" '{printf "   %-15s %-10s round %s: %7s req/s  p50 %6s ms  p99 %6s ms  errors %s  non-200 %s  cpu %s%%  %s %s%%  origin %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, gen, $11, $10}'
}

measure() { measure_with oha "$@"; }

warm() {
    local url="$1"
    curl -s -o /dev/null "$url"
    curl -s -o /dev/null "$url"
}

echo "== warming the caches"
for target in "${targets[@]}" $([ "$disk" = 1 ] && echo edgecache-disk); do
    for size in $sizes; do
        warm "${url_of[$target]}/obj-$size.3f9c2a1b.bin"
    done
done
# Hits are sent from the disk tier's files once their entries are committed there.
want_entries=$(echo $sizes | wc -w)
deadline=$((SECONDS + 15))
until [ "$(curl -s "${admin_of[edgecache]}/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["disk"]["entries"])')" -ge "$want_entries" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "load.sh: the edge's disk tier never held the $want_entries objects" >&2
        exit 1
    fi
    sleep 0.1
done
curl -s -D - -o /dev/null "${url_of[edgecache]}/obj-1k.3f9c2a1b.bin" | grep -i '^cache-status' || true

echo "== hits: ${rounds} interleaved rounds of ${duration} s, ${connections} connections"
for round in $(seq 1 "$rounds"); do
    for size in $sizes; do
        for target in "${targets[@]}"; do
            measure "$target" "$size" "$round" "${url_of[$target]}/obj-$size.3f9c2a1b.bin" \
                -z "${duration}s" -c "$connections"
        done
        if [ "$disk" = 1 ] && [ "$(bytes_of "$size")" -gt 65536 ]; then
            measure edgecache-disk "$size" "$round" "${url_of[edgecache-disk]}/obj-$size.3f9c2a1b.bin" \
                -z "${duration}s" -c "$connections"
        fi
    done
done

if [ "$compare" = 1 ]; then
    # At full speed each server's latency includes the queue of whatever it could not
    # serve yet, and the fastest one also saturates oha's core. The same rate for all,
    # below what the slowest served, compares the latency of the servers themselves.
    echo "== equal load: every target at 80% of the slowest one's median req/s"
    for round in $(seq 1 "$rounds"); do
        for size in $sizes; do
            rate="$(python3 - "$results" "$size" "${targets[*]}" <<'PY'
import csv, statistics, sys
path, size, targets = sys.argv[1], sys.argv[2], sys.argv[3].split()
rows = [r for r in csv.DictReader(open(path), delimiter="\t") if r["row"] == size]
medians = [statistics.median(float(r["req_s"]) for r in rows if r["target"] == t) for t in targets]
print(max(1, int(0.8 * min(medians))))
PY
)"
            for target in "${targets[@]}"; do
                measure "$target" "$size@$rate" "$round" "${url_of[$target]}/obj-$size.3f9c2a1b.bin" \
                    -z "${duration}s" -c "$connections" -q "$rate"
            done
        done
    done
fi

if [ "$compare" = 1 ] && [[ " $sizes " == *" 1k "* ]]; then
    # oha's core runs out first at 1 KiB (the fastest target keeps it busier than itself),
    # so its full-speed p99 there is partly oha's own queue. wrk, written in C, costs
    # less per response and still has room on the same core; it reads bodies 8 KiB at a
    # time, so it saturates sooner than oha on large ones, and only 1 KiB is run.
    echo "== 1 KiB hits at full speed with wrk (a lighter load generator)"
    for round in $(seq 1 "$rounds"); do
        for target in "${targets[@]}"; do
            measure_with wrk "$target" "1k-wrk" "$round" "${url_of[$target]}/obj-1k.3f9c2a1b.bin"
        done
    done
fi

# Sum of the edge's origin fetch times, in ms (its `edgecache_origin_fetch_seconds`).
origin_fetch_ms() {
    curl -s "${admin_of[edgecache]}/metrics" |
        awk '/^edgecache_origin_fetch_seconds_sum/ { printf "%.3f", $2 * 1000 }'
}

if [ "$cold" = 1 ]; then
    echo "== cold miss: 1000 requests, 200 connections, one cold 1 KiB object per round"
    : > "$out/origin-wait.txt"
    # The origin's own response time for such an object: one request at a time, and under
    # the same 1,000 requests over 200 new connections (what connection setup alone costs).
    measure origin-direct single 1 "$origin/cold-origin-1.3f9c2a1b.bin" -n 200 -c 1
    measure origin-direct cold 1 "$origin/cold-origin-1.3f9c2a1b.bin" -n 1000 -c 200
    for round in $(seq 1 "$rounds"); do
        for target in "${targets[@]}"; do
            url="${url_of[$target]}/cold-$target-$round.3f9c2a1b.bin"
            before_fetch="$(origin_fetch_ms)"
            measure "$target" cold "$round" "$url" -n 1000 -c 200
            if [ "$target" = edgecache ]; then
                # How long the origin took to answer the edge's one request, under this load.
                awk -v a="$before_fetch" -v b="$(origin_fetch_ms)" \
                    'BEGIN { printf "   edgecache       the origin answered its one request in %.2f ms\n", b - a }' |
                    tee -a "$out/origin-wait.txt"
            fi
            # The same load once the object is cached: what 1,000 requests over 200 new
            # connections cost this server anyway. The difference is what the cold object
            # added.
            measure "$target" cold-hot "$round" "$url" -n 1000 -c 200
        done
    done
fi

echo "== peak memory (VmHWM of the server and its children)"
for target in "${targets[@]}" $([ "$disk" = 1 ] && echo edgecache-disk); do
    printf '   %-15s %s MiB\n' "$target" "$(( $(tree_peak_kib "${pid_of[$target]}") / 1024 ))"
done

python3 - "$results" "$out/origin-wait.txt" "$client_core_count" <<'EOF'
import csv, os, re, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    by.setdefault((r["target"], r["row"]), []).append(r)
def med(key, target, row):
    vals = [float(r[key]) for r in by.get((target, row), [])]
    return statistics.median(vals) if vals else None
targets = []
for r in rows:
    if r["target"] not in targets and r["target"] != "origin-direct":
        targets.append(r["target"])
order = []
for r in rows:
    if r["row"] not in order:
        order.append(r["row"])
print()
print("medians (req/s, p50 ms, p99 ms, server cpu %, load generator cpu % (oha, or wrk in")
print("the -wrk rows); errors and non-200 summed)")
print("%-12s %-15s %9s %8s %8s %6s %6s %7s %7s" % (
    "row", "target", "req/s", "p50", "p99", "cpu%", "gen%", "errors", "origin"))
# oha has one core. Where it is nearly all busy, oha sets the pace, and its p99 includes
# the time responses waited for oha itself: it no longer measures the server alone.
GENERATOR_BOUND = 95 * int(sys.argv[3])
bound = []
for row in order:
    for t in targets + ["origin-direct"]:
        if (t, row) not in by:
            continue
        errors = sum(int(r["errors"]) + int(r["non_200"]) for r in by[(t, row)])
        origin = sum(int(r["origin_requests"]) for r in by[(t, row)])
        gen = med("gen_cpu_pct", t, row)
        if gen >= GENERATOR_BOUND and not row.startswith("cold") and t != "origin-direct":
            bound.append("%s %s" % (t, row))
        print("%-12s %-15s %9.0f %8.2f %8.2f %6.0f %6.0f %7d %7d" % (row, t, med("req_s", t, row),
              med("p50_ms", t, row), med("p99_ms", t, row), med("cpu_pct", t, row), gen, errors, origin))
if bound:
    print()
    print("The load generator's cores were at least %d%% busy for: %s." % (GENERATOR_BOUND, ", ".join(bound)))
    print("There it set the pace, and p99 includes its own queue; the equal-load rows")
    print("(SIZE@RATE) and the 1 KiB rows with wrk (1k-wrk), with --compare, compare the")
    print("servers' latency.")
others = [t for t in targets if t in ("nginx", "varnish")]
if others:
    print()
    print("edgecache / other (median req/s ratio; p99 ratio, lower is better)")
    for row in order:
        if row.startswith("cold") or ("edgecache", row) not in by:
            continue
        parts = []
        for o in others:
            e, x = med("req_s", "edgecache", row), med("req_s", o, row)
            ep, xp = med("p99_ms", "edgecache", row), med("p99_ms", o, row)
            if e and x:
                parts.append("%s %.2fx req/s, p99 %.2fx" % (o, e / x, ep / xp if xp else float("nan")))
        print("%-12s %s" % (row, "; ".join(parts)))
    # Rounds are interleaved so that targets in one round share the machine's state; the
    # ratio within each round is less moved by drift between rounds than a ratio of medians.
    print()
    print("edgecache / other, round by round (req/s ratio; p99 ratio), and their medians")
    for row in order:
        if row.startswith("cold") or ("edgecache", row) not in by:
            continue
        mine = {r["round"]: r for r in by[("edgecache", row)]}
        parts = []
        for o in others:
            pairs = [(float(mine[r["round"]]["req_s"]) / float(r["req_s"]),
                      float(mine[r["round"]]["p99_ms"]) / float(r["p99_ms"]))
                     for r in by.get((o, row), [])
                     if r["round"] in mine and float(r["req_s"]) > 0 and float(r["p99_ms"]) > 0]
            if pairs:
                parts.append("%s %s req/s (median %.2fx), p99 %s (median %.2fx)" % (
                    o, "/".join("%.2f" % q for q, _ in pairs), statistics.median(q for q, _ in pairs),
                    "/".join("%.2f" % p for _, p in pairs), statistics.median(p for _, p in pairs)))
        print("%-12s %s" % (row, "; ".join(parts)))
single = med("p99_ms", "origin-direct", "single")
if single is not None and any((t, "cold-hot") in by for t in targets):
    print()
    print("cold miss: p99 of the cold run less p99 of the same load served hot, against the")
    print("origin's own p99 for one request at a time (+10%% +5 ms = %.2f ms)" % (single * 1.1 + 5))
    for t in targets:
        cold, hot = med("p99_ms", t, "cold"), med("p99_ms", t, "cold-hot")
        if cold is None or hot is None:
            continue
        print("%-15s cold %.2f ms, hot %.2f ms: the cold object added %.2f ms" % (t, cold, hot, cold - hot))
    waits = []
    if os.path.exists(sys.argv[2]):
        waits = [float(m) for m in re.findall(r"in ([0-9.]+) ms", open(sys.argv[2]).read())]
    if waits:
        print("the origin answered edgecache's one request in %.2f ms (median of %d; %s)" % (
            statistics.median(waits), len(waits), ", ".join("%.2f" % w for w in waits)))
EOF
echo
echo "raw results: $results"
