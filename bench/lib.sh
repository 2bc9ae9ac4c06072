# Helpers shared by bench/load.sh and bench/relay.sh. Sourced after the
# caller has defined log(), die() and SUDO.

# Install Postfix's smtp-source and smtp-sink when missing. "No
# configuration": the package writes no /etc/postfix/main.cf, so its
# maintainer scripts have nothing to start; we never use that instance.
ensure_smtp_source() {
    command -v smtp-source >/dev/null 2>&1 && command -v smtp-sink >/dev/null 2>&1 && return 0
    log "smtp-source/smtp-sink missing: installing the Debian postfix package"
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: install Postfix's smtp-source by hand"
    echo "postfix postfix/main_mailer_type select No configuration" |
        $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive timeout 900 \
        $SUDO apt-get install -y --no-install-recommends postfix >&2
    command -v smtp-sink >/dev/null 2>&1 || die "postfix installed but no smtp-sink"
    if [ -f /etc/postfix/main.cf ] && $SUDO postfix status >/dev/null 2>&1; then
        log "the package started the system Postfix; stopping it again"
        $SUDO postfix stop >&2 || true
    fi
}

port_in_use() {
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htln "sport = :$1" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}

# Pick a free port below the kernel's range for outgoing connections, so
# a port an open outgoing connection uses is never chosen.
EPH_LO="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
free_port() {
    local p i lo=10000 span
    span=$((EPH_LO - lo)); [ "$span" -gt 1000 ] || { lo=1025; span=$((EPH_LO - lo)); }
    for i in $(seq 1 200); do
        p=$((lo + RANDOM % span))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

# Wait (at most $3 seconds) until 127.0.0.1:$1 greets with 220; $2 is a PID
# that must stay alive meanwhile ("" for none).
wait_greeting() {
    local port="$1" pid="$2" secs="$3" i banner
    for i in $(seq 1 $((secs * 10))); do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        banner="$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port && head -c 3 <&3 && printf 'QUIT\r\n' >&3" 2>/dev/null || true)"
        [ "$banner" = "220" ] && return 0
        sleep 0.1
    done
    return 1
}

now() { date +%s.%N; }

# Busy and idle jiffies of the whole machine.
cpu_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $5 + $6 }' /proc/stat; }

# CPU jiffies used by process $1 and its children, dead (cutime/cstime of
# $1) or alive: sluice, or the private Postfix master and its daemons.
tree_jiffies() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v p="$1" '{
        pid = $1; rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
        # f[2] = ppid, f[12..15] = utime stime cutime cstime
        if (pid == p) t += f[12] + f[13] + f[14] + f[15]
        else if (f[2] == p) t += f[12] + f[13]
    } END { print t + 0 }'
}

size_label() { if [ "$1" -ge 1024 ] && [ $(($1 % 1024)) = 0 ]; then echo "$(($1 / 1024)) KB"; else echo "$1 B"; fi; }

