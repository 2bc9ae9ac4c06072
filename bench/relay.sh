#!/usr/bin/env bash
# End-to-end relay throughput: smtp-source -> relay -> smtp-sink.
#
# Usage: bash bench/relay.sh [--quick] [--repeat R] [--conc LIST] [--size LIST]
#                            [--no-postfix] [--keep]
#
#   --quick       1 run per case, fewer messages (a smoke test)
#   --repeat R    runs per case, the median is reported (default 3; --quick: 1)
#   --conc LIST   client sessions at a time, comma-separated (default 20,100)
#   --size LIST   message sizes in octets, comma-separated (default 1024,102400)
#   --no-postfix  skip the private Postfix relay
#   --keep        keep the temporary data directories and logs
#
# Environment: N_1K / N_100K override the message counts (N_1K for sizes up
# to 10 KB, N_100K for larger ones); RELAY_TMPDIR picks
# where the temporary directories go (default /tmp if it is a real disk
# filesystem on the same device as the repository, else target/relay-bench).
#
# Relays compared, each between the same smtp-source and the same smtp-sink:
#   * direct       no relay at all: smtp-source -> smtp-sink (the sink's and
#                  the client's own capacity: the ceiling for the rest)
#   * sluice       no policies; MX for relay.test is sink.test = 127.0.0.1
#                  (static [dns]), mx_port = the sink's port, tls = "none"
#   * sluice+chain the same plus three shipped policies: access, rate-limit
#                  (kv, clock; limits never reached) and header-rules (one
#                  rule that never matches, one add_header), precompiled;
#                  a fresh instance of each policy per session (the default)
#   * sluice+reuse the same chain with reuse_instances = true: warm, init'ed
#                  instances handed from session to session
#   * postfix      a private Postfix instance (own config and queue under the
#                  temp dir) with relayhost = [127.0.0.1]:<sink port>
# The time of a run is from just before smtp-source starts until the sink
# has counted all N messages (smtp-sink -c). A run counts only if the sink
# got exactly N messages (checked again 1 s later), smtp-source exited 0
# and the relay's queue is empty afterwards.
#
# Needs root to run the private Postfix instance (skipped otherwise) and
# to install the postfix package when smtp-source is missing. The system
# Postfix instance is never started or touched.

set -euo pipefail

QUICK=0
REPEAT=""
CONC_ARG="20,100"
SIZE_ARG="1024,102400"
WITH_POSTFIX=1
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        --conc) CONC_ARG="${2:?--conc needs a list}"; shift ;;
        --size) SIZE_ARG="${2:?--size needs a list}"; shift ;;
        --no-postfix) WITH_POSTFIX=0 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUICE="$REPO/target/release/sluice"
WASM_DIR="$REPO/target/policies/wasm32-wasip2/release"
IFS=, read -r -a CONCURRENCY <<<"$CONC_ARG"
IFS=, read -r -a SIZES <<<"$SIZE_ARG"
for v in "${CONCURRENCY[@]}" "${SIZES[@]}"; do
    case "$v" in ''|*[!0-9]*|0) echo "--conc and --size take positive numbers: $v" >&2; exit 2 ;; esac
done
for v in "${CONCURRENCY[@]}"; do
    [ "$v" -le 300 ] || { echo "--conc: at most 300 sessions (the relays' connection limit): $v" >&2; exit 2; }
done
if [ "$QUICK" = 1 ]; then
    N_1K="${N_1K:-1000}"
    N_100K="${N_100K:-300}"
    REPEAT="${REPEAT:-1}"
else
    N_1K="${N_1K:-5000}"
    N_100K="${N_100K:-2000}"
    REPEAT="${REPEAT:-3}"
fi
RUN_TIMEOUT=300   # seconds, per run: smtp-source and waiting for the sink
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

log() { printf '[relay] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- cleanup
SLUICE_PID=""
SINK_PID=""
SRC_PID=""
PFX_CONF=""
PFX_MASTER_PID=""
WORK=""

stop_pid() { # pid name: SIGTERM, 30 s, SIGKILL; returns its exit status
    local pid="$1" name="$2"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name $pid ignored SIGTERM for 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

stop_sluice() { local p="$SLUICE_PID"; SLUICE_PID=""; stop_pid "$p" sluice; }
stop_sink() { local p="$SINK_PID"; SINK_PID=""; stop_pid "$p" smtp-sink || true; }

stop_postfix() {
    [ -n "$PFX_CONF" ] || return 0
    timeout 60 $SUDO postfix -c "$PFX_CONF" stop >/dev/null 2>&1 || true
    if [ -n "$PFX_MASTER_PID" ]; then
        local i
        for i in $(seq 1 100); do
            kill -0 "$PFX_MASTER_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$PFX_MASTER_PID" 2>/dev/null; then
            log "private postfix master $PFX_MASTER_PID still up: SIGKILL"
            $SUDO kill -KILL "$PFX_MASTER_PID" 2>/dev/null || true
        fi
    fi
    PFX_CONF=""
    PFX_MASTER_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$SRC_PID" ]; then kill -TERM "$SRC_PID" 2>/dev/null || true; wait "$SRC_PID" 2>/dev/null || true; fi
    stop_sluice || true
    stop_postfix || true
    stop_sink || true
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
            log "kept $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM



# Below the kernel's ephemeral range (outbound connections of the relays
# and of smtp-source take ports there, and a listener cannot bind a port a
# live connection uses: sluice failed so once with EADDRINUSE).



count_files() { # dir: regular files below it
    { find "$1" -type f 2>/dev/null || true; } | wc -l | tr -d ' '
}



loadavg1() { cut -d' ' -f1 /proc/loadavg; }

# ---------------------------------------------------------------- the sink
# One smtp-sink for the whole benchmark; a run waits for its counter to
# grow by N. smtp-sink -c writes "sess=A quit=B mesg=C\r" on every event.
SINK_PORT=""
SINK_OUT=""
start_sink() {
    SINK_PORT="$(free_port)"
    SINK_OUT="$WORK/sink.out"
    local u=""
    [ "$(id -u)" != 0 ] || u="-u nobody"
    # -m: connections at once (the relays open up to 100 + some)
    # shellcheck disable=SC2086
    smtp-sink -c $u -m 1000 -h sink.test "127.0.0.1:$SINK_PORT" 1000 >"$SINK_OUT" 2>"$WORK/sink.err" &
    SINK_PID=$!
    wait_greeting "$SINK_PORT" "$SINK_PID" 10 || die "smtp-sink did not start on 127.0.0.1:$SINK_PORT"
    log "smtp-sink on 127.0.0.1:$SINK_PORT (pid $SINK_PID)"
}

sink_count() {
    local c
    c="$(tail -c 200 "$SINK_OUT" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2)"
    echo "${c:-0}"
}

# ---------------------------------------------------------------- one run
# Run smtp-source against 127.0.0.1:$1 (server process tree $5) and wait
# until the sink has counted N more messages. Sets RUN_SECS (to the last
# message at the sink), SRC_SECS (smtp-source done = all accepted), SRC_RC,
# GOT (messages counted by the sink during the run, 1 s after the end),
# LOAD (1-minute load average just before), CPU_SERVER, CPU_OTHER.
run_once() { # port conc n size server_pid out
    local port="$1" conc="$2" n="$3" size="$4" server="$5" out="$6"
    local c0 target t0 t1 ts="" j0 j1 s0 s1 cnt deadline
    LOAD="$(loadavg1)"
    c0="$(sink_count)"
    target=$((c0 + n))
    j0="$(cpu_jiffies)"; s0=0; [ -z "$server" ] || s0="$(tree_jiffies "$server")"
    t0="$(now)"
    timeout "$RUN_TIMEOUT" smtp-source -s "$conc" -m "$n" -l "$size" \
        -M bench.example.com -f a@example.com -t b@relay.test \
        "127.0.0.1:$port" >"$out" 2>&1 &
    SRC_PID=$!
    deadline=$(( $(date +%s) + RUN_TIMEOUT + 5 ))
    t1=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        if [ -z "$ts" ] && ! kill -0 "$SRC_PID" 2>/dev/null; then ts="$(now)"; fi
        cnt="$(sink_count)"
        if [ "$cnt" -ge "$target" ]; then t1="$(now)"; break; fi
        sleep 0.02
    done
    SRC_RC=0
    wait "$SRC_PID" || SRC_RC=$?
    SRC_PID=""
    [ -n "$ts" ] || ts="$(now)"
    [ -n "$t1" ] || t1="$(now)"
    j1="$(cpu_jiffies)"; s1=0; [ -z "$server" ] || s1="$(tree_jiffies "$server")"
    RUN_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    SRC_SECS="$(awk -v a="$t0" -v b="$ts" 'BEGIN { printf "%.2f", b - a }')"
    local hz; hz="$(getconf CLK_TCK)"
    CPU_SERVER="$(awk -v a="$s0" -v b="$s1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
    CPU_ALL="$(awk -v a="$j0" -v b="$j1" -v hz="$hz" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / hz }')"
    sleep 1
    GOT=$(( $(sink_count) - c0 ))
}

RESULTS=""
record() { # relay conc size n ok secs got notes
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
}

finish_run() { # relay conc size n queue_left extra_notes
    local relay="$1" conc="$2" size="$3" n="$4" left="$5" notes="$6" ok=1
    [ "$SRC_RC" = 0 ] || notes="$notes smtp-source rc=$SRC_RC: $(tail -n 1 "$WORK/last-src.out" | tr '\t' ' ');"
    [ "$GOT" = "$n" ] || { ok=0; notes="$notes sink got $GOT of $n;"; }
    [ "$left" = 0 ] || { ok=0; notes="$notes queue left=$left;"; }
    [ "$SRC_RC" = 0 ] || ok=0
    notes="load1=$LOAD accepted@${SRC_SECS}s cpu(s): relay=$CPU_SERVER machine=$CPU_ALL/${RUN_SECS}s wall${notes:+;$notes}"
    record "$relay" "$conc" "$size" "$n" "$ok" "$RUN_SECS" "$GOT" "$notes"
    log "$relay c=$conc size=$size: $n msgs in ${RUN_SECS}s ($(awk -v n="$GOT" -v s="$RUN_SECS" 'BEGIN { printf "%.0f", n / s }') msg/s), sink got $GOT, ok=$ok; $notes"
}

# ---------------------------------------------------------------- direct
run_direct() { # conc size n rep
    run_once "$SINK_PORT" "$2" "$3" "$1" "" "$WORK/last-src.out"
    finish_run direct "$1" "$2" "$3" 0 ""
}

# ---------------------------------------------------------------- sluice
POLICY_CACHE=""

write_chain() { # file reuse(true|false): appends the policy chain
    cat >>"$1" <<EOF

[policy_engine]
cache_dir = "$POLICY_CACHE"

[[policy]]
name = "access"
reuse_instances = $2
path = "$WASM_DIR/access.wasm"
on_error = "tempfail"
[policy.config]
deny_networks = ["192.0.2.0/24"]     # TEST-NET-1: nobody here; everything is allowed

[[policy]]
name = "rate-limit"
reuse_instances = $2
path = "$WASM_DIR/rate_limit.wasm"
capabilities = ["kv", "clock"]
on_error = "tempfail"
[policy.config]
window = "1h"
messages_per_ip = 100000000          # never reached
recipients_per_sender_domain = 100000000

[[policy]]
name = "header-rules"
reuse_instances = $2
path = "$WASM_DIR/header_rules.wasm"
on_error = "tempfail"
[[policy.config.rules]]
header = "Subject"
pattern = "(?i)xyzzy-never-matches"
action = "reject"
[[policy.config.rules]]
header = "From"
pattern = "@"
action = "add_header"
add = "X-Relay-Bench: chain"
EOF
}

write_sluice_config() { # dir port chain(0: none, 1: fresh instances, 2: reused)
    local dir="$1" port="$2" chain="$3"
    cat >"$dir/sluice.toml" <<EOF
data_dir = "$dir/data"
hostname = "relay.localhost"
local_domains = ["localhost"]
relay_networks = ["127.0.0.0/8"]

[[listener]]
address = "127.0.0.1:$port"

[limits]
# Above the largest --conc used here; x 3 policies it stays within the
# default [policy_engine] max_instances (1000), so no call lacks a slot.
max_connections = 300
max_connections_per_ip = 300
shutdown_timeout = "20s"

[queue]
deliver = true
concurrency = 100
destination_concurrency = 50

[delivery]
mx_port = $SINK_PORT
tls = "none"                 # TLS cost would dominate; measured without it

[dns]
[dns.mx]
"relay.test" = ["sink.test"]
[dns.a]
"sink.test" = ["127.0.0.1"]

[log]
level = "warn"
EOF
    case "$chain" in
        1) write_chain "$dir/sluice.toml" false ;;
        2) write_chain "$dir/sluice.toml" true ;;
    esac
}

precompile_policies() {
    POLICY_CACHE="$WORK/policy-cache"
    local dir="$WORK/precompile"
    mkdir -p "$dir" "$POLICY_CACHE"
    write_sluice_config "$dir" 1 1
    local t0 t1
    t0="$(now)"
    timeout 900 "$SLUICE" policy compile --config "$dir/sluice.toml" \
        "$WASM_DIR/access.wasm" "$WASM_DIR/rate_limit.wasm" "$WASM_DIR/header_rules.wasm" >&2 ||
        die "sluice policy compile failed"
    t1="$(now)"
    log "policies precompiled in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')s into $POLICY_CACHE"
}

run_sluice() { # chain(0|1) conc size n rep
    local chain="$1" conc="$2" size="$3" n="$4" rep="$5"
    local relay="sluice"
    case "$chain" in 1) relay="sluice+chain" ;; 2) relay="sluice+reuse" ;; esac
    local dir="$WORK/sluice-ch$chain-c$conc-s$size-r$rep" port
    mkdir -p "$dir"
    port="$(free_port)"
    write_sluice_config "$dir" "$port" "$chain"
    local st0 st1
    st0="$(now)"
    "$SLUICE" serve --config "$dir/sluice.toml" 2>"$dir/sluice.log" &
    SLUICE_PID=$!
    if ! wait_greeting "$port" "$SLUICE_PID" 60; then
        tail -n 20 "$dir/sluice.log" >&2 || true
        die "sluice did not answer on 127.0.0.1:$port within 60 s"
    fi
    st1="$(now)"
    cp /dev/null "$WORK/last-src.out"
    run_once "$port" "$conc" "$n" "$size" "$SLUICE_PID" "$WORK/last-src.out"
    cp "$WORK/last-src.out" "$dir/smtp-source.out"
    # Wait (bounded) for the queue to empty: the sink may have counted the
    # last message before sluice removed it from its queue.
    local queue="$dir/data/spool" left i
    for i in $(seq 1 50); do
        left="$(count_files "$queue/queue")"
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    local rss stop_rc=0 notes=""
    rss="$(awk '/^VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$SLUICE_PID/status" 2>/dev/null || echo "?")"
    stop_sluice || stop_rc=$?
    local warns
    warns="$(grep -E ' (WARN|ERROR) ' "$dir/sluice.log" | grep -vc 'self-signed certificate' || true)"
    [ "$stop_rc" = 0 ] || notes="$notes exit=$stop_rc;"
    [ "$warns" = 0 ] || notes="$notes log_warn_error=$warns ($(grep -E ' (WARN|ERROR) ' "$dir/sluice.log" | grep -v 'self-signed certificate' | head -n 1 | cut -c1-160 | tr '\t|' '  '));"
    notes=" start=$(awk -v a="$st0" -v b="$st1" 'BEGIN { printf "%.2f", b - a }')s rss=$rss;$notes"
    finish_run "$relay" "$conc" "$size" "$n" "$left" "$notes"
    if [ "$KEEP" = 0 ]; then rm -rf "$dir/data"; fi
}

# ---------------------------------------------------------------- postfix
PFX_DIR=""
PFX_PORT=""

start_postfix() {
    PFX_DIR="$WORK/postfix"
    PFX_PORT="$(free_port)"
    local conf="$PFX_DIR/conf" q="$PFX_DIR/queue" d="$PFX_DIR/data"
    mkdir -p "$conf" "$q" "$d"
    chmod 755 "$WORK" "$PFX_DIR"
    $SUDO chown postfix: "$d"
    cat >"$conf/main.cf" <<EOF
# A private relaying Postfix for benchmarks only: everything to the sink.
compatibility_level = 3.6
queue_directory = $q
data_directory = $d
mail_owner = postfix
setgid_group = postdrop
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
syslog_name = postfix-relay-bench
maillog_file_prefixes = $PFX_DIR
maillog_file = $PFX_DIR/postfix.log
myhostname = relay-pf.localhost
mydomain = localhost
myorigin = localhost
mydestination = localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_PORT
smtp_tls_security_level = none
smtpd_tls_security_level = none
default_destination_concurrency_limit = 50
smtp_destination_concurrency_limit = 50
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_peername_lookup = no
default_process_limit = 300
biff = no
EOF
    cat >"$conf/master.cf" <<EOF
127.0.0.1:$PFX_PORT inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    PFX_CONF="$conf"
    timeout 60 $SUDO postfix -c "$conf" start >&2 || true
    local i
    for i in $(seq 1 50); do
        [ -s "$q/pid/master.pid" ] && break
        sleep 0.1
    done
    PFX_MASTER_PID="$(tr -d ' \n' <"$q/pid/master.pid" 2>/dev/null || true)"
    if [ -z "$PFX_MASTER_PID" ] || ! wait_greeting "$PFX_PORT" "$PFX_MASTER_PID" 15; then
        tail -n 20 "$PFX_DIR/postfix.log" >&2 || true
        die "private postfix did not start on 127.0.0.1:$PFX_PORT"
    fi
    log "private postfix $(postconf -d -h mail_version) relay on 127.0.0.1:$PFX_PORT (master $PFX_MASTER_PID)"
}

pfx_queued() {
    { $SUDO find "$PFX_DIR/queue/maildrop" "$PFX_DIR/queue/incoming" "$PFX_DIR/queue/active" \
        "$PFX_DIR/queue/deferred" "$PFX_DIR/queue/hold" -type f 2>/dev/null || true; } | wc -l | tr -d ' '
}

run_postfix() { # conc size n rep
    local conc="$1" size="$2" n="$3" rep="$4" notes=""
    local before errs0 errs left i
    before="$(pfx_queued)"
    [ "$before" = 0 ] || die "postfix queue not empty before the run ($before)"
    errs0="$(grep -cE 'warning|error|fatal|panic|status=(deferred|bounced)' "$PFX_DIR/postfix.log" || true)"
    run_once "$PFX_PORT" "$conc" "$n" "$size" "$PFX_MASTER_PID" "$WORK/last-src.out"
    cp "$WORK/last-src.out" "$PFX_DIR/smtp-source-c$conc-s$size-r$rep.out"
    for i in $(seq 1 50); do
        left="$(pfx_queued)"
        [ "$left" = 0 ] && break
        sleep 0.1
    done
    errs="$(grep -cE 'warning|error|fatal|panic|status=(deferred|bounced)' "$PFX_DIR/postfix.log" || true)"
    [ "$errs" = "$errs0" ] || notes="$notes log_warnings=$((errs - errs0));"
    finish_run postfix "$conc" "$size" "$n" "$left" "$notes"
}

# ---------------------------------------------------------------- main
ensure_smtp_source

BASE="${RELAY_TMPDIR:-/tmp}"
repo_dev="$(stat -c %d "$REPO")"
if [ -z "${RELAY_TMPDIR:-}" ] &&
    { [ "$(stat -f -c %T "$BASE")" = tmpfs ] || [ "$(stat -c %d "$BASE")" != "$repo_dev" ]; }; then
    BASE="$REPO/target/relay-bench"
    mkdir -p "$BASE"
fi
WORK="$(mktemp -d "$BASE/sluice-relay.XXXXXX")"
FSTYPE="$(findmnt -no FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")"
[ "$FSTYPE" != tmpfs ] || die "$WORK is on tmpfs: fsync would be free; set RELAY_TMPDIR"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

log "building sluice and the policies (release)"
(cd "$REPO" && timeout 1800 cargo build --release -p sluice -p sluice-policy-build >&2)
[ -x "$SLUICE" ] || die "no $SLUICE"
for w in access rate_limit header_rules; do
    [ -f "$WASM_DIR/$w.wasm" ] || die "no $WASM_DIR/$w.wasm"
done

start_sink
precompile_policies

if [ "$WITH_POSTFIX" = 1 ]; then
    if [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; then
        log "no root: skipping the Postfix comparison"
        WITH_POSTFIX=0
    else
        start_postfix
    fi
fi

RELAYS=(direct sluice sluice+chain sluice+reuse)
[ "$WITH_POSTFIX" = 0 ] || RELAYS+=(postfix)

for size in "${SIZES[@]}"; do
    if [ "$size" -le 10240 ]; then n="$N_1K"; else n="$N_100K"; fi
    for conc in "${CONCURRENCY[@]}"; do
        run_direct "$conc" "$size" "$n"
        for rep in $(seq 1 "$REPEAT"); do
            # Interleaved so that background load hits all relays alike.
            run_sluice 0 "$conc" "$size" "$n" "$rep"
            run_sluice 1 "$conc" "$size" "$n" "$rep"
            run_sluice 2 "$conc" "$size" "$n" "$rep"
            if [ "$WITH_POSTFIX" = 1 ]; then run_postfix "$conc" "$size" "$n" "$rep"; fi
        done
    done
done
stop_postfix
stop_sink


# The median run (by seconds) of a case among the runs that counted.
median_line() { # relay conc size
    local lines cnt
    lines="$(awk -F'\t' -v r="$1" -v c="$2" -v z="$3" '$1 == r && $2 == c && $3 == z && $5 == 1' "$RESULTS" | sort -t$'\t' -k6,6g)"
    [ -n "$lines" ] || return 0
    cnt="$(printf '%s\n' "$lines" | wc -l)"
    printf '%s\n' "$lines" | awk -v k="$cnt" 'NR == int((k + 1) / 2)'
}
runs_of() { awk -F'\t' -v r="$1" -v c="$2" -v z="$3" '$1 == r && $2 == c && $3 == z { t++; ok += $5 } END { printf "%d/%d", ok, t }' "$RESULTS"; }
rate_of() { # relay conc size -> msgs/s of the median run
    local l; l="$(median_line "$1" "$2" "$3")"
    [ -n "$l" ] || { echo "-"; return; }
    awk -F'\t' '{ printf "%.0f", $4 / $6 }' <<<"$l"
}
loads_of() { awk -F'\t' -v r="$1" -v c="$2" -v z="$3" '$1 == r && $2 == c && $3 == z { match($8, /load1=[0-9.]+/); s = s (s ? " " : "") substr($8, RSTART + 6, RLENGTH - 6) } END { print s }' "$RESULTS"; }

echo
echo "## Relay: smtp-source -> relay -> smtp-sink"
echo
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), load average now $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- data dirs: $WORK ($FSTYPE, $(df --output=source "$WORK" | tail -n 1))"
echo "- sluice $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?'), postfix $(postconf -d -h mail_version 2>/dev/null || echo '?')"
echo "- messages per run: $N_1K (sizes up to 10 KB), $N_100K (larger); runs per case: $REPEAT (median of the runs that counted); delivery TLS off everywhere"
echo
echo "| relay | concurrency | size | messages | seconds (median) | msgs/s | ratio vs postfix | ok runs | load1 per run |"
echo "|---|---|---|---|---|---|---|---|---|"
for size in "${SIZES[@]}"; do
    for conc in "${CONCURRENCY[@]}"; do
        pr="$(rate_of postfix "$conc" "$size")"
        for relay in "${RELAYS[@]}"; do
            l="$(median_line "$relay" "$conc" "$size")"
            if [ -n "$l" ]; then
                IFS=$'\t' read -r _ _ _ n _ secs _ _ <<<"$l"
            else
                n="$(awk -F'\t' -v r="$relay" -v c="$conc" -v z="$size" '$1 == r && $2 == c && $3 == z { print $4; exit }' "$RESULTS")"; secs="-"
            fi
            r="$(rate_of "$relay" "$conc" "$size")"
            ratio="$(awk -v a="$r" -v b="$pr" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2fx", a / b; else print "-" }')"
            echo "| $relay | $conc | $(size_label "$size") | $n | $secs | $r | $ratio | $(runs_of "$relay" "$conc" "$size") | $(loads_of "$relay" "$conc" "$size") |"
        done
    done
done

echo
echo "Policy chain overhead (vs sluice without policies, median msgs/s; positive = the chain is slower):"
echo
echo "| concurrency | size | sluice msgs/s | sluice+chain msgs/s | overhead (fresh instances) | sluice+reuse msgs/s | overhead (reused instances) |"
echo "|---|---|---|---|---|---|---|"
overhead() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%+.1f %%", 100 * (a - b) / a; else print "-" }'; }
for size in "${SIZES[@]}"; do
    for conc in "${CONCURRENCY[@]}"; do
        a="$(rate_of sluice "$conc" "$size")"; b="$(rate_of sluice+chain "$conc" "$size")"; c="$(rate_of sluice+reuse "$conc" "$size")"
        echo "| $conc | $(size_label "$size") | $a | $b | $(overhead "$a" "$b") | $c | $(overhead "$a" "$c") |"
    done
done

echo
echo "CPU per relayed message (median over the runs that counted; \"relay\" is the relay's process"
echo "tree, \"machine\" all CPUs, client and sink included: what a CPU-bound relay's throughput"
echo "follows). The chain's share of the machine's CPU is its cost where the cores are the limit:"
echo
echo "| concurrency | size | sluice relay / machine µs | +chain (fresh) relay / machine µs | machine overhead (fresh) | +reuse relay / machine µs | machine overhead (reused) |"
echo "|---|---|---|---|---|---|---|"
# Median of a field of the notes (relay= or machine=), in µs per message.
cpu_of() { # relay conc size field
    awk -F'\t' -v r="$1" -v c="$2" -v z="$3" -v f="$4" '$1 == r && $2 == c && $3 == z && $5 == 1 {
        if (match($8, f "=[0-9.]+")) print 1e6 * substr($8, RSTART + length(f) + 1, RLENGTH - length(f) - 1) / $4
    }' "$RESULTS" | sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.0f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else print "-" }'
}
for size in "${SIZES[@]}"; do
    for conc in "${CONCURRENCY[@]}"; do
        am="$(cpu_of sluice "$conc" "$size" machine)"; bm="$(cpu_of sluice+chain "$conc" "$size" machine)"; cm="$(cpu_of sluice+reuse "$conc" "$size" machine)"
        echo "| $conc | $(size_label "$size") | $(cpu_of sluice "$conc" "$size" relay) / $am | $(cpu_of sluice+chain "$conc" "$size" relay) / $bm | $(overhead "$bm" "$am") | $(cpu_of sluice+reuse "$conc" "$size" relay) / $cm | $(overhead "$cm" "$am") |"
    done
done

echo
echo "Every run (ok = sink got exactly N, smtp-source exit 0, relay queue empty;"
echo "accepted@ = smtp-source finished, i.e. the relay had accepted all N;"
echo "cpu(s) = CPU seconds of the relay's process tree and of the whole machine during the run):"
echo
echo "| relay | concurrency | size | messages | ok | seconds | sink got | notes |"
echo "|---|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r relay conc size n ok secs got notes; do
    echo "| $relay | $conc | $(size_label "$size") | $n | $ok | $secs | $got | $notes |"
done <"$RESULTS"

if awk -F'\t' '$5 != 1 { bad = 1 } END { exit !bad }' "$RESULTS"; then
    log "some runs FAILED (see the table; logs kept in $WORK)"
    KEEP=1
    exit 1
fi
