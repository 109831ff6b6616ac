#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets in fuzz/. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`).
#
#   scripts/fuzz.sh                  # every target, 10000000 runs each
#   scripts/fuzz.sh classify         # one target
#   scripts/fuzz.sh all 100000       # every target, 100000 runs each
#   nice -n 19 env CARGO_BUILD_JOBS=1 scripts/fuzz.sh   # on a shared machine
#
# Targets: frame startup body classify hint config scram console (fuzz/fuzz_targets/*.rs).
# FUZZ_SANITIZER=none builds without AddressSanitizer (the default is address): pgroute
# has no unsafe code, and the slow targets (classify, config) run several times faster.
# Each run starts from fuzz/corpus/<target> copied to a temporary directory, so what
# libFuzzer adds is thrown away and the committed corpus stays small (regenerate the seeds
# with `python3 fuzz/seeds.py`). A crashing input is saved in fuzz/artifacts/<target>/;
# replay it with `cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>`.
# Prints each target's final execution count; exits 1 if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS=(frame startup body classify hint config scram console)
target=${1:-all}
runs=${2:-10000000}

case $target in
    all) selected=("${TARGETS[@]}") ;;
    frame | startup | body | classify | hint | config | scram | console) selected=("$target") ;;
    *)
        echo "usage: $0 [all|frame|startup|body|classify|hint|config|scram|console] [runs]" >&2
        exit 2
        ;;
esac
if ! [[ $runs =~ ^[0-9]+$ ]]; then
    echo "runs must be a number, got '$runs'" >&2
    exit 2
fi

# Largest input libFuzzer generates, per target.
max_len() {
    case $1 in
        config) echo 16384 ;;
        frame | classify | hint) echo 4096 ;;
        *) echo 1024 ;;
    esac
}

work=$(mktemp -d "${TMPDIR:-/tmp}/pgroute-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

sanitizer=${FUZZ_SANITIZER:-address}
(cd fuzz && cargo +nightly fuzz build --sanitizer "$sanitizer")

failed=()
summary=()
for t in "${selected[@]}"; do
    mkdir -p "$work/$t"
    cp -R "fuzz/corpus/$t/." "$work/$t/"
    log="$work/$t.log"
    echo "== $t: $runs runs" >&2
    status=0
    start=$(date +%s.%N)
    (cd fuzz && cargo +nightly fuzz run --sanitizer "$sanitizer" "$t" "$work/$t" -- \
        -runs="$runs" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) \
        >"$log" 2>&1 || status=$?
    elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1 || true)
    # libFuzzer's own average is in whole seconds (0 for short runs): use the wall clock.
    executed=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1 || true)
    rate=$(awk -v n="${executed:-0}" -v t="$elapsed" 'BEGIN { printf "%d", (t > 0 ? n / t : 0) }')
    if [[ $status -ne 0 || -z $done_line ]]; then
        tail -n 60 "$log" >&2
        failed+=("$t")
        summary+=("$t: FAILED (exit $status)")
    else
        summary+=("$t: $done_line (${elapsed}s wall, about $rate exec/s)")
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
