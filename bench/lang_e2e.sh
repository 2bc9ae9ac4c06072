#!/usr/bin/env bash
# The same `access` policy in Rust, C, Python and JavaScript, end to end:
# smtp-source (20 sessions, one 1 KB message each) into the gateway (spool
# only, no delivery) with that one policy, with a fresh instance per
# session (the default) and with reuse_instances = true; and with no
# policy at all for reference.
#
# Usage: bash bench/lang_e2e.sh [N]      (N messages per run, default 5000)
#
# Run bench/lang.sh first: it builds the Python and JavaScript components
# into target/bench-lang/. This script builds the C one there. Prints a
# Markdown table. Everything stays on 127.0.0.1.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
N="${1:-5000}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
log() { printf '[lang-e2e] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
. bench/lib.sh
ensure_smtp_source
out=target/bench-lang
sluice=target/release/sluice
timeout 1800 cargo build --release --locked -p sluice -p sluice-policy-build >&2
[ -f "$out/python-access.wasm" ] && [ -f "$out/js-access.wasm" ] || die "run bash bench/lang.sh first"
"$sluice" policy build policies/c/access --out "$out/c-access.wasm" >&2
declare -A WASM=(
    [rust]=target/policies/wasm32-wasip2/release/access.wasm
    [c]="$out/c-access.wasm"
    [python]="$out/python-access.wasm"
    [js]="$out/js-access.wasm"
)
work="$(mktemp -d /tmp/sluice-lang-e2e.XXXXXX)"
SL_PID=""
cleanup() { [ -z "$SL_PID" ] || kill "$SL_PID" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

run() { # lang reuse -> msgs/s
    local lang="$1" reuse="$2" dir port t0 t1
    dir="$work/$lang-$reuse"; mkdir -p "$dir"
    port="$(free_port)"
    cat >"$dir/sluice.toml" <<CFG
data_dir = "$dir/data"
hostname = "bench.localhost"
local_domains = ["example.com"]
[[listener]]
address = "127.0.0.1:$port"
[limits]
max_connections = 200
max_connections_per_ip = 200
[queue]
deliver = false
[log]
level = "warn"
[policy_engine]
cache_dir = "$work/cache"
max_instances = 400
CFG
    if [ "$lang" != none ]; then
        cat >>"$dir/sluice.toml" <<CFG
[[policy]]
name = "access"
path = "$REPO/${WASM[$lang]}"
max_memory = "128MiB"
reuse_instances = $reuse
[policy.config]
deny_networks = ["203.0.113.0/24", "2001:db8:bad::/48"]
allow_networks = ["203.0.113.99"]
deny_helo = ["*.bad.example"]
deny_senders = ["@spam.example", "*.bulk.example", "noreply@"]
deny_recipients = ["blocked@example.com", "@*.internal.example"]
allow_recipients = ["postmaster@"]
CFG
    fi
    "$sluice" serve --config "$dir/sluice.toml" 2>"$dir/sluice.log" &
    SL_PID=$!
    wait_greeting "$port" "$SL_PID" 120 || { tail -5 "$dir/sluice.log" >&2; die "$lang did not start"; }
    t0="$(now)"
    timeout 600 smtp-source -s 20 -m "$N" -l 1024 -f a@sender.example -t b@example.com "127.0.0.1:$port" \
        || die "smtp-source failed ($lang reuse=$reuse)"
    t1="$(now)"
    kill "$SL_PID"; wait "$SL_PID" 2>/dev/null || true; SL_PID=""
    local stored
    stored="$(find "$dir/data/spool/queue" -name '*.json' | wc -l)"
    [ "$stored" = "$N" ] || die "$lang reuse=$reuse: $stored of $N messages spooled"
    awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }'
}

echo "## The access policy end to end: smtp-source, 20 sessions, $N messages of 1 KB, one per session, into the spool"
echo
echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
base="$(run none false)"
echo "| policy | fresh instance per session, msgs/s | vs no policy | reuse_instances, msgs/s | vs no policy |"
echo "|---|---|---|---|---|"
echo "| none | $base | | | |"
for lang in rust c python js; do
    a="$(run "$lang" false)"; b="$(run "$lang" true)"
    pa="$(awk -v x="$a" -v y="$base" 'BEGIN { printf "%+.0f %%", 100 * (x - y) / y }')"
    pb="$(awk -v x="$b" -v y="$base" 'BEGIN { printf "%+.0f %%", 100 * (x - y) / y }')"
    echo "| $lang | $a | $pa | $b | $pb |"
done
base2="$(run none false)"
echo "| none, again at the end | $base2 | | | |"
echo
echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
