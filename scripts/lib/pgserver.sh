# shellcheck shell=bash disable=SC2154,SC2034  # tmp and PGBIN are the caller's, free is for it to read
# A throwaway PostgreSQL server for the benchmark scripts (pgbench.sh, fleetbench.sh), and the CPU
# accounting they report beside their figures. Sourced, not run. The caller defines `die` and
# sets `PGBIN` (the server's binaries) and `tmp` (a directory of its own, removed on exit): the
# server's data, socket and log live there.

# The server must not run as root: as root, it runs as postgres.
as_server=()
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' user to run the server as"
    command -v runuser >/dev/null || die "running as root needs runuser (util-linux)"
    as_server=(runuser -u postgres --)
fi
server_up=0

# Gives $tmp to the server's user (when it is not the caller).
pg_server_own_tmp() {
    if [[ ${#as_server[@]} -gt 0 ]]; then
        chown postgres: "$tmp" || die "cannot give $tmp to the postgres user"
    fi
}

# Sets `free` to a port no socket uses (listening, connected or in TIME_WAIT) that this run has not
# handed out yet (a process that is still starting does not listen yet), below the kernel's
# ephemeral range so the benchmark's own connections cannot take it in the meantime. Called in
# this shell, not as `$(free_port)`: a subshell would forget the ports handed out.
read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
port_low=10000
port_span=$((ephemeral_low > port_low + 1000 ? ephemeral_low - port_low : 20000))
used_ports=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((port_low + RANDOM % port_span))
        [[ $used_ports == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "( sport = :$p or dport = :$p )") ]]; then
            used_ports+="$p "
            free=$p
            return
        fi
    done
    die "no free TCP port found"
}

# Creates and starts the server on 127.0.0.1:PORT with fsync and synchronous_commit on (what aop
# relies on), plus any `-c name=value` settings given after the port.
pg_server_start() { # port [-c setting ...]
    local port=$1
    shift
    "${as_server[@]}" "$PGBIN/initdb" -D "$tmp/data" -U postgres --auth=trust -E UTF8 --no-locale \
        >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; die "initdb failed (output above)"; }
    "${as_server[@]}" "$PGBIN/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 \
        -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$tmp -c fsync=on -c synchronous_commit=on $*" \
        start >"$tmp/pg_ctl.log" 2>&1 || { cat "$tmp/pg_ctl.log" "$tmp/server.log" >&2 2>/dev/null; die "the server did not start (output above)"; }
    server_up=1
}

# Stops the server if it runs: fast, else immediately. For the caller's exit trap.
pg_server_stop() {
    if [[ $server_up -eq 1 ]]; then
        "${as_server[@]}" "$PGBIN/pg_ctl" -D "$tmp/data" -m fast -w stop >/dev/null 2>&1 \
            || "${as_server[@]}" "$PGBIN/pg_ctl" -D "$tmp/data" -m immediate -w stop >/dev/null 2>&1 || true
        server_up=0
    fi
}

# CPU accounting, in clock ticks (USER_HZ), so each figure can say how much CPU the server and
# the load used and how busy the whole machine was (it may be shared). The machine's figure comes
# from /proc/stat, the others from each process's own times, which the kernel keeps differently:
# their difference says roughly what everything else used, not exactly.
hz=$(getconf CLK_TCK)
busy_ticks() {
    local _cpu user nice system _idle _iowait irq softirq steal _rest
    read -r _cpu user nice system _idle _iowait irq softirq steal _rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}
proc_ticks() { # pid [with-children]: its user+system ticks, and its reaped children's
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    read -r -a fields <<<"${stat##*) }"
    if [[ -n ${2:-} ]]; then
        echo $((fields[11] + fields[12] + fields[13] + fields[14]))
    else
        echo $((fields[11] + fields[12]))
    fi
}
server_ticks() { # the postmaster, its live children and those it has reaped
    local pm child total
    pm=$(head -n 1 "$tmp/data/postmaster.pid")
    total=$(proc_ticks "$pm" all)
    for child in $(ps -o pid= --ppid "$pm"); do
        total=$((total + $(proc_ticks "$child")))
    done
    echo "$total"
}
client_ticks() { # the calling shell's reaped children; `times` must run in that shell, not a subshell
    times >"$tmp/times"
    tail -n 1 "$tmp/times" | awk -v hz="$hz" '{
        t = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] }
        printf "%d", t * hz }'
}
