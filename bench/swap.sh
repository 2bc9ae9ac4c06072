#!/usr/bin/env bash
# Hot-swap benchmark: swap latency (file landing -> first session served by
# the new version; compiled-cache miss and hit; watcher and SIGHUP) and the
# throughput dip of swapping every 0.5 s under smtp-source load.
#
# Usage: bash bench/swap.sh [--quick]
#
# Builds the release gateway and the `versioned` test guest, then runs
# bench/swap.py. Needs Postfix's smtp-source (installed with the postfix
# package when missing). Everything stays on 127.0.0.1.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
log() { printf '[swap] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
. "$(dirname "$0")/lib.sh"
ensure_smtp_source
cd "$REPO"
log "building sluice (release) and the versioned test guest"
timeout 1800 cargo build --release -p sluice >&2
timeout 900 cargo build --release --target wasm32-wasip2 \
    --manifest-path tests/policy-guests/Cargo.toml \
    --target-dir target/policy-guests -p policy-guest-versioned >&2
exec python3 bench/swap.py target/release/sluice \
    target/policy-guests/wasm32-wasip2/release/policy_guest_versioned.wasm "$@"
