#!/usr/bin/env bash
# `mailctl stats --by user --format json` with 10,000,000 attempts over 10,000 mailings of
# 1,000 users (issue 5), whole-process time with hyperfine, without cache and with a warm
# Redis cache; the reference in the same run is the same figures as a plain GROUP BY over
# the attempts table (sqlite3 / psql client, output discarded).
#
#   benches/stats.sh sqlite
#   MAILCTL_BENCH_PG_ADMIN_URL=postgres://postgres@127.0.0.1:5432/postgres benches/stats.sh postgres
#
# PostgreSQL: a superuser URL; the script creates (and drops first) the database
# `mailctl_bench`. Redis: a private redis-server on a free port. Needs hyperfine, sqlite3,
# psql, redis-server. ATTEMPTS=1000000 for a quicker, smaller run.
#
# Loading: the attempts are generated inside the database (a recursive CTE on SQLite,
# generate_series on PostgreSQL) with the counter trigger (and the foreign-key checks) off
# and the attempts indexes dropped, then the indexes are rebuilt and the counters recomputed
# with `mailctl stats --rebuild` (one INSERT ... SELECT ... GROUP BY per counter table).
# Afterwards 100,000 more attempts go in one statement with the trigger on, to show its
# per-row cost; the answer is then checked against the GROUP BY reference.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: benches/stats.sh sqlite|postgres}
attempts=${ATTEMPTS:-10000000}
mailings=10000
users=1000
per_mailing=$((attempts / mailings))
cargo build --release --quiet
bin=$PWD/target/release/mailctl
work=$(mktemp -d)
redis_pid=
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config
unset MAILCTL_DATABASE_URL MAILCTL_FORMAT MAILCTL_REDIS_URL
t0=$(date +%s)
now() { echo "$(($(date +%s) - t0)) s"; }

case $backend in
  sqlite)
    db=$XDG_DATA_HOME/mailctl/mailctl.db
    export MAILCTL_DATABASE_URL=sqlite://$db
    run_sql() { sqlite3 -cmd '.timeout 60000' "$db" "$1"; }
    ts="strftime('%Y-%m-%dT%H:%M:%S+00:00', 1793491200 + k * 2592 + m % 2592, 'unixepoch')"
    ;;
  postgres)
    admin=${MAILCTL_BENCH_PG_ADMIN_URL:?set MAILCTL_BENCH_PG_ADMIN_URL to a PostgreSQL superuser URL}
    psql -X -q -d "$admin" -c 'DROP DATABASE IF EXISTS mailctl_bench WITH (FORCE)' -c 'CREATE DATABASE mailctl_bench'
    export MAILCTL_DATABASE_URL=${admin%/*}/mailctl_bench
    run_sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$MAILCTL_DATABASE_URL" -c "$1"; }
    ts="timestamptz '2026-11-01 00:00:00Z' + make_interval(secs => k * 2592 + m % 2592)"
    ;;
  *) echo "usage: benches/stats.sh sqlite|postgres" >&2; exit 2 ;;
esac

echo 'bench-password' | "$bin" csu --email admin@example.com --password-stdin >/dev/null 2>&1
echo 'bench-password' | "$bin" login --email admin@example.com --password-stdin 2>/dev/null

# Users 2..1001, one message each, 100 clients each, 10 mailings each (ids in insertion order
# on a fresh database). Attempt (k, m): mailing m+1, client k % 100 of its owner, spread over
# 30 days, one in 7 a failure.
echo "[$(now)] generating $users users, $mailings mailings, $attempts attempts ($backend)" >&2
gen_users="WITH RECURSIVE u(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM u WHERE i < $users - 1)"
run_sql "$gen_users INSERT INTO accounts (email, email_key, password_hash, role, email_confirmed, blocked, created_at)
  SELECT 'user' || i || '@example.com', 'user' || i || '@example.com', 'x', 'user', TRUE, FALSE, '2026-11-01T00:00:00+00:00' FROM u ORDER BY i;"
run_sql "$gen_users INSERT INTO messages (owner_id, subject, body, created_at)
  SELECT i + 2, 'Subject', 'Body', '2026-11-01T00:00:00+00:00' FROM u ORDER BY i;"
run_sql "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < $users * 100 - 1)
  INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at)
  SELECT i / 100 + 2, 'c' || i || '@example.com', 'c' || i || '@example.com', 'Client', '', '2026-11-01T00:00:00+00:00' FROM c ORDER BY i;"
run_sql "WITH RECURSIVE g(m) AS (SELECT 0 UNION ALL SELECT m + 1 FROM g WHERE m < $mailings - 1)
  INSERT INTO mailings (owner_id, message_id, start_at, end_at, status, disabled, created_at)
  SELECT m / 10 + 2, m / 10 + 1, '2026-11-01T00:00:00+00:00', '2026-12-01T00:00:00+00:00', 'completed', FALSE, '2026-11-01T00:00:00+00:00' FROM g ORDER BY m;"

attempts_from() { # $1 = first k, $2 = last k (inclusive); rows for every mailing
  echo "WITH RECURSIVE kk(k) AS (SELECT $1 UNION ALL SELECT k + 1 FROM kk WHERE k < $2),
         mm(m) AS (SELECT 0 UNION ALL SELECT m + 1 FROM mm WHERE m < $mailings - 1)
    INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response)
    SELECT m + 1, (m / 10) * 100 + k % 100 + 1, $ts,
           CASE WHEN (k * $mailings + m) % 7 = 0 THEN 'failure' ELSE 'success' END, '250 2.0.0 OK'
      FROM kk, mm"
}
load_start=$(date +%s.%N)
if [ "$backend" = sqlite ]; then
  trigger=$(run_sql "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'attempts_stats'")
  run_sql "DROP TRIGGER attempts_stats; DROP INDEX attempts_mailing; DROP INDEX attempts_time;
    PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; $(attempts_from 0 $((per_mailing - 1)));" >/dev/null
  run_sql "CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
    CREATE INDEX attempts_time ON attempts (attempted_at); $trigger;"
else
  run_sql "ALTER TABLE attempts DISABLE TRIGGER ALL; DROP INDEX attempts_mailing; DROP INDEX attempts_time;"
  run_sql "$(attempts_from 0 $((per_mailing - 1)))"
  run_sql "ALTER TABLE attempts ENABLE TRIGGER ALL;
    CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
    CREATE INDEX attempts_time ON attempts (attempted_at); ANALYZE;"
fi
load_end=$(date +%s.%N)
echo "[$(now)] loaded $attempts attempts in $(echo "$load_end - $load_start" | bc) s (trigger off, indexes rebuilt after)" >&2
rebuild_start=$(date +%s.%N)
"$bin" stats --rebuild
rebuild_end=$(date +%s.%N)
echo "[$(now)] counters rebuilt in $(echo "$rebuild_end - $rebuild_start" | bc) s (mailctl stats --rebuild)" >&2

# 100,000 more attempts (10 per mailing) in one statement, trigger on.
extra=100000
trig_start=$(date +%s.%N)
run_sql "$(attempts_from "$per_mailing" $((per_mailing + extra / mailings - 1)))"
trig_end=$(date +%s.%N)
attempts=$((attempts + extra))
echo "[$(now)] $extra attempts with the trigger on: $(echo "$trig_end - $trig_start" | bc) s" >&2
[ "$backend" = postgres ] && run_sql "ANALYZE" >/dev/null

reference="SELECT m.owner_id, acc.email, COUNT(*),
  SUM(CASE WHEN a.status = 'success' THEN 1 ELSE 0 END),
  SUM(CASE WHEN a.status = 'failure' THEN 1 ELSE 0 END),
  COUNT(DISTINCT CASE WHEN a.status = 'success' THEN a.mailing_id * 10000000000 + a.client_id END),
  MIN(a.attempted_at), MAX(a.attempted_at)
  FROM attempts a JOIN mailings m ON m.id = a.mailing_id JOIN accounts acc ON acc.id = m.owner_id
  GROUP BY m.owner_id, acc.email ORDER BY m.owner_id"
if [ "$backend" = sqlite ]; then
  ref_cmd="sqlite3 $db \"$reference\""
else
  ref_cmd="psql -X -q -A -t -d $MAILCTL_DATABASE_URL -c \"$reference\""
fi
ref_cmd=$(echo "$ref_cmd" | tr '\n' ' ')

# Correctness first: the counters equal the GROUP BY.
run_sql "$reference" | awk -F'|' '{print $1","$3","$4","$5","$6}' > "$work/ref.csv"
"$bin" stats --by user --format csv --no-cache | tail -n +2 | awk -F, '{print $1","$3","$4","$5","$6}' > "$work/ours.csv"
test "$(wc -l < "$work/ours.csv")" -eq "$users"
diff "$work/ref.csv" "$work/ours.csv" >&2
test "$("$bin" stats --format csv --no-cache | tail -1 | cut -d, -f1)" -eq "$attempts"
echo "[$(now)] stats --by user equals the GROUP BY reference ($users rows, $attempts attempts)" >&2

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis="redis://127.0.0.1:$port"

hyperfine --warmup 1 --runs 3 --export-json "$work/ref.json" \
  -n groupby-reference "$ref_cmd" >&2
hyperfine --warmup 3 --runs 30 --export-json "$work/h.json" \
  -n start "$bin --version" \
  -n stats-no-cache "$bin stats --by user --format json --no-cache" \
  -n stats-warm-cache "env MAILCTL_REDIS_URL=$redis $bin stats --by user --format json" \
  -n stats-redis-down "env MAILCTL_REDIS_URL=redis://127.0.0.1:1 $bin stats --by user --format json" >&2
python3 - "$work/ref.json" "$work/h.json" "$backend" "$attempts" <<'PY'
import json, sys
r = {}
for f in sys.argv[1:3]:
    r.update({x["command"]: x for x in json.load(open(f))["results"]})
ref = r["groupby-reference"]["median"]
print(f"backend {sys.argv[3]}, {int(sys.argv[4]):,} attempts")
for name, x in r.items():
    print(f"{name:18s} median {x['median']*1000:9.2f} ms   ratio to reference {x['median']/ref:8.4f}   (reference / this = {ref/x['median']:8.1f}x)")
ok1 = r["stats-no-cache"]["median"] < 0.100
ok2 = r["stats-warm-cache"]["median"] < 0.030
print("target: no cache < 100 ms:", "PASS" if ok1 else "FAIL", "| warm cache < 30 ms:", "PASS" if ok2 else "FAIL")
PY
echo "[$(now)] done" >&2
