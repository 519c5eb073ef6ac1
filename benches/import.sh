#!/usr/bin/env bash
# `mailctl clients import` of ROWS (default 1,000,000) rows of ~60 bytes into a fresh owner,
# against the reference tools in the same run (issue 4):
#   SQLite:     sqlite3 `.import` into a table with a unique index on the case-folded email
#   PostgreSQL: psql `\copy` into a table with UNIQUE (owner_id, email_key)
# then the re-import of the same file (--on-conflict skip), and peak RSS (/usr/bin/time -v).
# PostgreSQL: MAILCTL_BENCH_PG_URL (a superuser URL), or a private server started here
# (/usr/lib/postgresql/*/bin, default durability settings). Needs python3, sqlite3, psql, time.
# BACKENDS="postgres" (or "sqlite") runs one part only; default both.
# PLAIN=1: the file of issue 4 (email,full_name,comment); by default (issue 15) the file also has
# a `tags` column (`news;vip`-style, 0-2 tags a row) and two custom fields (city, plan), which the
# reference tables get as plain columns.
# SHUFFLE=1: the rows in random order (fixed seed) instead of email order; the unique index is
# then written all over, and the page cache matters.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${ROWS:-1000000}
plain=${PLAIN:-0}
# The reference tables' columns beyond email, full_name, comment.
extra_cols=""
[ "$plain" = 1 ] || extra_cols=", tags TEXT NOT NULL, city TEXT NOT NULL, plan TEXT NOT NULL"
backends=${BACKENDS:-sqlite postgres}
cargo build --release --quiet
bin=${BIN:-$PWD/target/release/mailctl} # BIN=path: another build, for an A/B
work=$(mktemp -d)
chmod 755 "$work"
pg_pid=""
cleanup() {
  if [ -n "$pg_pid" ]; then kill "$pg_pid" 2>/dev/null || true; wait "$pg_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
csv=$work/clients.csv

# --- the file: email,full_name,comment; ~60 bytes a row, unique emails -------------------------
python3 - "$csv" "$rows" "$plain" "${SHUFFLE:-0}" <<'PY'
import random, sys
path, n, plain, shuffle = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
order = list(range(n))
if shuffle:
    random.Random(1).shuffle(order)
tags = ["", "news", "news;vip", "vip", "news;regional"]
cities = ["Москва", "Berlin", "São Paulo", "Kazan"]
with open(path, "w") as f:
    f.write("email,full_name,comment\n" if plain else "email,full_name,comment,tags,city,plan\n")
    for i in order:
        row = f"user{i:07d}@example.com,Firstname Lastname{i % 997},a comment {i % 89}"
        if not plain:
            row += f",{tags[i % 5]},{cities[i % 4]},plan-{i % 3}"
        f.write(row + "\n")
PY
bytes=$(stat -c %s "$csv")
echo "file: $rows rows, $((bytes / rows)) bytes/row" >&2

# Runs a command under /usr/bin/time; prints "seconds max_rss_kib".
timed() {
  /usr/bin/time -f '%e %M' -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
    cat "$work/err" >&2; return 1; }
  cat "$work/time"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
rate() { python3 -c "print(round($rows / $1))"; }

# Fresh mailctl installation with one logged-in user (its clients are the import target).
mailctl_env() { # $1 = database URL
  export XDG_DATA_HOME=$work/data-$2 XDG_CONFIG_HOME=$work/config-$2 MAILCTL_DATABASE_URL=$1
  unset MAILCTL_FORMAT
  echo 'bench-password' | "$bin" csu --email admin@example.com --password-stdin >/dev/null 2>&1
  echo 'bench-password' | "$bin" login --email admin@example.com --password-stdin >/dev/null 2>&1
  echo 'bench-password' | "$bin" create-user --email bench@example.com --password-stdin >/dev/null 2>&1
  echo 'bench-password' | "$bin" login --email bench@example.com --password-stdin >/dev/null 2>&1
}

report() { # name ref_seconds first_seconds first_rss second_seconds
  local ref=$2 first=$3 rss=$4 second=$5
  echo "== $1"
  echo "reference          $(rate "$ref") rows/s ($ref s)"
  echo "mailctl import     $(rate "$first") rows/s ($first s), peak RSS $((rss / 1024)) MiB"
  echo "mailctl re-import  $(rate "$second") rows/s ($second s, --on-conflict skip)"
  local r; r=$(ratio "$ref" "$first")
  echo "ratio import/reference rows/s: $r  (target >= 0.40: $(python3 -c "print('PASS' if $r >= 0.40 else 'FAIL')"))"
  echo "peak RSS < 64 MiB: $( [ "$rss" -lt $((64 * 1024)) ] && echo PASS || echo FAIL)"
  echo "re-import no slower than import: $(python3 -c "print('PASS' if $second <= $first * 1.05 else 'FAIL')") (5% noise allowed)"
}

# --- SQLite -----------------------------------------------------------------------------------
if [[ " $backends " == *" sqlite "* ]]; then
ref_db=$work/ref.db
# The closest table .import can fill: the file's 3 columns, and a unique index on the lower-cased
# email (ours is UNIQUE (owner_id, email_key) with email_key the lower-cased email).
sqlite3 "$ref_db" "PRAGMA journal_mode=WAL;" \
  "CREATE TABLE clients (email TEXT NOT NULL, full_name TEXT NOT NULL, comment TEXT NOT NULL$extra_cols);" \
  "CREATE UNIQUE INDEX clients_key ON clients (lower(email));" >/dev/null
# Same durability as mailctl's connections (WAL, synchronous=NORMAL); .import is one transaction.
read -r s_ref _ < <(timed sqlite3 "$ref_db" "PRAGMA synchronous=NORMAL;" \
  ".import --csv --skip 1 $csv clients")
test "$(sqlite3 "$ref_db" 'SELECT count(*) FROM clients')" -eq "$rows"

mailctl_env "sqlite://$work/mailctl.db" sqlite
read -r s_first s_rss < <(timed "$bin" clients import "$csv" --format json)
grep -q "\"inserted\": $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
read -r s_second _ < <(timed "$bin" clients import "$csv" --format json)
grep -q "\"skipped\": $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
report "SQLite (sqlite3 .import)" "$s_ref" "$s_first" "$s_rss" "$s_second"
fi

# --- PostgreSQL -------------------------------------------------------------------------------
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
psql -q "$admin" -c "DROP DATABASE IF EXISTS mailctl_bench_ref" -c "DROP DATABASE IF EXISTS mailctl_bench" \
  -c "CREATE DATABASE mailctl_bench_ref" -c "CREATE DATABASE mailctl_bench"
psql -q "$base/mailctl_bench_ref" -c "CREATE TABLE clients (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id BIGINT NOT NULL DEFAULT 1,
    email TEXT NOT NULL,
    email_key TEXT NOT NULL GENERATED ALWAYS AS (lower(email)) STORED,
    full_name TEXT NOT NULL, comment TEXT NOT NULL$extra_cols,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (owner_id, email_key))"
# A checkpoint before each timed run: none of them starts with the WAL of the one before.
checkpoint() { psql -q "$admin" -c CHECKPOINT; }
checkpoint
copy_cols="email, full_name, comment"
copy_opts="FORMAT csv, HEADER"
# An empty tags cell is no tags (''), not NULL, as mailctl stores it.
[ "$plain" = 1 ] || { copy_cols="$copy_cols, tags, city, plan"; copy_opts="$copy_opts, FORCE_NOT_NULL (tags)"; }
read -r p_ref _ < <(timed psql -q "$base/mailctl_bench_ref" \
  -c "\\copy clients ($copy_cols) FROM '$csv' WITH ($copy_opts)")
test "$(psql -tAq "$base/mailctl_bench_ref" -c 'SELECT count(*) FROM clients')" -eq "$rows"
# Not the target's reference, shown for scale: the same table with mailctl's foreign key
# (clients.owner_id REFERENCES accounts), whose per-row check every insert into clients pays.
psql -q "$base/mailctl_bench_ref" -c "CREATE TABLE owners (id BIGINT PRIMARY KEY)" \
  -c "INSERT INTO owners VALUES (1)" \
  -c "CREATE TABLE clients_fk (LIKE clients INCLUDING ALL)" \
  -c "ALTER TABLE clients_fk ADD FOREIGN KEY (owner_id) REFERENCES owners (id)"
checkpoint
read -r p_fk _ < <(timed psql -q "$base/mailctl_bench_ref" \
  -c "\\copy clients_fk ($copy_cols) FROM '$csv' WITH ($copy_opts)")

mailctl_env "$base/mailctl_bench" pg
checkpoint
read -r p_first p_rss < <(timed "$bin" clients import "$csv" --format json)
grep -q "\"inserted\": $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
checkpoint
read -r p_second _ < <(timed "$bin" clients import "$csv" --format json)
grep -q "\"skipped\": $rows" "$work/out" || { cat "$work/out" >&2; exit 1; }
report "PostgreSQL (psql \\copy)" "$p_ref" "$p_first" "$p_rss" "$p_second"
echo "(for scale: psql \\copy into the same table with mailctl's FK on owner_id: $(rate "$p_fk") rows/s ($p_fk s); mailctl import/that: $(ratio "$p_fk" "$p_first"))"
psql -q "$admin" -c "DROP DATABASE mailctl_bench_ref" -c "DROP DATABASE mailctl_bench" || true
