#!/usr/bin/env bash
# Sender throughput and memory, against postfix's smtp-sink on 127.0.0.1, with postfix's
# smtp-source (fastest mode: -d, many messages per connection) as the reference.
#
#   benches/send.sh                       # 20,000 letters of ~2 KB, concurrency 8, SQLite + PostgreSQL
#   N=5000 BACKENDS=sqlite benches/send.sh
#   MEMORY=1 benches/send.sh              # also peak RSS for 10,000 vs 100,000 recipients (SQLite)
#   ROUNDS=5 benches/send.sh              # rounds per backend (default 3); the median ratio counts
#   BASELINE=/path/to/old/mailctl benches/send.sh   # also that binary, on its own fresh
#                                         # installation in the same round: new / old letters/s
#   N=1000000 ROUNDS=1 benches/send.sh    # a million recipients (about 4 minutes per backend)
#
# Each round line also gives mailctl's CPU time (user + system, whole process) per letter and,
# on the private PostgreSQL cluster, the server's CPU per letter for the run.
#
# Needs: postfix (smtp-sink, smtp-source), sqlite3, PostgreSQL server binaries (or
# BENCH_PG_URL=postgres://... of an empty database you can drop tables in), GNU time.
# Builds target/release/mailctl. Prints one line per measurement and a summary table.
set -euo pipefail

N=${N:-20000}
CONCURRENCY=${CONCURRENCY:-8}
SIZE=${SIZE:-2048}
BACKENDS=${BACKENDS:-"sqlite postgres"}
MEMORY=${MEMORY:-0}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/mailctl
WORK=$(mktemp -d /tmp/mailctl-bench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "${PGDATA_DIR:-}" ]]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

(cd "$ROOT" && cargo build --release --quiet)

# --- the sink -----------------------------------------------------------------------------
SINK_PORT=$(free_port)
SINK_USER=$([[ $(id -u) == 0 ]] && echo nobody || id -un)
/usr/sbin/smtp-sink -u "$SINK_USER" "127.0.0.1:$SINK_PORT" 1024 &
PIDS+=($!)
sleep 0.5

# --- the reference: smtp-source --------------------------------------------------------------
# -d: many messages per connection; -s sessions in parallel; -l payload bytes. Measured right
# before and right after each mailctl run, so both see the same machine load.
reference() {
    local start end
    start=$(date +%s.%N)
    /usr/sbin/smtp-source -d -s "$CONCURRENCY" -m "$N" -l "$SIZE" -f bench@example.org \
        -t sink@example.com "127.0.0.1:$SINK_PORT"
    end=$(date +%s.%N)
    python3 -c "print(round($N / ($end - $start), 1))"
}

# --- mailctl set-up -------------------------------------------------------------------------
# An installation with one user, a ~2 KB message and `count` recipients in one mailing.
setup() { # dir db_url count
    local dir=$1 url=$2 count=$3
    export HOME=$dir XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config
    export MAILCTL_DATABASE_URL=$url MAILCTL_SESSION_FILE=$dir/session
    unset MAILCTL_SMTP_URL
    echo bench-password-123 | "$BIN" csu --email admin@example.org --password-stdin >/dev/null 2>&1
    echo bench-password-123 | "$BIN" login --email admin@example.org --password-stdin >/dev/null 2>&1
    python3 -c "
import sys
line = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit, {{full_name}}.\n'
body = (line * (int(sys.argv[1]) // len(line) + 1))[:int(sys.argv[1])]
open(sys.argv[2], 'w').write(body)" "$((SIZE - 700))" "$dir/body.txt"
    "$BIN" messages add --subject 'Benchmark for {{full_name}}' --body-file "$dir/body.txt" >/dev/null
    local sql="WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $count)
      INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at)
      SELECT 1, 'r' || n || '@example.com', 'r' || n || '@example.com', 'Person ' || n, '',
             '2026-01-01T00:00:00+00:00' FROM seq;"
    if [[ $url == sqlite://* ]]; then
        sqlite3 "${url#sqlite://}" "$sql"
    else
        psql -X -q -d "$url" -c "$sql"
    fi
    "$BIN" mailings add --message 1 --start 2020-01-01T00:00:00Z --end 2099-01-01T00:00:00Z \
        --all-clients >/dev/null
    export MAILCTL_SMTP_URL=smtp://127.0.0.1:$SINK_PORT
}

# CPU seconds (user + system) of the private PostgreSQL cluster so far, its exited backends
# included (the postmaster's children times); 0 without a private cluster.
pg_cpu() {
    [[ -n "${PGDATA_DIR:-}" ]] || { echo 0; return; }
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15 + $16 + $17) / hz}' \
        "/proc/$(head -1 "$PGDATA_DIR/postmaster.pid")/stat"
}

# Runs send-due under GNU time; prints "sent letters/s peak_rss_kb mailctl_cpu_us_per_letter
# server_cpu_us_per_letter" (the server's: PostgreSQL's work for this run, 0 on SQLite).
measure() { # dir [binary]
    local dir=$1 bin=${2:-$BIN} pg_before pg_after
    pg_before=$(pg_cpu)
    /usr/bin/time -f '%M %U %S %e' -o "$dir/rss" "$bin" send-due --concurrency "$CONCURRENCY" --format json \
        >"$dir/summary.json" 2>"$dir/stderr"
    sleep 0.2 # the backends exit and are counted
    pg_after=$(pg_cpu)
    local sent lps
    sent=$(python3 -c "import json; print(json.load(open('$dir/summary.json'))['sent'])")
    lps=$(python3 -c "import json; print(round(json.load(open('$dir/summary.json'))['letters_per_second'], 1))")
    read -r rss_kb user_s sys_s wall_s < "$dir/rss"
    echo "cpu: user ${user_s}s sys ${sys_s}s wall ${wall_s}s" >&2
    python3 -c "
n = max($sent, 1)
print($sent, $lps, $rss_kb, round(($user_s + $sys_s) / n * 1e6, 1), round(($pg_after - $pg_before) / n * 1e6, 1))"
}

pg_start() { # a private cluster, unless BENCH_PG_URL is given (in this shell: not in $(...))
    [[ -n "${BENCH_PG_URL:-}" || -n "${PGDATA_DIR:-}" ]] && return
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDATA_DIR=$WORK/pg
    PG_PORT=$(free_port)
    mkdir -p "$PGDATA_DIR" && chown postgres "$PGDATA_DIR" 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA_DIR" start >/dev/null
}

pg_url() { # a fresh database on the cluster of pg_start (or BENCH_PG_URL)
    if [[ -n "${BENCH_PG_URL:-}" ]]; then echo "$BENCH_PG_URL"; return; fi
    local name=bench_$RANDOM$RANDOM
    psql -X -q -d "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -c "CREATE DATABASE $name"
    echo "postgres://postgres@127.0.0.1:$PG_PORT/$name"
}

# Each round sets up a fresh installation, runs smtp-source, mailctl right after it and
# smtp-source again, so both see the same machine load; the median of the rounds' ratios is
# the result.
declare -A RESULT
for backend in $BACKENDS; do
    [[ $backend == postgres ]] && pg_start
    ratios=()
    for round in $(seq "$ROUNDS"); do
        dir=$WORK/$backend-$round
        mkdir -p "$dir"
        if [[ $backend == sqlite ]]; then url=sqlite://$dir/data/mailctl.db; else url=$(pg_url); fi
        setup "$dir" "$url" "$N"
        # The reference brackets the run: measured right before and right after it, and
        # averaged, so a machine that slows down or speeds up meanwhile counts for both.
        REF_BEFORE=$(reference)
        read -r sent lps rss cpu server < <(measure "$dir")
        REF_AFTER=$(reference)
        REF=$(python3 -c "print(round(($REF_BEFORE + $REF_AFTER) / 2, 1))")
        [[ $sent == "$N" ]] || { echo "expected $N letters, sent $sent" >&2; cat "$dir/stderr" >&2; exit 1; }
        ratio=$(python3 -c "print(round(100 * $lps / $REF))")
        cpu_note="mailctl CPU $cpu µs/letter"
        [[ $backend == postgres && -n "${PGDATA_DIR:-}" ]] && cpu_note+=", PostgreSQL CPU $server µs/letter"
        echo "round $round, $backend: smtp-source $REF msg/s ($REF_BEFORE before, $REF_AFTER after), mailctl $lps letters/s = $ratio%, peak RSS $((rss / 1024)) MB, $cpu_note"
        if [[ -n "${BASELINE:-}" ]]; then
            base=$WORK/$backend-$round-baseline
            mkdir -p "$base"
            if [[ $backend == sqlite ]]; then burl=sqlite://$base/data/mailctl.db; else burl=$(pg_url); fi
            setup "$base" "$burl" "$N"
            read -r bsent blps _ bcpu _ < <(measure "$base" "$BASELINE")
            [[ $bsent == "$N" ]] || { echo "baseline sent $bsent of $N" >&2; exit 1; }
            echo "round $round, $backend: baseline $blps letters/s, CPU $bcpu µs/letter; new / baseline = $(python3 -c "print(round($lps / $blps, 2))")"
        fi
        ratios+=("$ratio|$REF|$lps|$((rss / 1024))|$cpu|$server")
    done
    # The round with the median ratio.
    median=$(printf '%s\n' "${ratios[@]}" | sort -t'|' -k1,1n | sed -n "$(( (ROUNDS + 1) / 2 ))p")
    IFS='|' read -r ratio REF lps rss cpu server <<<"$median"
    [[ $backend == postgres && -n "${PGDATA_DIR:-}" ]] || server=-
    RESULT[$backend]="| $REF | $lps | $ratio% | $cpu | $server | $rss MB | $(printf '%s%% ' "${ratios[@]%%|*}")|"
done

if [[ $MEMORY == 1 ]]; then
    for count in 10000 100000; do
        dir=$WORK/mem$count
        mkdir -p "$dir"
        setup "$dir" "sqlite://$dir/data/mailctl.db" "$count"
        read -r sent lps rss _ < <(measure "$dir")
        echo "memory: $count recipients: sent $sent, $lps letters/s, peak RSS $((rss / 1024)) MB ($rss KB)"
        RESULT[mem$count]=$rss
    done
    python3 -c "print('memory: peak RSS 100k / 10k = %.2f' % (${RESULT[mem100000]} / ${RESULT[mem10000]}))"
fi

echo
echo "$N recipients, median round of $ROUNDS per backend:"
echo "| backend | smtp-source -d -s $CONCURRENCY msg/s | mailctl send-due --concurrency $CONCURRENCY letters/s | ratio | mailctl CPU µs/letter | PostgreSQL CPU µs/letter | peak RSS | all rounds |"
echo "|---|---|---|---|---|---|---|---|"
for backend in $BACKENDS; do echo "| $backend ${RESULT[$backend]}"; done
