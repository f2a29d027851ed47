#!/usr/bin/env bash
# Measures aop on PostgreSQL (1, 2 and 3 instances) beside one SQLite instance, for one or more
# aop binaries, on one throwaway PostgreSQL 15 server: the runs of BENCHMARKS.md's "A fleet on
# PostgreSQL", made repeatable so two commits can be compared in one session on one machine.
# Run with --help for the details.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/fleetbench.sh BINARY [BINARY...]

Starts a throwaway PostgreSQL 15 (Debian's /usr/lib/postgresql/15/bin, or $PGBIN) in a temporary
directory on a free port (127.0.0.1, fsync and synchronous_commit on, other settings initdb's).
Then, for each BINARY in turn (an aop executable), four configurations one after the other:

  SQLite  one instance on a new SQLite file
  PG1     one instance   } each configuration on a new database of the server (createdb),
  PG2     two instances  } every instance of it started with --db postgres://.../<that database>
  PG3     three instances}

Each instance is started with `BINARY start --port P --no-open --db ...` on a free port and must
answer /health; then `LOADGEN bench --url URL1[,URL2[,URL3]] --workload $WORKLOADS --duration
$DURATION` drives them, and the instances are stopped (SIGTERM, then waited for). The same load
generator serves every run, so only the collector differs between binaries.

At the end a table gives, for each binary and configuration: single c=1 and c=64 events/s, batch
1000/req events/s and the delivery p99 (ack to receipt), each with its ratio to the same binary's
SQLite run; and a second one the errors, 503s, missed deliveries, the bench's own check of
acknowledged against stored events, the range of the bench's "rest" CPU, the CPU the collectors,
PostgreSQL, the bench and everything else used over the run, the load average, and the seconds
in which autovacuum ran (what the server is doing is sampled once a second during each run).

Environment:
  DURATION   seconds per measurement (default 10)
  WORKLOADS  aop bench workloads, comma-separated (default single,batch,delivery)
  LOADGEN    the aop binary whose `bench` drives every run (default: the last BINARY)
  OUT        where each run's output, the instances' logs and the table go
             (default: target/fleetbench/<timestamp> in this repository)
  PGBIN      PostgreSQL's binaries (default /usr/lib/postgresql/15/bin)

Run as root, the server runs as the postgres user (runuser); otherwise as the caller.
Exit status: 0; 1 if a configuration could not be run or a bench failed; 2 on a usage error.
EOF
}

die() {
    echo "fleetbench.sh: $*" >&2
    exit 1
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") usage >&2; exit 2 ;;
esac
binaries=()
for b in "$@"; do
    [[ -x $b && -f $b ]] || { echo "fleetbench.sh: '$b' is not an executable file" >&2; exit 2; }
    binaries+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")")
done
DURATION=${DURATION:-10}
WORKLOADS=${WORKLOADS:-single,batch,delivery}
LOADGEN=${LOADGEN:-${binaries[-1]}}
[[ $DURATION =~ ^[1-9][0-9]*$ ]] || { echo "fleetbench.sh: DURATION must be a whole number of seconds, not '$DURATION'" >&2; exit 2; }
[[ -x $LOADGEN ]] || { echo "fleetbench.sh: LOADGEN '$LOADGEN' is not executable" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
OUT=${OUT:-$repo/target/fleetbench/$(date +%Y%m%d-%H%M%S)}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
for tool in initdb pg_ctl psql createdb dropdb; do
    [[ -x $PGBIN/$tool ]] || die "$PGBIN/$tool not found (Debian: apt-get install postgresql-15; or set PGBIN)"
done
command -v ss >/dev/null || die "ss (iproute2) is needed to find free ports"
command -v curl >/dev/null || die "curl is needed to ask the instances' /health"

# shellcheck source-path=SCRIPTDIR source=lib/pgserver.sh
source "$here/lib/pgserver.sh"

mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/aop-fleetbench.XXXXXX")
instance_pids=()
bench_pid=""
sampler_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in $bench_pid $sampler_pid; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${instance_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${instance_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pg_server_stop
    cp "$tmp/server.log" "$OUT/postgres.log" 2>/dev/null || true
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "fleetbench.sh: interrupted" >&2; exit 130' INT TERM
pg_server_own_tmp

free_port
pg_port=$free
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; $(nproc) cores)" | tee "$OUT/header.txt"
pg_server_start "$pg_port"

# Over TCP on loopback, as the instances connect.
export PGHOST=127.0.0.1 PGPORT=$pg_port PGUSER=postgres
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d postgres "$@"; }
{
    echo "# $("$PGBIN/postgres" --version), port $pg_port, $(psql_ -Atc "SELECT format('fsync=%s synchronous_commit=%s shared_buffers=%s max_wal_size=%s max_connections=%s', current_setting('fsync'), current_setting('synchronous_commit'), current_setting('shared_buffers'), current_setting('max_wal_size'), current_setting('max_connections'))")"
    echo "# $DURATION s per measurement, workloads $WORKLOADS, load generator $LOADGEN ($("$LOADGEN" --version))"
    for b in "${binaries[@]}"; do
        echo "# binary $b: $("$b" --version)"
    done
    echo "# output in $OUT"
} | tee -a "$OUT/header.txt"

# The CPU the collectors used (the rest of the accounting is lib/pgserver.sh's): with the bench's
# own "rest", which counts PostgreSQL with everything else, each run can say who used what.
instances_ticks() {
    local pid total=0
    for pid in "${instance_pids[@]}"; do
        total=$((total + $(proc_ticks "$pid")))
    done
    echo "$total"
}

# Starts one instance of $1 with --db $2 on a free port, its output in $3; appends its pid to
# instance_pids and its URL to urls. Fails if it does not answer /health within 60 s. Another
# program may take the port between the check and the bind: then it tries another one.
start_instance() {
    local bin=$1 db=$2 log=$3 port pid attempt
    for attempt in 1 2 3; do
        free_port
        port=$free
        "$bin" start --port "$port" --no-open --db "$db" >"$log" 2>&1 &
        pid=$!
        for _ in $(seq 1 600); do
            if curl -fsS -m 2 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
                instance_pids+=("$pid")
                urls+=("http://127.0.0.1:$port")
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            echo "fleetbench.sh: $bin start --db $db did not answer /health within 60 s; its output:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        wait "$pid" 2>/dev/null || true
        if [[ $attempt -lt 3 ]] && grep -q "already in use" "$log"; then
            echo "fleetbench.sh: port $port was taken before $bin could bind it; trying another" | tee -a "$OUT/notes.txt" >&2
            continue
        fi
        echo "fleetbench.sh: $bin start --db $db exited; its output:" >&2
        tail -n 20 "$log" >&2
        return 1
    done
}

# SIGTERM to every instance, then wait: a clean stop is part of a run; one that takes over 30 s
# is killed and noted.
stop_instances() { # name
    local pid i status
    for pid in "${instance_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    i=0
    for pid in "${instance_pids[@]}"; do
        i=$((i + 1))
        for _ in $(seq 1 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "fleetbench.sh: $1 instance $i did not stop within 30 s of SIGTERM; killed" | tee -a "$OUT/notes.txt" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        status=0
        wait "$pid" 2>/dev/null || status=$?
        if [[ $status -ne 0 ]]; then
            echo "fleetbench.sh: $1 instance $i exited with status $status" | tee -a "$OUT/notes.txt" >&2
        fi
    done
    instance_pids=()
}

failures=0
configs=(sqlite pg1 pg2 pg3)
tags=()
bi=0
for bin in "${binaries[@]}"; do
    bi=$((bi + 1))
    # The binary's commit, from its --version ("aop 0.1.0 (commit 17eeb92f85e3)"), names its runs.
    commit=$("$bin" --version 2>/dev/null | sed -n 's/.*(commit \([0-9a-f]\{7\}\).*/\1/p')
    tag="$bi-${commit:-$(basename "$bin")}"
    tags+=("$tag")
    for cfg in "${configs[@]}"; do
        name="$tag-$cfg"
        urls=()
        instance_pids=()
        db=""
        if [[ $cfg == sqlite ]]; then
            n=1
        else
            n=${cfg#pg}
            db="b${bi}_$cfg"
            "$PGBIN/createdb" "$db" || die "createdb $db failed"
        fi
        # Every configuration starts from a checkpoint, so none pays for the previous one's WAL.
        psql_ -c CHECKPOINT >/dev/null || die "CHECKPOINT failed"
        started=1
        for i in $(seq 1 "$n"); do
            if [[ $cfg == sqlite ]]; then
                target="$tmp/$name.db"
            else
                target="postgres://postgres@127.0.0.1:$pg_port/$db?sslmode=disable"
            fi
            start_instance "$bin" "$target" "$OUT/$name.aop$i.log" || { started=0; break; }
        done
        if [[ $started -eq 0 ]]; then
            echo "fleetbench.sh: $name: could not start its instances; skipped" | tee -a "$OUT/notes.txt" >&2
            failures=1
            stop_instances "$name"
            continue
        fi
        url_list=$(IFS=,; echo "${urls[*]}")
        echo "## $name: $url_list, load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/header.txt"
        client_ticks >"$tmp/ticks"
        c0=$(<"$tmp/ticks")
        t0=$(date +%s.%N) m0=$(busy_ticks) s0=$(server_ticks) a0=$(instances_ticks)
        # In the background, so a signal is handled at once rather than after the run.
        "$LOADGEN" bench --url "$url_list" --workload "$WORKLOADS" --duration "$DURATION" \
            >"$OUT/$name.txt" 2>"$OUT/$name.err" &
        bench_pid=$!
        # Once a second, what the server is busy with (autovacuum, a slow statement, a lock
        # wait), to explain a figure off its neighbours; one short query, a few ms of CPU.
        (
            while sleep 1; do
                echo "# $(date +%T.%N)"
                psql_ -At -F '|' -c "SELECT backend_type, application_name, state,
                        wait_event_type || ':' || wait_event, round(extract(epoch FROM now() - query_start)::numeric, 3),
                        left(regexp_replace(query, '\s+', ' ', 'g'), 160)
                    FROM pg_stat_activity
                    WHERE pid <> pg_backend_pid() AND (state = 'active' OR backend_type LIKE 'autovacuum worker')" \
                    2>/dev/null || true
            done
        ) >"$OUT/$name.pg-activity" &
        sampler_pid=$!
        status=0
        wait "$bench_pid" || status=$?
        bench_pid=""
        # Before the sampler is reaped, so its CPU counts as "other", not as the bench's.
        client_ticks >"$tmp/ticks"
        c1=$(<"$tmp/ticks")
        t1=$(date +%s.%N) m1=$(busy_ticks) s1=$(server_ticks) a1=$(instances_ticks)
        kill "$sampler_pid" 2>/dev/null || true
        wait "$sampler_pid" 2>/dev/null || true
        sampler_pid=""
        awk -v t="$t1" -v t0="$t0" -v hz="$hz" -v m=$((m1 - m0)) -v s=$((s1 - s0)) -v a=$((a1 - a0)) \
            -v c=$((c1 - c0)) -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
            d = (t - t0) * hz
            o = (m - s - a - c) / d
            printf "%.2f %.2f %.2f %.2f %.2f %s\n", a / d, s / d, c / d, (o > 0 ? o : 0), m / d, load }' \
            >"$OUT/$name.cpu"
        cat "$OUT/$name.txt"
        if [[ $status -ne 0 ]]; then
            echo "fleetbench.sh: $name: the bench exited with status $status: $(tail -n 3 "$OUT/$name.err")" | tee -a "$OUT/notes.txt" >&2
            failures=1
        fi
        # What each instance says of itself after the load (a fleet's shows its sequencing backlog).
        for i in $(seq 1 "$n"); do
            curl -sS -m 5 "${urls[i - 1]}/health" >"$OUT/$name.health$i.json" 2>&1 || true
        done
        stop_instances "$name"
        rm -f "$tmp/$name.db" "$tmp/$name.db-wal" "$tmp/$name.db-shm"
        # Dropped so the server's size stays that of one run; the drop's checkpoint falls here,
        # between runs.
        [[ -n $db ]] && { "$PGBIN/dropdb" "$db" || echo "fleetbench.sh: dropdb $db failed" >&2; }
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/header.txt"

# The figures of one run's output: c1 c64 b1000 dp99 errors 503s missed delivered verify rest.
figures() {
    awk '
        function num(s) { gsub(/[^0-9.]/, "", s); return s }
        /^single c=1: /  { c1 = $3 }
        /^single c=64: / { c64 = $3 }
        /^batch 1000\/req / { b1000 = $4 }
        /^delivery: failed/ { dp99 = "failed" }
        /^delivery at / {
            s = $0
            sub(/.*after ack /, "", s)
            n = split(s, w, " ")
            dp99 = "none"
            for (i = 1; i < n; i++) if (w[i] == "p99") { dp99 = w[i + 1]; break }
            s = $0
            sub(/.*missed /, "", s)
            split(s, w, " ")
            missed = w[1] "/" w[3]
        }
        /errors [0-9]+ \(503: [0-9]+\)/ {
            s = $0
            sub(/.*errors /, "", s)
            split(s, w, " ")
            errors += w[1]
            overloaded += num(w[3])
        }
        / rest [0-9.]+ cores/ {
            s = $0
            sub(/.* rest /, "", s)
            split(s, w, " ")
            r = w[1] + 0
            if (rmin == "" || r < rmin) rmin = r
            if (rmax == "" || r > rmax) rmax = r
        }
        /^verify: / { verify = ($2 == $4 && $6 == 0 ? "ok:" : "FAIL:") $2 "=" $4 }
        END {
            printf "%s %s %s %s %d %d %s %s %s\n", (c1 == "" ? "-" : c1), (c64 == "" ? "-" : c64),
                (b1000 == "" ? "-" : b1000), (dp99 == "" ? "-" : dp99), errors, overloaded,
                (missed == "" ? "-" : missed), (verify == "" ? "-" : verify),
                (rmin == "" ? "-" : sprintf("%.2f-%.2f", rmin, rmax))
        }' "$1"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx", a / b; else print "-" }'; }

{
    echo
    echo "Figures (ratio to the same binary's SQLite run); delivery p99 is from ack to receipt, in ms"
    printf '%-14s %-6s %18s %18s %20s %18s\n' binary store "single c=1 ev/s" "single c=64 ev/s" "batch 1000 ev/s" "delivery p99 ms"
    for tag in "${tags[@]}"; do
        base=()
        for cfg in "${configs[@]}"; do
            f="$OUT/$tag-$cfg.txt"
            [[ -f $f ]] || { printf '%-14s %-6s %s\n' "$tag" "$cfg" "not run"; continue; }
            read -r c1 c64 b1000 dp99 _ <<<"$(figures "$f")"
            [[ $cfg == sqlite ]] && base=("$c1" "$c64" "$b1000" "$dp99")
            [[ ${#base[@]} -eq 4 ]] || base=(- - - -)
            printf '%-14s %-6s %9s (%6s) %9s (%6s) %10s (%7s) %8s (%7s)\n' "$tag" "$cfg" \
                "$c1" "$(ratio "$c1" "${base[0]}")" "$c64" "$(ratio "$c64" "${base[1]}")" \
                "$b1000" "$(ratio "$b1000" "${base[2]}")" "$dp99" "$(ratio "$dp99" "${base[3]}")"
        done
    done
    echo
    echo "Checks and load: errors and 503s summed over the measurements; missed of acknowledged in"
    echo "delivery; the bench's verify (acknowledged=stored); the bench's 'rest' per measurement"
    echo "(PostgreSQL and everything else); cores used over the whole bench by the collectors, PostgreSQL,"
    echo "the bench, everything else, and the machine; the 1-minute load average at the end; the seconds"
    echo "in which PostgreSQL's autovacuum was running (NAME.pg-activity has what the server was doing)"
    printf '%-14s %-6s %6s %5s %11s %-20s %-11s %-29s %5s %7s\n' binary store errors 503s missed verify rest "cpu aop/pg/bench/other/all" load autovac
    for tag in "${tags[@]}"; do
        for cfg in "${configs[@]}"; do
            f="$OUT/$tag-$cfg.txt"
            [[ -f $f ]] || continue
            read -r _ _ _ _ errors overloaded missed verify rest <<<"$(figures "$f")"
            cpu="-" load="-" autovac="-"
            # Seconds in which an autovacuum worker was running (the sampler's one-second looks).
            if [[ -f $OUT/$tag-$cfg.pg-activity ]]; then
                autovac=$(awk '/^# / { if (seen) n++; seen = 0; next } /^autovacuum worker\|/ { seen = 1 }
                    END { if (seen) n++; print n + 0 }' "$OUT/$tag-$cfg.pg-activity")
            fi
            if [[ -f $OUT/$tag-$cfg.cpu ]]; then
                read -r a s c o m load <"$OUT/$tag-$cfg.cpu"
                cpu="$a/$s/$c/$o/$m"
            fi
            printf '%-14s %-6s %6s %5s %11s %-20s %-11s %-29s %5s %7s\n' "$tag" "$cfg" "$errors" "$overloaded" \
                "$missed" "$verify" "$rest" "$cpu" "$load" "$autovac"
        done
    done
    if [[ -s $OUT/notes.txt ]]; then
        echo
        cat "$OUT/notes.txt"
    fi
} | tee "$OUT/table.txt"

[[ $failures -eq 0 ]] || die "some configurations failed (above)"
