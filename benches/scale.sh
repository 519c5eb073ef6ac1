#!/usr/bin/env bash
# The sender in the harder world (issue 12): a slow relay shared by several workers, a relay
# that throttles, and runs killed mid-send. Three measurements, each with its reference taken
# in the same run:
#
#   1. share:    postfix smtp-sink -w 1 (1 s per letter), 1,200 recipients on PostgreSQL,
#                --concurrency 50: one worker, then four workers started together on a fresh
#                mailing. Reports the speed-up (target >= 3.4), each worker's share (20-30%)
#                and copies per recipient counted in smtp-sink's -D dump (target: all 1).
#   2. throttle: tests/smtp_server.py with a token bucket of 250 letters/s answering
#                451 4.7.1 above it; 2,500 recipients, no --rate, MAILCTL_RETRY_DELAY=1, runs
#                back to back until all are delivered. Reports delivered letters/s against
#                250 (target >= 80%) and copies per recipient (target: all 1).
#   3. kills:    smtp-sink at full speed with -D, 150,000 recipients, --concurrency 8: KILLS
#                SIGKILLs at random moments (each run killed 0.3-0.9 s after it starts), then
#                one run to the end. Reports recipients lost (target 0) and duplicates per kill
#                (target <= 8, the concurrency), on SQLite and PostgreSQL.
#
#   benches/scale.sh                     # all three
#   PARTS="kills" BACKENDS=sqlite KILLS=10 benches/scale.sh
#
# Needs: postfix (smtp-sink), sqlite3, PostgreSQL server binaries, python3-aiosmtpd.
set -euo pipefail

PARTS=${PARTS:-"share throttle kills"}
BACKENDS=${BACKENDS:-"sqlite postgres"}
KILLS=${KILLS:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/mailctl
WORK=$(mktemp -d /tmp/mailctl-scale.XXXXXX)
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
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

(cd "$ROOT" && cargo build --release --quiet)

pg_start() {
    [[ -n "${PGDATA_DIR:-}" ]] && return
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDATA_DIR=$WORK/pg
    PG_PORT=$(free_port)
    mkdir -p "$PGDATA_DIR" && chown postgres "$PGDATA_DIR" 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA_DIR -c max_connections=300" \
        start >/dev/null
}

db_url() { # backend dir (PostgreSQL: pg_start first, in this shell, not in $(...))
    if [[ $1 == sqlite ]]; then
        echo "sqlite://$2/data/mailctl.db"
    else
        local name=scale_$RANDOM$RANDOM
        psql -X -q -d "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -c "CREATE DATABASE $name"
        echo "postgres://postgres@127.0.0.1:$PG_PORT/$name"
    fi
}

# An installation with one user, a short message and `count` recipients in one mailing.
setup() { # dir db_url count
    local dir=$1 url=$2 count=$3
    mkdir -p "$dir"
    export HOME=$dir XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config
    export MAILCTL_DATABASE_URL=$url MAILCTL_SESSION_FILE=$dir/session
    unset MAILCTL_SMTP_URL MAILCTL_RETRY_DELAY
    echo bench-password-123 | "$BIN" csu --email admin@example.org --password-stdin >/dev/null 2>&1
    echo bench-password-123 | "$BIN" login --email admin@example.org --password-stdin >/dev/null 2>&1
    "$BIN" messages add --subject 'Scale for {{full_name}}' --body 'Hello {{full_name}}, a short letter.' >/dev/null
    local sql="WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $count)
      INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at)
      SELECT 1, 'r' || n || '@example.com', 'r' || n || '@example.com', 'Person ' || n, '',
             '2026-01-01T00:00:00+00:00' FROM seq;"
    if [[ $url == sqlite://* ]]; then sqlite3 "${url#sqlite://}" "$sql"; else psql -X -q -d "$url" -c "$sql"; fi
    "$BIN" mailings add --message 1 --start 2020-01-01T00:00:00Z --end 2099-01-01T00:00:00Z \
        --all-clients >/dev/null
}

sink() { # dir [smtp-sink options...]: starts smtp-sink dumping to dir/dump; sets SINK_PORT
    local dir=$1
    shift
    SINK_PORT=$(free_port)
    chmod 777 "$dir"
    /usr/sbin/smtp-sink -u "$([[ $(id -u) == 0 ]] && echo nobody || id -un)" -D "$dir/dump" "$@" \
        "127.0.0.1:$SINK_PORT" 2048 >"$dir/sink.log" 2>&1 &
    PIDS+=($!)
    sleep 0.3
}

# "distinct total": recipients that got a letter, and letters, from a smtp-sink dump.
copies() { # dump
    python3 - "$1" <<'EOF'
import collections, sys
seen = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("X-Rcpt-Args:"):
        seen[line.split(":", 1)[1].strip().lower()] += 1
print(len(seen), sum(seen.values()))
EOF
}

json() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))$2)" "$1"; }

# ---------------------------------------------------------------------------------------------
part_share() {
    local n=1200 c=50
    echo "== share: smtp-sink -w 1, $n recipients, --concurrency $c, PostgreSQL"
    local d1=$WORK/share1 d4=$WORK/share4
    mkdir -p "$d1" "$d4"
    sink "$d1" -w 1
    local port1=$SINK_PORT
    setup "$d1" "$(db_url postgres "$d1")" "$n"
    export MAILCTL_SMTP_URL=smtp://127.0.0.1:$port1
    local t0 t1
    t0=$(now)
    "$BIN" send-due --concurrency "$c" --format json >"$d1/w0.json" 2>"$d1/w0.err"
    t1=$(now)
    local one
    one=$(calc "round($t1 - $t0, 2)")
    echo "one worker: $(json "$d1/w0.json" "['sent']") letters in ${one}s"

    sink "$d4" -w 1
    local port4=$SINK_PORT
    setup "$d4" "$(db_url postgres "$d4")" "$n"
    export MAILCTL_SMTP_URL=smtp://127.0.0.1:$port4
    t0=$(now)
    local pids=()
    for w in 0 1 2 3; do
        "$BIN" send-due --concurrency "$c" --format json >"$d4/w$w.json" 2>"$d4/w$w.err" &
        pids+=($!)
    done
    wait "${pids[@]}"
    t1=$(now)
    local four shares
    four=$(calc "round($t1 - $t0, 2)")
    shares=$(for w in 0 1 2 3; do json "$d4/w$w.json" "['sent']"; done | tr '\n' ' ')
    read -r distinct total < <(copies "$d4/dump")
    echo "four workers: ${four}s, sent per worker: $shares"
    echo "share: speed-up $(calc "round($one / $four, 2)") (target >= 3.4), shares" \
        "$(for s in $shares; do calc "f'{100 * $s / $n:.0f}%'"; done | tr '\n' ' ')(target 20-30% each)," \
        "recipients $distinct of $n, letters $total (target: $n and $n)"
}

part_throttle() {
    local n=2500 rate=250
    for backend in $BACKENDS; do
        echo "== throttle: relay limited to $rate letters/s (451 4.7.1), $n recipients, $backend"
        local d=$WORK/throttle-$backend
        mkdir -p "$d/smtp"
        echo "{\"rate_limit\": {\"per_second\": $rate, \"burst\": $((rate / 10))}}" >"$d/rules.json"
        /usr/bin/python3 -I "$ROOT/tests/smtp_server.py" --port 0 --dir "$d/smtp" --rules "$d/rules.json" \
            2>"$d/smtp.log" &
        PIDS+=($!)
        for _ in $(seq 100); do [[ -s $d/smtp/port ]] && break; sleep 0.1; done
        setup "$d" "$(db_url "$backend" "$d")" "$n"
        export MAILCTL_SMTP_URL=smtp://127.0.0.1:$(cat "$d/smtp/port") MAILCTL_RETRY_DELAY=1
        local t0 t1 runs=0
        t0=$(now)
        while ((runs < 20)); do
            runs=$((runs + 1))
            "$BIN" send-due --format json >"$d/run$runs.json" 2>"$d/run$runs.err"
            [[ $(wc -l <"$d/smtp/log.jsonl") -ge $n ]] && break
        done
        t1=$(now)
        local got distinct throttled
        got=$(wc -l <"$d/smtp/log.jsonl")
        distinct=$(python3 -c "
import json, sys
print(len({json.loads(l)['rcpt_tos'][0].lower() for l in open(sys.argv[1])}))" "$d/smtp/log.jsonl")
        throttled=$(grep -c '"stage": "mail"' "$d/smtp/events.jsonl" || true)
        echo "throttle ($backend): $got letters to $distinct recipients in $(calc "round($t1 - $t0, 2)")s over $runs run(s)," \
            "$(calc "round($n / ($t1 - $t0), 1)") letters/s = $(calc "round(100 * $n / ($t1 - $t0) / $rate)")% of $rate (target >= 80%)," \
            "$throttled throttled replies"
        unset MAILCTL_RETRY_DELAY
    done
}

part_kills() {
    local n=150000 c=8
    for backend in $BACKENDS; do
        echo "== kills: smtp-sink, $n recipients, --concurrency $c, $KILLS x SIGKILL, $backend"
        local d=$WORK/kills-$backend
        mkdir -p "$d"
        sink "$d"
        local port=$SINK_PORT
        setup "$d" "$(db_url "$backend" "$d")" "$n"
        export MAILCTL_SMTP_URL=smtp://127.0.0.1:$port
        local killed=0
        for k in $(seq "$KILLS"); do
            "$BIN" send-due --concurrency "$c" >/dev/null 2>>"$d/kills.err" &
            local pid=$!
            sleep "$(calc "0.3 + 0.6 * $RANDOM / 32767")"
            if kill -9 "$pid" 2>/dev/null; then
                killed=$((killed + 1))
            else
                echo "run $k ended before its kill" >&2
            fi
            wait "$pid" 2>/dev/null || true
        done
        "$BIN" send-due --concurrency "$c" --format json >"$d/last.json" 2>"$d/last.err"
        sleep 0.5
        read -r distinct total < <(copies "$d/dump")
        echo "kills ($backend): $killed runs killed, recipients reached $distinct of $n (lost $((n - distinct)), target 0)," \
            "letters $total, duplicates $((total - distinct)) = $(calc "round(($total - $distinct) / max($killed, 1), 1)") per kill (target <= $c)"
        grep -h "recovered" "$d/kills.err" "$d/last.err" | sed 's/^/  /' | tail -3
    done
}

[[ $PARTS == *share* || $BACKENDS == *postgres* ]] && pg_start
for part in $PARTS; do "part_$part"; done
