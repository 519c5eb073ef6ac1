#!/usr/bin/env bash
# Whole-process time of `mailctl clients list` with 1,000 clients on SQLite (issue 2).
# Reference in the same run: `sqlite3` selecting the same rows from the same file, and
# `mailctl --version` (process start alone). Needs hyperfine (Debian package hyperfine).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/mailctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config
unset MAILCTL_DATABASE_URL MAILCTL_FORMAT
echo 'bench-password' | "$bin" csu --email admin@example.com --password-stdin >/dev/null 2>&1
echo 'bench-password' | "$bin" login --email admin@example.com --password-stdin 2>/dev/null
db=$XDG_DATA_HOME/mailctl/mailctl.db
# 1,000 clients of the logged-in admin (id 1), written directly for speed.
python3 - "$db" <<'PY'
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.executemany(
    "INSERT INTO clients (owner_id, email, email_key, full_name, comment, created_at) VALUES (1, ?, ?, ?, ?, ?)",
    [(f"client{i}@example.com", f"client{i}@example.com", f"Client Number {i}", "bench", "2026-11-25T00:00:00+00:00")
     for i in range(1000)])
con.commit()
PY
test "$("$bin" clients list --format csv | wc -l)" -eq 1001
hyperfine --warmup 5 --runs 50 --export-json "$work/h.json" \
  -n start "$bin --version" \
  -n sqlite3 "sqlite3 $db 'SELECT id, email, full_name, comment, owner_id, created_at FROM clients WHERE owner_id = 1 ORDER BY id'" \
  -n list-table "$bin clients list" \
  -n list-json "$bin clients list --format json" >&2
python3 - "$work/h.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
ref = r["sqlite3"]["median"]
for name, x in r.items():
    print(f"{name:12s} median {x['median']*1000:7.2f} ms   ratio to sqlite3 {x['median']/ref:5.2f}")
print("target: list-table median < 30 ms:", "PASS" if r["list-table"]["median"] < 0.030 else "FAIL")
PY
