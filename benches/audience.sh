#!/usr/bin/env bash
# Issue 15 point 5: what an audience costs over ROWS (default 1,000,000) clients, and how long
# a preview and a test send take.
#   - today's --all-clients: the one statement `mailings add --all-clients` ran before issue 15
#     (INSERT INTO mailing_clients SELECT ... FROM clients WHERE owner_id = ...), run by the
#     database's own shell (sqlite3 / psql) on the same data: the reference;
#   - `mailings add --all-clients` and `mailings add --tag news` (every client tagged), and
#     `--tag half` (every other client), end to end (the process included);
#   - the resolve a send-due run does at its start when nobody is new (`mailings edit --tag`,
#     which resolves the same way);
#   - `messages preview`, `mailings preview`, `mailings test --to` (outbox): best of 5, ms.
# Targets (issue 15: a tag's resolve costs at most 1.5 x making the rows for --all-clients):
#   the resolve statement with a tag <= 1.5 x the same statement without (database shell), and
#   `mailings add --tag` <= 1.5 x `mailings add --all-clients` (mailctl, end to end, the tag
#   run second, over a bigger mailing_clients); preview and test < 50 ms. mailctl's --tag
#   against the bare statement (process, transaction, counts printed) is shown beside.
# PostgreSQL: MAILCTL_BENCH_PG_URL (a superuser URL), or a private server started here.
# BACKENDS="sqlite" (or "postgres") runs one part only; default both. Needs python3, sqlite3,
# psql, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-1000000}
backends=${BACKENDS:-sqlite postgres}
cargo build --release --quiet
bin=$PWD/target/release/mailctl
work=$(mktemp -d)
chmod 755 "$work"
pg_pid=""
cleanup() {
  if [ -n "$pg_pid" ]; then kill "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
csv=$work/clients.csv
python3 - "$csv" "$rows" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("email,full_name,tags,city\n")
    for i in range(n):
        tags = "news;half" if i % 2 == 0 else "news"
        f.write(f"user{i:07d}@example.com,Name {i % 997},{tags},City {i % 50}\n")
PY

# Wall seconds of a command or shell function (run in this shell: the SQL helpers are functions).
secs() {
  local t0 t1; t0=$(date +%s%N)
  "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  t1=$(date +%s%N); python3 -c "print(f'{($t1 - $t0) / 1e9:.2f}')"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
# Best of 5 wall times of a command, in ms.
best_ms() {
  local best=999999
  for _ in 1 2 3 4 5; do
    local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; return 1; }
    t1=$(date +%s%N); best=$(( (t1 - t0) / 1000000 < best ? (t1 - t0) / 1000000 : best ))
  done
  echo "$best"
}

mailctl_env() { # $1 = database URL, $2 = name
  export XDG_DATA_HOME=$work/data-$2 XDG_CONFIG_HOME=$work/config-$2 MAILCTL_DATABASE_URL=$1
  unset MAILCTL_FORMAT MAILCTL_SMTP_URL
  echo 'bench-password' | "$bin" csu --email admin@example.com --password-stdin >/dev/null 2>&1
  echo 'bench-password' | "$bin" login --email admin@example.com --password-stdin >/dev/null 2>&1
  echo 'bench-password' | "$bin" create-user --email bench@example.com --password-stdin >/dev/null 2>&1
  echo 'bench-password' | "$bin" login --email bench@example.com --password-stdin >/dev/null 2>&1
  "$bin" clients import "$csv" >/dev/null 2>&1
}

# $1 name, $2 = a shell function that runs one SQL text on the database
run_part() {
  local name=$1 sql=$2
  local msg start end owner
  msg=$("$bin" messages add --subject 'Hi {{full_name}}' --body 'From {{city|somewhere}}' --format json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  start=$(date -u -d '-1 hour' +%FT%TZ); end=$(date -u -d '+1 day' +%FT%TZ)
  owner=$("$bin" whoami --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  # The reference: today's --all-clients statement, into a mailing made with one recipient
  # (removed first).
  local ref_id; ref_id=$("$bin" mailings add --message "$msg" --start "$start" --end "$end" --client 1 \
    --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  "$sql" "DELETE FROM mailing_clients WHERE mailing_id = $ref_id" >/dev/null
  local t_ref; t_ref=$(secs "$sql" "INSERT INTO mailing_clients (mailing_id, client_id) SELECT $ref_id, id FROM clients WHERE owner_id = $owner")
  # The same with the tag condition mailctl adds for --tag news (tags are stored ';t;').
  "$sql" "DELETE FROM mailing_clients WHERE mailing_id = $ref_id" >/dev/null
  local carries="instr(c.tags, ';news;') > 0"
  [[ $name == PostgreSQL ]] && carries="strpos(c.tags, ';news;') > 0"
  local t_ref_tag; t_ref_tag=$(secs "$sql" "INSERT INTO mailing_clients (mailing_id, client_id) SELECT $ref_id, c.id FROM clients c WHERE c.owner_id = $owner AND $carries")
  add() { "$bin" mailings add --message "$msg" --start "$start" --end "$end" "$@" --format json; }
  local t_all t_tag t_half t_noop t_noop_all
  t_all=$(secs add --all-clients); local all_id; all_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/out")
  t_tag=$(secs add --tag news); local tag_id; tag_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/out")
  grep -q "\"clients\": $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
  t_half=$(secs add --tag half)
  t_noop=$(secs "$bin" mailings edit "$tag_id" --tag news)
  t_noop_all=$(secs "$bin" mailings edit "$all_id" --all-clients)
  local p_msg p_mail p_test
  p_msg=$(best_ms "$bin" messages preview "$msg" --client 1)
  p_mail=$(best_ms "$bin" mailings preview "$tag_id" --client 1)
  p_test=$(best_ms "$bin" mailings test "$tag_id" --to me@example.com --client 1)
  echo "== $name, $rows clients"
  echo "reference: today's --all-clients statement ($sql)  $t_ref s"
  echo "mailings add --all-clients                        $t_all s  (x $(ratio "$t_all" "$t_ref"))"
  echo "the same statement with the tag (--tag news)       $t_ref_tag s  (x $(ratio "$t_ref_tag" "$t_ref"); target <= 1.5: $(python3 -c "print('PASS' if $t_ref_tag <= 1.5 * $t_ref else 'FAIL')"))"
  echo "mailings add --tag news (all $rows tagged)         $t_tag s  (x $(ratio "$t_tag" "$t_all") of mailctl's --all-clients; target <= 1.5: $(python3 -c "print('PASS' if $t_tag <= 1.5 * $t_all else 'FAIL')"); x $(ratio "$t_tag" "$t_ref") of the bare statement)"
  echo "mailings add --tag half (every other client)       $t_half s"
  echo "resolve with nobody new (edit --tag news)          $t_noop s"
  echo "resolve with nobody new (edit --all-clients)       $t_noop_all s"
  echo "messages preview $p_msg ms, mailings preview $p_mail ms, mailings test (outbox) $p_test ms  (target < 50: $( [ "$p_msg" -lt 50 ] && [ "$p_mail" -lt 50 ] && [ "$p_test" -lt 50 ] && echo PASS || echo FAIL))"
}

if [[ " $backends " == *" sqlite "* ]]; then
  mailctl_env "sqlite://$work/mailctl.db" sqlite
  # mailctl checks foreign keys (sqlx turns them on), as it did before issue 15: so does the
  # reference, or it would skip two lookups per row that no mailctl statement may skip.
  sqlite_sql() { sqlite3 "$work/mailctl.db" "PRAGMA synchronous=NORMAL;" "PRAGMA foreign_keys=ON;" "$1"; }
  run_part SQLite sqlite_sql
fi

[[ " $backends " == *" postgres "* ]] || exit 0
if [ -n "${MAILCTL_BENCH_PG_URL:-}" ]; then
  admin=$MAILCTL_BENCH_PG_URL
else
  pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  as_pg=()
  if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
  mkdir -p "$work/pg" && chmod 700 "$work/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$work/pg"
  "${as_pg[@]}" "$pgbin/initdb" -D "$work/pg/data" -U postgres --auth=trust --encoding=UTF8 \
    --locale=C.UTF-8 >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${as_pg[@]}" "$pgbin/postgres" -D "$work/pg/data" -p "$port" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories="$work/pg" >"$work/pg.log" 2>&1 &
  pg_pid=$!
  for _ in $(seq 60); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.5; done
  admin=postgres://postgres@127.0.0.1:$port/postgres
fi
base=${admin%/*}
psql -q "$admin" -c "DROP DATABASE IF EXISTS mailctl_bench_audience" -c "CREATE DATABASE mailctl_bench_audience"
mailctl_env "$base/mailctl_bench_audience" pg
psql -q "$base/mailctl_bench_audience" -c "VACUUM ANALYZE"
pg_sql() { psql -tAq "$base/mailctl_bench_audience" -c "$1"; }
run_part PostgreSQL pg_sql
psql -q "$admin" -c "DROP DATABASE mailctl_bench_audience" || true
