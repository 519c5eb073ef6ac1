#!/usr/bin/env bash
# `bounces import` throughput (issue 16): an mbox of N reports (default 10,000) shaped like
# the test reports of tests/bounces/ (60% Postfix hard DSN, 25% Gmail soft DSN, 10% ARF
# complaints, 5% unmatched: forged signatures and human replies), each for its own recipient
# of one mailing whose letters went out with signed VERP return paths. Then the same mbox again
# (every report a duplicate). Target: >= 2,000 reports/s on SQLite and on PostgreSQL.
#
#   benches/bounces.sh                    # SQLite + PostgreSQL
#   N=2000 BACKENDS=sqlite benches/bounces.sh
#
# Needs: python3, sqlite3, psql, PostgreSQL server binaries (or BENCH_PG_URL=postgres://... of
# an empty database). Builds target/release/mailctl. Prints one line per run.
set -euo pipefail

N=${N:-10000}
BACKENDS=${BACKENDS:-"sqlite postgres"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/mailctl
WORK=$(mktemp -d /tmp/mailctl-bench.XXXXXX)
chmod 755 "$WORK"
cleanup() {
    if [[ -n "${PGDATA_DIR:-}" ]]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

(cd "$ROOT" && cargo build --release --quiet)

pg_start() { # a private cluster (as benches/send.sh), unless BENCH_PG_URL is given
    [[ -n "${BENCH_PG_URL:-}" || -n "${PGDATA_DIR:-}" ]] && return
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PGDATA_DIR=$WORK/pg
    PG_PORT=$(free_port)
    mkdir -p "$PGDATA_DIR" && chown postgres "$PGDATA_DIR" 2>/dev/null || true
    runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust >/dev/null
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log" -w \
        -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGDATA_DIR" start >/dev/null
}

pg_url() {
    if [[ -n "${BENCH_PG_URL:-}" ]]; then echo "$BENCH_PG_URL"; return; fi
    local name=bench_$RANDOM$RANDOM
    psql -X -q -d "postgres://postgres@127.0.0.1:$PG_PORT/postgres" -c "CREATE DATABASE $name"
    echo "postgres://postgres@127.0.0.1:$PG_PORT/$name"
}

sql() { # url statement -> output
    if [[ $1 == sqlite://* ]]; then sqlite3 "${1#sqlite://}" "$2"; else psql -X -q -t -A -d "$1" -c "$2"; fi
}

# An installation with one user, N recipients in one mailing, every letter sent.
setup() { # dir url
    local dir=$1 url=$2
    export HOME=$dir XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config
    export MAILCTL_DATABASE_URL=$url MAILCTL_SESSION_FILE=$dir/session
    export MAILCTL_FROM=news@example.com MAILCTL_BOUNCE_ADDRESS=bounces@example.com
    echo bench-password-123 | "$BIN" csu --email admin@example.com --password-stdin >/dev/null 2>&1
    echo bench-password-123 | "$BIN" login --email admin@example.com --password-stdin >/dev/null 2>&1
    "$BIN" messages add --subject News --body Hello >/dev/null
    "$BIN" clients add --email r0@example.com >/dev/null
    "$BIN" mailings add --message 1 --start "$(date -u -d "-1 hour" +%Y-%m-%dT%H:%M:%SZ)" \
        --end "$(date -u -d "+1 day" +%Y-%m-%dT%H:%M:%SZ)" --client 1 >/dev/null
    local now=2026-12-01T09:00:00+00:00
    sql "$url" "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < $N)
      INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at)
      SELECT 1, 'r' || n || '@example.com', 'r' || n || '@example.com', '', '', '$now' FROM seq;"
    sql "$url" "INSERT INTO deliveries (mailing_id, client_id, state, tries, updated_at)
      SELECT 1, id, 'sent', 1, '$now' FROM clients WHERE id > 1;
      INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response)
      SELECT 1, id, '$now', 'success', '250 2.0.0 Ok' FROM clients WHERE id > 1;"
    # The signing secret exists once the sender (or this import) asked for it.
    "$BIN" bounces import - </dev/null >/dev/null 2>&1 || true
    sql "$url" "SELECT value FROM secrets WHERE name = 'unsubscribe'" >"$dir/secret"
}

# The mbox: client ids 2..N+1 are r1..rN.
make_mbox() { # dir
    python3 - "$ROOT/tests/bounces" "$1/secret" "$N" "$1/bounces.mbox" <<'PY'
import hmac, hashlib, sys
tmpl_dir, secret_file, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
secret = open(secret_file).read().strip().encode()
t = {k: open(f"{tmpl_dir}/{k}.eml").read() for k in
     ["postfix_hard", "gmail_soft", "arf_complaint", "human_reply"]}
def verp(m, c):
    mac = hmac.new(secret, b"verp:" + m.to_bytes(8, "big") + c.to_bytes(8, "big"), hashlib.sha256)
    return f"bounces+{m}.{c}.{mac.hexdigest()[:20]}@example.com"
with open(out, "w") as f:
    for i in range(1, n + 1):
        c = i + 1
        r = i % 20
        name = "postfix_hard" if r < 12 else "gmail_soft" if r < 17 else "arf_complaint" if r < 19 else None
        to = verp(1, c)
        rcpt = f"r{i}@example.com"
        if name is None:
            # Unmatched: a tampered signature, or a person's reply.
            # (and another client's Message-ID: no way in by that door either).
            name = "postfix_hard" if (i // 20) % 2 else "human_reply"
            to = to[:-13] + ("0" if to[-13] != "0" else "1") + to[-12:]
            c += 1
        body = (t[name].replace("{TO}", to).replace("{RCPT}", rcpt)
                .replace("{MID}", f"<mailing-1.client-{c}@example.com>").replace("{NONCE}", str(i)))
        f.write("From MAILER-DAEMON Wed Dec  2 09:15:02 2026\n")
        f.write(body.replace("\nFrom ", "\n>From "))
        f.write("\n")
PY
}

for backend in $BACKENDS; do
    dir=$WORK/$backend
    mkdir -p "$dir"
    if [[ $backend == postgres ]]; then pg_start; url=$(pg_url); else url=sqlite://$dir/data/mailctl.db; fi
    setup "$dir" "$url"
    make_mbox "$dir"
    size=$(du -m "$dir/bounces.mbox" | cut -f1)
    for pass in first again; do
        start=$(date +%s.%N)
        out=$("$BIN" bounces import "$dir/bounces.mbox" --format json 2>/dev/null)
        end=$(date +%s.%N)
        python3 - "$backend" "$pass" "$start" "$end" "$size" "$out" <<'PY'
import json, sys
backend, p, start, end, size, out = sys.argv[1:]
s = json.loads(out)
secs = float(end) - float(start)
rate = s["read"] / secs
print(f"{backend:8} {p:5} {s['read']} reports ({size} MB mbox) in {secs:.2f} s = {rate:,.0f} reports/s "
      f"{'PASS' if rate >= 2000 else 'FAIL'} (hard {s['hard']}, soft {s['soft']}, complaints {s['complaints']}, "
      f"duplicates {s['duplicates']}, unmatched {s['unmatched']}, malformed {s['malformed']})")
PY
    done
done
