#!/usr/bin/env bash
# Measures the fleet's two write shapes with pgbench on a throwaway PostgreSQL 15:
#   (i)  today's: every transaction takes the aop_head row lock and sends NOTIFY;
#   (ii) post-commit sequencing: writers commit a group row with a ticket and no head, no
#        NOTIFY, while one more client numbers committed groups in a loop (aop_sequence).
# The SQL is in scripts/pgbench/; run with --help for the options.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: scripts/pgbench.sh [--duration SECS | --quick] [--clients "8 64"] [--rows "1 100"]
                          [--shapes "i ii"] [--log-dir DIR]

Starts a throwaway PostgreSQL 15 (Debian's /usr/lib/postgresql/15/bin, or $PGBIN) in a temporary
directory on a free port (127.0.0.1, fsync and synchronous_commit on, other settings initdb's),
creates the tables of scripts/pgbench/schema.sql, and runs pgbench -M prepared for each
combination of write shape x clients x events per transaction:

  (i)  head+NOTIFY   scripts/pgbench/head_notify.sql  today's writer: session row lock, event
                     rows, aop_head lock and update, NOTIFY
  (ii) post-commit   scripts/pgbench/post_commit.sql  session row lock, event rows, a group row
                     whose ticket comes from a sequence; no head, no NOTIFY; beside it, one
                     client runs scripts/pgbench/sequencer.sql (aop_sequence in a loop) for the
                     same duration

Each combination starts from the same tables (scripts/pgbench/reset.sql: 512 empty sessions for
the clients, a history of 100,000 events in 1,000 other sessions) and a checkpoint. After each
run the events are counted against pgbench's committed transactions; after each (ii) run the
sequencer is also run until nothing is left, and every committed group is checked to hold
positions 1..N with no gap or duplicate, in ticket order within each sequencing step and in
order within each session. One line is printed per combination, ending with its WAL flushes
(pg_stat_wal, with track_wal_io_timing on), the CPU the server and pgbench (all clients) used
during it and how busy the whole machine was, in cores, and the 1-minute load average; the
server is stopped and its directory removed on exit.

Options:
  --duration SECS  length of each measurement (default 20)
  --quick          3-second measurements (a smoke run)
  --clients LIST   writer clients, space-separated (default "8 64")
  --rows LIST      events per transaction, space-separated (default "1 100")
  --shapes LIST    "i", "ii" or both (default "i ii")
  --log-dir DIR    keep pgbench's and the server's output there
  -h, --help       this text

Run as root, the server runs as the postgres user (runuser); otherwise as the caller.
Exit status: 0; 1 if a run or a check failed; 2 on a usage error.
EOF
}

die() {
    echo "pgbench.sh: $*" >&2
    exit 1
}

duration=20
clients_list="8 64"
rows_list="1 100"
shapes="i ii"
log_dir=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) [[ $# -ge 2 ]] || { echo "pgbench.sh: --duration needs a value" >&2; exit 2; }
                    duration=$2; shift 2 ;;
        --duration=*) duration=${1#*=}; shift ;;
        --quick) duration=3; shift ;;
        --clients) [[ $# -ge 2 ]] || { echo "pgbench.sh: --clients needs a value" >&2; exit 2; }
                   clients_list=$2; shift 2 ;;
        --rows) [[ $# -ge 2 ]] || { echo "pgbench.sh: --rows needs a value" >&2; exit 2; }
                rows_list=$2; shift 2 ;;
        --shapes) [[ $# -ge 2 ]] || { echo "pgbench.sh: --shapes needs a value" >&2; exit 2; }
                  shapes=$2; shift 2 ;;
        --log-dir) [[ $# -ge 2 ]] || { echo "pgbench.sh: --log-dir needs a value" >&2; exit 2; }
                   log_dir=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "pgbench.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $duration =~ ^[1-9][0-9]*$ ]] || { echo "pgbench.sh: --duration must be a whole number of seconds, not '$duration'" >&2; exit 2; }
for c in $clients_list; do
    [[ $c =~ ^[1-9][0-9]*$ && $c -le 64 ]] || { echo "pgbench.sh: clients must be 1..64 (512 sessions, 8 per client), not '$c'" >&2; exit 2; }
done
for r in $rows_list; do
    [[ $r =~ ^[1-9][0-9]*$ && $r -le 100 ]] || { echo "pgbench.sh: rows must be 1..100, not '$r'" >&2; exit 2; }
done
for s in $shapes; do
    [[ $s == i || $s == ii ]] || { echo "pgbench.sh: shapes are 'i' and 'ii', not '$s'" >&2; exit 2; }
done

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sql=$here/pgbench
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
for tool in initdb pg_ctl psql pgbench; do
    [[ -x $PGBIN/$tool ]] || die "$PGBIN/$tool not found (Debian: apt-get install postgresql-15; or set PGBIN)"
done
for f in schema.sql reset.sql aop_sequence.sql head_notify.sql post_commit.sql sequencer.sql \
         verify_head_notify.sql verify_post_commit.sql; do
    [[ -r $sql/$f ]] || die "missing $sql/$f"
done
command -v ss >/dev/null || die "ss (iproute2) is needed to find a free port"

# shellcheck source-path=SCRIPTDIR source=lib/pgserver.sh
source "$here/lib/pgserver.sh"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/aop-pgbench.XXXXXX")
bg_pids=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${bg_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    pg_server_stop
    if [[ -n $log_dir && -d $tmp ]]; then
        cp "$tmp"/*.log "$tmp"/*.out "$tmp"/*.err "$log_dir"/ 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "pgbench.sh: interrupted" >&2; exit 130' INT TERM
if [[ -n $log_dir ]]; then
    mkdir -p "$log_dir" || die "cannot create --log-dir $log_dir"
fi
pg_server_own_tmp
free_port
port=$free

echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; $(nproc) cores)"
pg_server_start "$port" -c track_wal_io_timing=on

# Clients connect over TCP on loopback, as aop's instances do.
export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

psql_ -d postgres -c "CREATE DATABASE aop" >/dev/null || die "CREATE DATABASE failed"
export PGDATABASE=aop
psql_ -f "$sql/schema.sql" >/dev/null || die "schema.sql failed"
PGOPTIONS="-c search_path=post_commit" psql_ -f "$sql/aop_sequence.sql" >/dev/null || die "aop_sequence.sql failed"
echo "# $("$PGBIN/postgres" --version), port $port, $(psql_ -Atc "SELECT format('fsync=%s synchronous_commit=%s shared_buffers=%s max_wal_size=%s', current_setting('fsync'), current_setting('synchronous_commit'), current_setting('shared_buffers'), current_setting('max_wal_size'))")"
echo "# $duration s per measurement, pgbench -M prepared -j 2 (writers), -c 1 -j 1 (sequencer)"

# Event bodies: JSON of about 500 bytes, as the bench's generator makes them, one per event of a
# transaction, passed as one text[] parameter (as the writer's unnest($4::text[])).
body() {
    local k=$1
    local text="the agent compares the retrieved documents with the user request and notes that the second source contradicts the first on the release date so it plans another search restricted to official changelogs before drafting the summary then it checks the token budget"
    printf '{"event_type":"tool.call","session_id":"bench-%d","agent_id":"coding-agent","sequence":%d,"timestamp":"2026-12-07T12:00:00.%03dZ","data":{"tool":"web_search","call_id":"call-%06d","input":{"query":"release date of the parser rewrite"},"text":"%s"}}' \
        "$k" "$k" "$((k % 1000))" "$k" "$text"
}
bodies_literal() {
    local n=$1 out="{" k b
    for ((k = 1; k <= n; k++)); do
        b=$(body "$k")
        b=${b//\\/\\\\}
        b=${b//\"/\\\"}
        [[ $k -gt 1 ]] && out+=","
        out+="\"$b\""
    done
    printf '%s}' "$out"
}
state='{"id":"bench-0","agent_id":"coding-agent","status":"running","goal":null,"parent_session_id":null,"conversation_id":null,"started_us":1796644800000000,"last_seen_us":1796644800000000,"event_count":0,"tool_calls":12,"llm_calls":7,"errors":0,"tokens_in":48213,"tokens_out":9120,"cost_usd":0.4213,"last_kind":"tool.call"}'
body_bytes=$(body 1 | wc -c)
echo "# event body $body_bytes bytes, session state ${#state} bytes"

# "key value" from pgbench's summary.
pgbench_figure() {
    local file=$1 what=$2
    case "$what" in
        tps) sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$file" ;;
        latency) sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$file" ;;
        processed) sed -n 's/^number of transactions actually processed: \([0-9]*\).*$/\1/p' "$file" ;;
        failed) sed -n 's/^number of failed transactions: \([0-9]*\).*$/\1/p' "$file" ;;
    esac
}

# Starts pgbench in the background (so a signal is handled at once, not after the run) and
# sets started_pid; its output goes to $tmp/NAME.out and .err.
start_pgbench() { # name clients threads script [pgbench options...]
    local name=$1 clients=$2 threads=$3 script=$4
    shift 4
    "$PGBIN/pgbench" -n -M prepared -c "$clients" -j "$threads" -T "$duration" -f "$script" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err" &
    started_pid=$!
    bg_pids+=("$started_pid")
}

pgbench_failed() { # name status
    echo "pgbench.sh: pgbench ($1) failed with status $2; its output:" >&2
    tail -n 30 "$tmp/$1.out" "$tmp/$1.err" >&2
    exit 1
}

# CPU accounting (lib/pgserver.sh): the server's, pgbench's (this shell's reaped children) and
# the machine's, with the WAL's figures.
cpu_start() {
    client_ticks >"$tmp/ticks"
    cpu_client0=$(<"$tmp/ticks")
    cpu_t0=$(date +%s.%N) cpu_busy0=$(busy_ticks) cpu_server0=$(server_ticks)
    psql_ -Atc "SELECT pg_stat_reset_shared('wal')" >/dev/null
}
cpu_report() { # sets cpu to "WAL ...; cpu: server X, pgbench Y, machine Z cores" since cpu_start
    local t1 busy server client wal pm
    # A backend's time moves to the postmaster's children's times only once it is reaped: wait
    # (at most 5 s) until the clients' backends are gone.
    pm=$(head -n 1 "$tmp/data/postmaster.pid")
    for _ in $(seq 1 50); do
        ps -o args= --ppid "$pm" | grep -q '127\.0\.0\.1(' || break
        sleep 0.1
    done
    client_ticks >"$tmp/ticks"
    client=$(( $(<"$tmp/ticks") - cpu_client0 ))
    t1=$(date +%s.%N) busy=$(( $(busy_ticks) - cpu_busy0 )) server=$(( $(server_ticks) - cpu_server0 ))
    # WAL flushes (pg_stat_wal, track_wal_io_timing on): how many, how long each took.
    wal=$(psql_ -At -F ' ' -c "SELECT wal_sync, wal_sync_time, wal_bytes FROM pg_stat_wal")
    cpu=$(awk -v t="$t1" -v t0="$cpu_t0" -v hz="$hz" -v b="$busy" -v s="$server" -v c="$client" -v wal="$wal" 'BEGIN {
        d = (t - t0) * hz
        split(wal, w, " ")
        printf "WAL %.0f flushes/s, %.2f ms each, %.1f MB/s; cpu: server %.2f, pgbench %.2f, machine %.2f cores",
            w[1] / (t - t0), (w[1] > 0 ? w[2] / w[1] : 0), w[3] / (t - t0) / 1e6, s / d, c / d, b / d }')
}

checks_failed=0
verify() { # name file
    local name=$1 file=$2 out
    out=$(psql_ -At -F '|' -f "$file" 2>&1) || { echo "$out" >&2; die "verification ($name) could not run"; }
    printf '%s\n' "$out" >"$tmp/$name.verify.out"
    verified="ok"
    while IFS='|' read -r check ok detail; do
        [[ -z $check ]] && continue
        if [[ $ok != t ]]; then
            echo "pgbench.sh: CHECK FAILED ($name): $check: $detail" >&2
            verified="FAILED"
            checks_failed=1
        fi
    done <<<"$out"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }'; }

for shape in $shapes; do
    for r in $rows_list; do
        bodies=$(bodies_literal "$r")
        for c in $clients_list; do
            name="$shape-c$c-rows$r"
            threads=$((c < 2 ? c : 2))
            psql_ -f "$sql/reset.sql" >/dev/null || die "reset.sql failed before $name"
            vars=(-D "rows=$r" -D "bodies=$bodies" -D "state=$state")
            if [[ $shape == i ]]; then
                cpu_start
                PGOPTIONS="-c search_path=head_notify" start_pgbench "$name" "$c" "$threads" "$sql/head_notify.sql" "${vars[@]}"
                status=0
                wait "$started_pid" || status=$?
                bg_pids=()
                cpu_report
                [[ $status -eq 0 ]] || pgbench_failed "$name" "$status"
                PGOPTIONS="-c search_path=head_notify" verify "$name" "$sql/verify_head_notify.sql"
                # The history holds 100,000 events (reset.sql).
                stored=$(PGOPTIONS="-c search_path=head_notify" psql_ -Atc "SELECT count(*) - 100000 FROM aop_events")
                processed=$(pgbench_figure "$tmp/$name.out" processed)
                if [[ $stored -ne $((processed * r)) ]]; then
                    echo "pgbench.sh: CHECK FAILED ($name): pgbench committed $processed transactions of $r events, aop_events holds $stored" >&2
                    verified="FAILED"
                    checks_failed=1
                fi
                label="(i) head+NOTIFY "
                extra=""
            else
                export PGOPTIONS="-c search_path=post_commit"
                cpu_start
                # The sequencer first, so it is running when the writers start; a connection
                # idle inside a transaction is cut after 5 s, as the design note asks.
                PGOPTIONS="$PGOPTIONS -c idle_in_transaction_session_timeout=5s" PGAPPNAME=aop_sequencer \
                    start_pgbench "$name-sequencer" 1 1 "$sql/sequencer.sql" -D max=10000 -D idle_us=1000
                seq_pid=$started_pid
                # Once a second: the unnumbered backlog, and the CPU ticks of the sequencer's
                # backend ("time backlog ticks"; its last line is at most a second before the end).
                (
                    backend=""
                    while sleep 1; do
                        [[ -n $backend ]] || backend=$(psql_ -Atc \
                            "SELECT pid FROM pg_stat_activity WHERE application_name = 'aop_sequencer'" 2>/dev/null) || true
                        n=$(psql_ -Atc "SELECT count(*) FROM aop_groups WHERE first_pos IS NULL" 2>/dev/null) || continue
                        echo "$(date +%s.%N) $n $([[ -n $backend ]] && proc_ticks "$backend" || echo -)"
                    done
                ) >"$tmp/$name-backlog.out" &
                watch_pid=$!
                bg_pids+=("$watch_pid")
                start_pgbench "$name" "$c" "$threads" "$sql/post_commit.sql" "${vars[@]}"
                status=0
                wait "$started_pid" || status=$?
                seq_status=0
                wait "$seq_pid" || seq_status=$?
                kill "$watch_pid" 2>/dev/null || true
                wait "$watch_pid" 2>/dev/null || true
                bg_pids=()
                cpu_report
                [[ $status -eq 0 ]] || pgbench_failed "$name" "$status"
                [[ $seq_status -eq 0 ]] || pgbench_failed "$name-sequencer" "$seq_status"
                IFS='|' read -r backlog_end numbered_in_run steps_in_run < <(psql_ -At -F '|' -c \
                    "SELECT count(*) FILTER (WHERE first_pos IS NULL), count(*) FILTER (WHERE step IS NOT NULL), (SELECT steps FROM aop_head) FROM aop_groups")
                [[ -n $steps_in_run ]] || die "could not read the sequencer's progress after $name"
                # Catch up: number whatever the loop left (committed after its last call).
                for _ in $(seq 1 1000); do
                    n=$(psql_ -Atc "SELECT aop_sequence(100000)") || die "aop_sequence failed after $name"
                    [[ $n -eq 0 ]] && break
                done
                verify "$name" "$sql/verify_post_commit.sql"
                # The history's groups have negative ids (reset.sql).
                groups=$(psql_ -Atc "SELECT count(*) FROM aop_groups WHERE grp > 0")
                processed=$(pgbench_figure "$tmp/$name.out" processed)
                if [[ $groups -ne $processed ]]; then
                    echo "pgbench.sh: CHECK FAILED ($name): pgbench committed $processed transactions, aop_groups holds $groups" >&2
                    verified="FAILED"
                    checks_failed=1
                fi
                unset PGOPTIONS
                calls=$(pgbench_figure "$tmp/$name-sequencer.out" tps)
                backlog_max=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$tmp/$name-backlog.out")
                # The sequencer backend's CPU between the first and the last sample that saw it.
                seq_cpu=$(awk -v hz="$hz" '$3 ~ /^[0-9]+$/ && $3 > 0 { if (t0 == "") { t0 = $1; k0 = $3 } t1 = $1; k1 = $3 }
                    END { if (t1 > t0) printf "%.2f", (k1 - k0) / hz / (t1 - t0); else print "?" }' "$tmp/$name-backlog.out")
                extra=$(printf '; sequencer %s steps/s (%.0f calls/s), %s groups/step, %s cores, backlog max %s, at end %s' \
                    "$(awk -v s="$steps_in_run" -v d="$duration" 'BEGIN { printf "%.0f", s / d }')" "$calls" \
                    "$(ratio "$numbered_in_run" "$steps_in_run")" "$seq_cpu" "${backlog_max:-?}" "$backlog_end")
                label="(ii) post-commit"
            fi
            tps=$(pgbench_figure "$tmp/$name.out" tps)
            latency=$(pgbench_figure "$tmp/$name.out" latency)
            failed=$(pgbench_figure "$tmp/$name.out" failed)
            [[ -n $tps && -n $latency ]] || { cat "$tmp/$name.out" >&2; die "could not read pgbench's summary for $name"; }
            printf '%s c=%-2s rows=%-3s : %.0f tx/s, %.0f rows/s, latency avg %.1f ms%s; %s failed; checks %s; %s; load %s\n' \
                "$label" "$c" "$r" "$tps" "$(awk -v t="$tps" -v r="$r" 'BEGIN { print t * r }')" "$latency" \
                "$extra" "${failed:-0}" "$verified" "$cpu" "$(cut -d' ' -f1 /proc/loadavg)"
        done
    done
done

echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [[ $checks_failed -ne 0 ]]; then
    die "some checks failed (above)"
fi
