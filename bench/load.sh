#!/usr/bin/env bash
# Accept-into-spool load test for sluice, with Postfix as a yardstick.
#
# Usage: bash bench/load.sh [--quick] [--repeat R] [--no-postfix] [--keep]
#                           [--neighbour MB_PER_S]
#
#   --quick       fewer messages per run (a smoke test, ~2 minutes)
#   --repeat R    run every case R times and report the median run (default 1)
#   --no-postfix  skip the private Postfix comparison
#   --keep        keep the temporary data directories and logs
#   --neighbour M during every run, a background writer (started and
#                 stopped by this script) dirties M MB/s of page cache in
#                 the same filesystem without syncing it, like a build
#                 sharing the disk: shows what syncfs(2) (group commit)
#                 and fsync(2) cost when a neighbour has dirty data
#
# Environment: N_1K / N_100K override the message counts (N_1K applies to
# 1024-octet messages, N_100K to any other size); CONCURRENCY="1 20 100"
# and SIZES="1024 102400" (octets) pick a subset of the matrix; QUIET_WAIT
# (120 s) / QUIET_PCT (15) bound the wait for an idle machine before each
# run; LOAD_TMPDIR picks where the temporary data directories go (default
# /tmp if it is a real disk filesystem on the same device as the
# repository, else target/load-bench).
#
# What it does: builds `target/release/sluice`, then for every
# concurrency in (1, 20, 100) and message size in (1 KB, 100 KB) runs
# Postfix's `smtp-source` (one message per connection, as smtp-source does
# without -d) against
#   * sluice with [spool] group_commit = true,
#   * sluice with [spool] group_commit = false,
#   * a private Postfix instance (own config and queue directories under
#     the temp dir, smtpd on a free loopback port, every message put on
#     hold so nothing is ever delivered),
# each on a fresh data directory (sluice with [queue] deliver = false, so
# messages stay in queue/; Postfix a fresh instance per run), all deleted
# only at the end. A run counts only if smtp-source exits 0
# and exactly N messages are in the queue afterwards. Prints markdown
# tables: throughput, diagnostics and sluice/Postfix ratios.
#
# Needs root (or sudo) only to install the `postfix` package when
# smtp-source is missing and to run the private Postfix instance. The
# system Postfix instance is never started or touched.

set -euo pipefail

QUICK=0
REPEAT=1
WITH_POSTFIX=1
KEEP=0
NEIGHBOUR_MBPS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --repeat) REPEAT="${2:?--repeat needs a number}"; shift ;;
        --no-postfix) WITH_POSTFIX=0 ;;
        --keep) KEEP=1 ;;
        --neighbour) NEIGHBOUR_MBPS="${2:?--neighbour needs MB/s}"; shift ;;
        -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SLUICE="$REPO/target/release/sluice"
read -r -a CONCURRENCY <<<"${CONCURRENCY:-1 20 100}"
read -r -a SIZES <<<"${SIZES:-1024 102400}"
if [ "$QUICK" = 1 ]; then
    N_1K="${N_1K:-1000}"
    N_100K="${N_100K:-200}"
else
    N_1K="${N_1K:-10000}"
    N_100K="${N_100K:-4000}"
fi
SMTP_SOURCE_TIMEOUT=300   # seconds, per run
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

log() { printf '[load] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
. "$(dirname "$0")/lib.sh"

# ---------------------------------------------------------------- cleanup
SLUICE_PID=""
NEIGHBOUR_PID=""
PFX_CONF=""
PFX_MASTER_PID=""
WORK=""

stop_sluice() {
    # Stop the sluice we started (by PID), bounded: SIGTERM, 30 s, SIGKILL.
    local pid="$SLUICE_PID"
    [ -n "$pid" ] || return 0
    SLUICE_PID=""
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        local i
        for i in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "sluice $pid ignored SIGTERM for 30 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

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

# The --neighbour writer: every second, MB_PER_S MB written through the
# page cache (never synced) into one of 8 files in turn, so the dirty data
# is real and the disk use stays bounded (8 x MB_PER_S MB).
start_neighbour() {
    [ "$NEIGHBOUR_MBPS" != 0 ] || return 0
    local d="$WORK/neighbour"
    mkdir -p "$d"
    (
        child=""
        trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null; exit 0' TERM
        i=0
        while :; do
            dd if=/dev/zero of="$d/f$((i % 8))" bs=1M count="$NEIGHBOUR_MBPS" \
                status=none 2>/dev/null &
            child=$!
            wait "$child" || true
            sleep 1 &
            child=$!
            wait "$child" || true
            i=$((i + 1))
        done
    ) &
    NEIGHBOUR_PID=$!
    sleep 3   # let dirty data build up before the run starts
}

stop_neighbour() {
    [ -n "$NEIGHBOUR_PID" ] || return 0
    kill -TERM "$NEIGHBOUR_PID" 2>/dev/null || true
    wait "$NEIGHBOUR_PID" 2>/dev/null || true
    NEIGHBOUR_PID=""
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_neighbour
    stop_sluice || true
    stop_postfix || true
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$KEEP" = 1 ] || [ "$rc" != 0 ]; then
            log "kept $WORK"
        else
            $SUDO rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM






count_files() { # dir, name pattern
    { find "$1" -maxdepth 1 -type f -name "$2" 2>/dev/null || true; } | wc -l | tr -d ' '
}



# Busy % of the machine over one second.
busy_pct() {
    local a b
    a="$(cpu_jiffies)"; sleep 1; b="$(cpu_jiffies)"
    awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ")
        busy = y[1] - x[1]; idle = y[2] - x[2]
        printf "%d", (busy + idle > 0) ? 100 * busy / (busy + idle) : 0 }'
}

# Before a run, with the server idle: wait (at most QUIET_WAIT seconds)
# until what else runs on the machine uses under QUIET_PCT % of it for two
# seconds in a row. Sets BG_CPU (the last sample) and BG_WAITED.
QUIET_WAIT="${QUIET_WAIT:-120}"
QUIET_PCT="${QUIET_PCT:-15}"
wait_quiet() {
    local quiet=0 i
    BG_WAITED=0
    for i in $(seq 1 "$QUIET_WAIT"); do
        BG_CPU="$(busy_pct)"
        if [ "$BG_CPU" -lt "$QUIET_PCT" ]; then
            quiet=$((quiet + 1))
            [ "$quiet" -lt 2 ] || break
        else
            quiet=0
        fi
        BG_WAITED=$i
    done
    [ "$BG_WAITED" -lt 3 ] || log "waited ${BG_WAITED}s for the machine to quieten (now ${BG_CPU}% busy)"
}

secs_of() { # "1m2.500s" -> 62.500
    awk -v t="$1" 'BEGIN { split(t, a, "m"); sub(/s$/, "", a[2]); printf "%.2f", a[1] * 60 + a[2] }'
}

# Run smtp-source against 127.0.0.1:$2 whose server process (tree) is $6.
# Sets SRC_RC, SRC_SECS, BG_CPU/BG_WAITED, and CPU seconds used during the
# run: CPU_SERVER (the server's process tree), CPU_CLIENT (smtp-source),
# CPU_OTHER (everything else on the machine: other users' builds and tests,
# plus kernel work not charged to a process). Output in $1.
run_smtp_source() {
    local out="$1" port="$2" conc="$3" n="$4" size="$5" server="$6" t0 t1 c0 c1 s0 s1
    wait_quiet
    start_neighbour
    c0="$(cpu_jiffies)"; s0="$(tree_jiffies "$server")"
    t0="$(now)"
    SRC_RC=0
    (
        rc=0
        timeout "$SMTP_SOURCE_TIMEOUT" smtp-source -s "$conc" -m "$n" -l "$size" \
            -M bench.example.com -f a@example.com -t b@localhost \
            "127.0.0.1:$port" >"$out" 2>&1 || rc=$?
        times >"$out.times"
        exit "$rc"
    ) || SRC_RC=$?
    t1="$(now)"
    c1="$(cpu_jiffies)"; s1="$(tree_jiffies "$server")"
    stop_neighbour
    SRC_SECS="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    local hz cu cs
    hz="$(getconf CLK_TCK)"
    read -r cu cs < <(sed -n 2p "$out.times")
    CPU_CLIENT="$(awk -v u="$(secs_of "$cu")" -v s="$(secs_of "$cs")" 'BEGIN { printf "%.2f", u + s }')"
    CPU_SERVER="$(awk -v a="$s0" -v b="$s1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')"
    CPU_OTHER="$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v sv="$CPU_SERVER" -v cl="$CPU_CLIENT" \
        'BEGIN { split(a, x, " "); split(b, y, " "); o = (y[1] - x[1]) / hz - sv - cl
                 printf "%.2f", (o < 0) ? 0 : o }')"
}

# "other CPU" above 35 % of one core on average (and half a second): the
# run was disturbed. (A quiet run shows up to ~25 %: kernel network and
# writeback work not charged to any process.)
cpu_notes() { # n secs
    local per_msg disturbed
    per_msg="$(awk -v c="$CPU_SERVER" -v n="$1" 'BEGIN { printf "%.0f", 1e6 * c / n }')"
    disturbed="$(awk -v o="$CPU_OTHER" -v t="$2" 'BEGIN { if (t > 0 && o > 0.5 && o / t > 0.35) print " DISTURBED" }')"
    printf 'bg=%s%% cpu(s): server=%s (%sus/msg) client=%s other=%s%s' \
        "$BG_CPU" "$CPU_SERVER" "$per_msg" "$CPU_CLIENT" "$CPU_OTHER" "$disturbed"
}

# Results: one TSV line per run.
#   server gc conc size n ok secs landed src_rc notes
RESULTS=""

record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"
}

# ---------------------------------------------------------------- sluice
run_sluice() { # gc conc size n rep
    local gc="$1" conc="$2" size="$3" n="$4" rep="$5"
    local dir="$WORK/sluice-gc$gc-c$conc-s$size-r$rep" port notes=""
    mkdir -p "$dir"
    port="$(free_port)"
    cat >"$dir/sluice.toml" <<EOF
data_dir = "$dir/data"
hostname = "bench.localhost"
local_domains = ["localhost"]

[[listener]]
address = "127.0.0.1:$port"

[limits]
max_connections = 1000
max_connections_per_ip = 1000
shutdown_timeout = "20s"

[spool]
group_commit = $gc

[queue]
deliver = false   # measure acceptance alone: nothing leaves queue/

[log]
level = "warn"
EOF
    "$SLUICE" serve --config "$dir/sluice.toml" 2>"$dir/sluice.log" &
    SLUICE_PID=$!
    if ! wait_greeting "$port" "$SLUICE_PID" 15; then
        tail -n 20 "$dir/sluice.log" >&2 || true
        die "sluice did not answer on 127.0.0.1:$port within 15 s"
    fi
    run_smtp_source "$dir/smtp-source.out" "$port" "$conc" "$n" "$size" "$SLUICE_PID"
    local queue="$dir/data/spool/queue"
    local landed eml short leftover rss
    landed="$(count_files "$queue" '*.json')"
    eml="$(count_files "$queue" '*.eml')"
    short="$({ find "$queue" -maxdepth 1 -name '*.eml' -size -"$size"c 2>/dev/null || true; } | wc -l | tr -d ' ')"
    leftover="$({ find "$dir/data/spool/tmp" -type f 2>/dev/null || true; } | wc -l | tr -d ' ')"
    rss="$(awk '/^VmHWM/ { printf "%d MiB", $2 / 1024 }' "/proc/$SLUICE_PID/status" 2>/dev/null || echo "?")"
    local t0 t1 stop_rc=0
    t0="$(now)"
    stop_sluice || stop_rc=$?
    t1="$(now)"
    local stop_secs
    stop_secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    # Log lines above INFO other than the two expected notices (self-signed
    # certificate, deliver = false).
    local warns
    warns="$(grep -E ' (WARN|ERROR) ' "$dir/sluice.log" | grep -vEc 'self-signed certificate|deliver = false' || true)"
    [ "$eml" = "$landed" ] || notes="$notes eml=$eml!=json=$landed;"
    [ "$short" = 0 ] || notes="$notes short_eml=$short;"
    [ "$leftover" = 0 ] || notes="$notes files_left_in_tmp=$leftover;"
    [ "$stop_rc" = 0 ] || notes="$notes exit=$stop_rc;"
    [ "$warns" = 0 ] || notes="$notes log_warn_error=$warns;"
    [ "$SRC_RC" = 0 ] || notes="$notes smtp-source: $(tail -n 1 "$dir/smtp-source.out" | tr '\t' ' ');"
    notes="$(cpu_notes "$n" "$SRC_SECS"); rss=$rss stop=${stop_secs}s${notes:+;$notes}"
    local ok=1
    [ "$SRC_RC" = 0 ] && [ "$landed" = "$n" ] || ok=0
    record sluice "$gc" "$conc" "$size" "$n" "$ok" "$SRC_SECS" "$landed" "$SRC_RC" "$notes"
    log "sluice gc=$gc c=$conc size=$size: $n msgs in ${SRC_SECS}s, landed=$landed rc=$SRC_RC $notes"
    # The data dir stays until the end: deleting thousands of files here
    # can slow down the next runs' file creation (see "ext4 without a
    # journal" below).
}

# ---------------------------------------------------------------- postfix
PFX_DIR=""
PFX_PORT=""

start_postfix() { # dir
    PFX_DIR="$1"
    PFX_PORT="$(free_port)"
    local conf="$PFX_DIR/conf" q="$PFX_DIR/queue" d="$PFX_DIR/data"
    mkdir -p "$conf" "$q" "$d"
    chmod 755 "$WORK" "$PFX_DIR"
    : >"$PFX_DIR/postfix.log"
    $SUDO chown postfix: "$d"
    cat >"$conf/main.cf" <<EOF
# A private, non-delivering Postfix for benchmarks only.
compatibility_level = 3.6
queue_directory = $q
data_directory = $d
mail_owner = postfix
setgid_group = postdrop
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
syslog_name = postfix-bench
maillog_file_prefixes = $PFX_DIR
maillog_file = $PFX_DIR/postfix.log
myhostname = bench.localhost
mydomain = localhost
myorigin = localhost
mydestination = localhost
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_recipient_maps =
alias_maps =
alias_database =
# Every message goes to the hold queue: accepted and fsync'd, never delivered.
smtpd_client_restrictions = check_client_access static:HOLD
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
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
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
    log "private postfix $(postconf -d -h mail_version) on 127.0.0.1:$PFX_PORT (master $PFX_MASTER_PID, $PFX_DIR)"
}

pfx_queued() {
    { $SUDO find "$PFX_DIR/queue/hold" "$PFX_DIR/queue/incoming" "$PFX_DIR/queue/active" \
        "$PFX_DIR/queue/deferred" -type f 2>/dev/null || true; } | wc -l | tr -d ' '
}

run_postfix() { # conc size n rep
    local conc="$1" size="$2" n="$3" rep="$4" notes=""
    # A fresh instance (config, queue) per run, like sluice's data dirs.
    start_postfix "$WORK/postfix-c$conc-s$size-r$rep"
    local out="$PFX_DIR/smtp-source.out"
    local before
    before="$(pfx_queued)"
    [ "$before" = 0 ] || die "postfix queue not empty before the run ($before)"
    local errs0
    errs0="$(grep -cE 'warning|error|fatal|panic' "$PFX_DIR/postfix.log" || true)"
    run_smtp_source "$out" "$PFX_PORT" "$conc" "$n" "$size" "$PFX_MASTER_PID"
    local landed errs
    landed="$(pfx_queued)"
    errs="$(grep -cE 'warning|error|fatal|panic' "$PFX_DIR/postfix.log" || true)"
    [ "$errs" = "$errs0" ] || notes="$notes log_warnings=$((errs - errs0));"
    [ "$SRC_RC" = 0 ] || notes="$notes smtp-source: $(tail -n 1 "$out" | tr '\t' ' ');"
    notes="$(cpu_notes "$n" "$SRC_SECS")${notes:+;$notes}"
    local ok=1
    [ "$SRC_RC" = 0 ] && [ "$landed" = "$n" ] || ok=0
    record postfix - "$conc" "$size" "$n" "$ok" "$SRC_SECS" "$landed" "$SRC_RC" "$notes"
    log "postfix c=$conc size=$size: $n msgs in ${SRC_SECS}s, landed=$landed rc=$SRC_RC $notes"
    stop_postfix
}

# ---------------------------------------------------------------- main
ensure_smtp_source

BASE="${LOAD_TMPDIR:-/tmp}"
repo_dev="$(stat -c %d "$REPO")"
if [ -z "${LOAD_TMPDIR:-}" ] &&
    { [ "$(stat -f -c %T "$BASE")" = tmpfs ] || [ "$(stat -c %d "$BASE")" != "$repo_dev" ]; }; then
    BASE="$REPO/target/load-bench"
    mkdir -p "$BASE"
fi
WORK="$(mktemp -d "$BASE/sluice-load.XXXXXX")"
FSTYPE="$(findmnt -no FSTYPE -T "$WORK" 2>/dev/null || stat -f -c %T "$WORK")"
[ "$FSTYPE" != tmpfs ] || die "$WORK is on tmpfs: fsync would be free; set LOAD_TMPDIR"
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

log "building sluice (release)"
(cd "$REPO" && cargo build --release -p sluice >&2)
[ -x "$SLUICE" ] || die "no $SLUICE"
# Every run uses this copy, so a rebuild during the benchmark (someone
# else's cargo build) cannot swap the binary between runs.
SLUICE_REV="$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '?')"
cp "$SLUICE" "$WORK/sluice"
SLUICE="$WORK/sluice"

if [ "$WITH_POSTFIX" = 1 ] && [ -n "$SUDO" ] && ! sudo -n true 2>/dev/null; then
    log "no root: skipping the Postfix comparison"
    WITH_POSTFIX=0
fi

# Nothing is deleted until the end, so make sure it fits: per message about
# its size plus 8 KiB (two files, an envelope, block rounding), per server.
servers=2; [ "$WITH_POSTFIX" = 1 ] && servers=3
need_kb=0
for size in "${SIZES[@]}"; do
    if [ "$size" = 1024 ]; then n="$N_1K"; else n="$N_100K"; fi
    need_kb=$((need_kb + ${#CONCURRENCY[@]} * REPEAT * servers * n * (size / 1024 + 8)))
done
avail_kb="$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')"
log "disk: about $((need_kb / 1024)) MiB needed, $((avail_kb / 1024)) MiB free in $WORK"
[ "$need_kb" -lt $((avail_kb - 2 * 1024 * 1024)) ] ||
    die "not enough disk space (keep 2 GiB spare): lower N_1K / N_100K or --repeat"

# ext4 without a journal (common on VM images) behaves differently from a
# journaled one: no journal commits on fsync, and inode allocation skips
# every free inode deleted in the last 60 s (360 s while its inode-table
# block is dirty) -- checking each one -- so creating files right after a
# mass deletion costs a lot of system time (seen here as a 4-7x slower
# first few thousand messages). Hence nothing is deleted between runs.
JOURNAL="-"
if [ "$FSTYPE" = ext4 ]; then
    dev="$(basename "$(findmnt -no SOURCE -T "$WORK")")"
    case "$(cat "/sys/fs/ext4/$dev/journal_task" 2>/dev/null || echo '?')" in
        "<none>") JOURNAL="no journal" ;;
        "?") JOURNAL="journal unknown" ;;
        *) JOURNAL="journaled" ;;
    esac
fi

for size in "${SIZES[@]}"; do
    if [ "$size" = 1024 ]; then n="$N_1K"; else n="$N_100K"; fi
    for conc in "${CONCURRENCY[@]}"; do
        for rep in $(seq 1 "$REPEAT"); do
            # Interleaved so that background load hits all three alike.
            run_sluice true "$conc" "$size" "$n" "$rep"
            run_sluice false "$conc" "$size" "$n" "$rep"
            if [ "$WITH_POSTFIX" = 1 ]; then run_postfix "$conc" "$size" "$n" "$rep"; fi
        done
    done
done


# The median run (by seconds) of each case: server gc conc size -> line.
median_line() { # server gc conc size
    awk -F'\t' -v s="$1" -v g="$2" -v c="$3" -v z="$4" \
        '$1 == s && $2 == g && $3 == c && $4 == z' "$RESULTS" |
        sort -t$'\t' -k7,7g | awk -v r="$REPEAT" 'NR == int((r + 1) / 2)'
}

rate() { awk -v n="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }'; }
mbps() { awk -v n="$1" -v z="$2" -v s="$3" 'BEGIN { if (s > 0) printf "%.2f", n * z / s / 1e6; else print "-" }'; }

echo
echo "## Load: accept into spool (smtp-source, one message per connection)"
echo
echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
echo "- data dirs: $WORK ($FSTYPE, $JOURNAL, $(df --output=source "$WORK" | tail -n 1)); every run on a fresh directory, all deleted at the end"
echo "- sluice $SLUICE_REV (at build time), postfix $(postconf -d -h mail_version 2>/dev/null || echo '?')"
echo "- notes: bg = machine busy % just before the run (server idle; runs wait up to ${QUIET_WAIT}s for < ${QUIET_PCT}%);"
echo "  cpu(s) = CPU seconds during the run used by the server (process tree), smtp-source, and everything else;"
echo "  DISTURBED = everything else used > 35 % of a core on average"
[ "$NEIGHBOUR_MBPS" = 0 ] ||
    echo "- WITH A NEIGHBOUR writing $NEIGHBOUR_MBPS MB/s of unsynced data to the same filesystem during every run"
echo "- messages per run: $N_1K (1 KB), $N_100K (100 KB); repeat $REPEAT (median shown)"
echo
echo "| group_commit | concurrency | size | messages | seconds | msgs/s | MB/s |"
echo "|---|---|---|---|---|---|---|"
for gc in true false; do
    for conc in "${CONCURRENCY[@]}"; do
        for size in "${SIZES[@]}"; do
            line="$(median_line sluice "$gc" "$conc" "$size")"
            [ -n "$line" ] || continue
            IFS=$'\t' read -r _ _ _ _ n ok secs landed _ _ <<<"$line"
            msgs="$landed/$n"; [ "$ok" = 1 ] && msgs="$n"
            echo "| $gc | $conc | $(size_label "$size") | $msgs | $secs | $(rate "$landed" "$secs") | $(mbps "$landed" "$size" "$secs") |"
        done
    done
done

if [ "$WITH_POSTFIX" = 1 ]; then
    echo
    echo "Postfix (private instance, hold queue, same smtp-source runs):"
    echo
    echo "| concurrency | size | messages | seconds | msgs/s | MB/s | sluice gc=true / postfix | sluice gc=false / postfix |"
    echo "|---|---|---|---|---|---|---|---|"
    for conc in "${CONCURRENCY[@]}"; do
        for size in "${SIZES[@]}"; do
            line="$(median_line postfix - "$conc" "$size")"
            [ -n "$line" ] || continue
            IFS=$'\t' read -r _ _ _ _ n ok secs landed _ _ <<<"$line"
            msgs="$landed/$n"; [ "$ok" = 1 ] && msgs="$n"
            pr="$(rate "$landed" "$secs")"
            ratios=""
            for gc in true false; do
                sl="$(median_line sluice "$gc" "$conc" "$size")"
                IFS=$'\t' read -r _ _ _ _ _ _ ssecs slanded _ _ <<<"$sl"
                ratios="$ratios | $(awk -v a="$(rate "$slanded" "$ssecs")" -v b="$pr" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')"
            done
            echo "| $conc | $(size_label "$size") | $msgs | $secs | $pr | $(mbps "$landed" "$size" "$secs")$ratios |"
        done
    done
fi

echo
echo "Every run (ok = smtp-source exit 0 and all messages in the queue):"
echo
echo "| server | group_commit | concurrency | size | messages | ok | seconds | queued | smtp-source rc | notes |"
echo "|---|---|---|---|---|---|---|---|---|---|"
while IFS=$'\t' read -r srv gc conc size n ok secs landed rc notes; do
    echo "| $srv | $gc | $conc | $(size_label "$size") | $n | $ok | $secs | $landed | $rc | $notes |"
done <"$RESULTS"

if awk -F'\t' '$6 != 1 { bad = 1 } END { exit !bad }' "$RESULTS"; then
    log "some runs FAILED (see the table; logs kept in $WORK)"
    KEEP=1
    exit 1
fi
