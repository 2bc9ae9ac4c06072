#!/usr/bin/env bash
# What recording sessions costs: accept-into-spool throughput of sluice
# with a policy chain, with [[listener]] record = "off", "rejected" (every
# session captured, none kept: the capture cost alone) and "all" (captured
# and written), measured with Postfix's smtp-source.
#
# Usage: bash bench/record.sh [--repeat R]
#
# Environment: N (messages per run, default 5000), CONCURRENCY (default
# 20), SIZE (octets, default 1024), RECORD_DIR (a folder to hold the
# recording folders, e.g. a tmpfs; default: inside each data folder),
# GROUP_COMMIT (true/false, default true).
#
# Builds target/release/sluice and the test guests; every run has a fresh
# data folder under a temporary folder removed at the end; each server is
# stopped by its PID. The modes alternate within each repetition so a
# change in machine load touches all of them; the median run per mode is
# reported.

set -euo pipefail

REPEAT=3
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUICE="$REPO/target/release/sluice"
N="${N:-5000}"
CONC="${CONCURRENCY:-20}"
SIZE="${SIZE:-1024}"
GROUP_COMMIT="${GROUP_COMMIT:-true}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

log() { printf '[record] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

ensure_smtp_source
log "building target/release/sluice and the test guests"
(cd "$REPO" && cargo build --release --locked -p sluice >&2)
(cd "$REPO/tests/policy-guests" && cargo build --release --target wasm32-wasip2 \
    --target-dir "$REPO/target/policy-guests" >&2)
GUEST="$REPO/target/policy-guests/wasm32-wasip2/release/policy_guest_basic.wasm"
[ -f "$GUEST" ] || die "no $GUEST"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/sluice-record-bench.XXXXXX")"
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

# One run: prints messages per second.
run() {
    local mode="$1" dir port start end count
    dir="$TMP/$mode-$RANDOM"
    mkdir -p "$dir"
    local rec="$dir/data/recordings"
    if [ -n "${RECORD_DIR:-}" ]; then rec="$RECORD_DIR/$(basename "$dir")"; fi
    port="$(free_port)"
    cat >"$dir/sluice.toml" <<EOF
data_dir = "$dir/data"
hostname = "mx.bench.example"
local_domains = ["example.com"]
[[listener]]
address = "127.0.0.1:$port"
record = "$mode"
[queue]
deliver = false
[spool]
group_commit = $GROUP_COMMIT
[record]
dir = "$rec"
[limits]
max_connections = 2000
max_connections_per_ip = 2000
[dns]
nameservers = ["127.0.0.1:9"]
[dns.a]
"host.dns.test" = ["127.0.0.1"]
[policy_engine]
cache_dir = "$REPO/target/policy-guests/engine-cache-release"
max_instances = 4000
[log]
level = "warn"
[[policy]]
name = "basic"
path = "$GUEST"
capabilities = ["kv", "dns", "clock", "metrics"]
EOF
    "$SLUICE" serve --config "$dir/sluice.toml" 2>"$dir/log" &
    PID=$!
    wait_greeting "$port" "$PID" 60 || die "sluice did not start: $(tail -5 "$dir/log")"
    start="$(now)"
    timeout 300 smtp-source -s "$CONC" -m "$N" -l "$SIZE" -f sender@bench.example \
        -t user@example.com "127.0.0.1:$port" >/dev/null 2>&1 || die "smtp-source failed ($mode)"
    end="$(now)"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    count="$(find "$dir/data/spool/queue" -name '*.eml' | wc -l)"
    [ "$count" = "$N" ] || die "$mode: $count of $N messages in the spool"
    if [ "$mode" = all ]; then
        local lines
        lines="$(cat "$rec"/*.jsonl 2>/dev/null | wc -l)"
        log "$mode: $lines sessions recorded"
    fi
    rm -rf "$rec"
    awk -v n="$N" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f\n", n / (e - s) }'
    rm -rf "$dir"
}

declare -A RESULTS
for r in $(seq 1 "$REPEAT"); do
    for mode in off rejected all; do
        rate="$(run "$mode")"
        log "repetition $r, record = $mode: $rate msgs/s"
        RESULTS[$mode]="${RESULTS[$mode]:-} $rate"
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
off="$(echo "${RESULTS[off]}" | median)"
echo
echo "| record | msgs/s (median of $REPEAT; $N × $SIZE octets, $CONC senders, one policy) | vs off |"
echo "| --- | --- | --- |"
for mode in off rejected all; do
    m="$(echo "${RESULTS[$mode]}" | median)"
    echo "| $mode | $m | $(awk -v a="$m" -v b="$off" 'BEGIN { printf "%+.1f %%", (a / b - 1) * 100 }') |"
done
