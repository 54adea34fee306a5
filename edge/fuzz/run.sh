#!/usr/bin/env bash
# Runs every fuzz target of the edge for a bounded time each (default 60 s), starting from
# and adding to the committed corpora in edge/fuzz/corpus/. A crash stops the run and leaves
# its input in edge/fuzz/artifacts/TARGET/; turn it into a regression test before fixing it.
#
#   edge/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
for target in "${targets[@]}"; do
    echo "== $target: ${seconds}s"
    mkdir -p "fuzz/corpus/$target"
    log="$(mktemp)"
    if ! cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "== $target: crashed; the input is in edge/fuzz/artifacts/$target/" >&2
        exit 1
    fi
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::new_units_added)' "$log" || true
    rm -f "$log"
    # Keep the corpus small: only inputs that add coverage.
    cargo +nightly fuzz cmin "$target" "fuzz/corpus/$target" >/dev/null 2>&1 || true
done
