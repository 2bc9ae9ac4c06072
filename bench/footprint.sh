#!/usr/bin/env bash
# The policy chain's cache footprint per session, measured by simulation.
#
# Usage: bash bench/footprint.sh [CASE...]
#
#   CASE   shipped_chain cases of the policy bench to profile
#          (default: reuse_cold fresh_cold)
#
# Runs `cargo bench --bench policy -- shipped_chain/CASE` under valgrind's
# callgrind with a simulated 2 MiB last-level cache, collecting only inside
# the chain's session calls, and prints per session the instructions and
# the distinct lines of code and data that missed that cache, grouped by
# where the code lives (bench/footprint.py). The `_cold` cases write a
# 64 MiB buffer between sessions, as the gateway's other work does; then
# every line a session touches misses, and the miss counts are its
# footprint. Unlike wall-clock figures on a shared 2-core VM, these counts
# repeat to within a few percent.
#
# Needs valgrind (installed with apt-get when missing, as root or with
# sudo) and the shipped policies (built here when missing). Takes about
# two minutes per case.

set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { printf '[footprint] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(reuse_cold fresh_cold)

if ! command -v valgrind >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "valgrind missing and no apt-get"
    log "installing valgrind"
    DEBIAN_FRONTEND=noninteractive timeout 900 $SUDO apt-get install -y valgrind >&2
fi
if [ ! -f target/policies/wasm32-wasip2/release/header_rules.wasm ]; then
    log "building the shipped policies"
    cargo build --release -p sluice-policy-build >&2
fi
log "building the policy bench"
BENCH="$(cargo bench -p sluice --bench policy --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "policy" and m.get("executable"):
        print(m["executable"])')"
[ -x "$BENCH" ] || die "policy bench executable not found"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for case in "${CASES[@]}"; do
    log "profiling shipped_chain/$case"
    # --smc-check: the guests' code is generated at run time.
    timeout 1800 valgrind --tool=callgrind --cache-sim=yes --LL=2097152,16,64 \
        --smc-check=all-non-file \
        --toggle-collect='*ChainSession*' --toggle-collect='*Chain::session*' \
        --callgrind-out-file="$OUT/$case.out" \
        "$BENCH" --bench --profile-time 10 "shipped_chain/$case" >"$OUT/$case.log" 2>&1 ||
        { tail -20 "$OUT/$case.log" >&2; die "valgrind failed on $case"; }
    echo "== shipped_chain/$case"
    python3 bench/footprint.py "$OUT/$case.out"
done
