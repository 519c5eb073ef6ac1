//! stats: figures against a plain GROUP BY over attempts, the Redis cache never stale after
//! every kind of write, Redis killed mid-test, role scoping, and the field names.
//!
//! Attempts are inserted with SQL, as the sender does: that runs the triggers of 0005.

mod common;

use common::servers::{self, psql};
use common::{Backend, Caller, Env};
use serde_json::Value;

/// Runs SQL on the test database (sqlite3 CLI or psql); returns the output, `|`-separated.
fn sql(env: &Env, text: &str) -> String {
    match env.backend {
        Backend::Postgres => psql(&env.db_url, text),
        Backend::Sqlite => {
            let path = env.dir.path().join("data/mailctl/mailctl.db");
            let out = std::process::Command::new("sqlite3")
                .args(["-cmd", ".timeout 10000"])
                .arg(&path)
                .arg(format!("PRAGMA foreign_keys = ON; {text}"))
                .output()
                .expect("run sqlite3");
            assert!(
                out.status.success(),
                "sqlite3 failed on {text:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }
}

/// A time literal as the application stores it: `2026-12-01T09:00:00` in UTC.
fn at(env: &Env, t: &str) -> String {
    match env.backend {
        Backend::Sqlite => format!("'{t}+00:00'"),
        Backend::Postgres => format!("'{t}Z'"),
    }
}

/// Inserts attempts: (mailing, client, time, success).
fn attempts(env: &Env, rows: &[(i64, Option<i64>, &str, bool)]) {
    let values: Vec<String> = rows
        .iter()
        .map(|(m, c, t, ok)| {
            format!(
                "({m}, {}, {}, '{}', '{}')",
                c.map(|c| c.to_string()).unwrap_or("NULL".into()),
                at(env, t),
                if *ok { "success" } else { "failure" },
                if *ok {
                    "250 2.0.0 OK"
                } else {
                    "451 4.7.1 try later"
                }
            )
        })
        .collect();
    sql(
        env,
        &format!(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) VALUES {};",
            values.join(", ")
        ),
    );
}

/// The reference: the same figures per mailing as a plain GROUP BY over attempts (only the
/// counts: attempted, succeeded, failed, recipients reached), within [since, until).
fn reference_by_mailing(env: &Env, since: Option<&str>, until: Option<&str>) -> Vec<Vec<i64>> {
    let range = |col: &str| {
        let mut cond = vec!["1 = 1".to_string()];
        if let Some(s) = since {
            cond.push(format!("{col} >= {}", at(env, s)));
        }
        if let Some(u) = until {
            cond.push(format!("{col} < {}", at(env, u)));
        }
        cond.join(" AND ")
    };
    let parse = |out: String| -> Vec<Vec<i64>> {
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let counts = parse(sql(
        env,
        &format!(
            "SELECT mailing_id, COUNT(*), SUM(CASE WHEN status = 'success' THEN 1 ELSE 0 END), \
             SUM(CASE WHEN status = 'failure' THEN 1 ELSE 0 END) \
             FROM attempts WHERE {} GROUP BY mailing_id ORDER BY mailing_id;",
            range("attempted_at")
        ),
    ));
    // Reached: recipients whose first success falls in the range.
    let reached = parse(sql(
        env,
        &format!(
            "SELECT mailing_id, COUNT(*) FROM (SELECT mailing_id, client_id, \
             MIN(attempted_at) AS first_success FROM attempts \
             WHERE status = 'success' AND client_id IS NOT NULL GROUP BY mailing_id, client_id) r \
             WHERE {} GROUP BY mailing_id;",
            range("first_success")
        ),
    ));
    counts
        .into_iter()
        .map(|mut row| {
            let n = reached.iter().find(|r| r[0] == row[0]).map_or(0, |r| r[1]);
            row.push(n);
            row
        })
        .collect()
}

fn counts_by_mailing(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            [
                "mailing_id",
                "attempted",
                "succeeded",
                "failed",
                "recipients_reached",
            ]
            .iter()
            .map(|f| r[*f].as_i64().unwrap())
            .collect()
        })
        .collect()
}

/// The same question three ways: cached (twice: a miss then a hit) and with --no-cache.
/// They must agree, with no warning; returns the answer.
fn stats(caller: &Caller, args: &[&str]) -> Value {
    let mut all = vec!["stats"];
    all.extend_from_slice(args);
    all.extend(["--format", "json"]);
    let first = caller.run(&all);
    first.success();
    assert_eq!(first.stderr(), "", "no warning with Redis up");
    let second = caller.run(&all).success().json();
    all.push("--no-cache");
    let uncached = caller.run(&all).success().json();
    assert_eq!(first.json(), uncached, "first cached answer of {args:?}");
    assert_eq!(second, uncached, "second cached answer of {args:?}");
    uncached
}

/// Every grouping, as a manager (everyone) and as `owner`: all agree cached and uncached,
/// and the per-mailing figures equal the GROUP BY reference.
fn check_all(env: &Env, manager: &Caller, owner: &Caller) {
    for args in [
        &[][..],
        &["--by", "mailing"],
        &["--by", "user"],
        &["--by", "day"],
        &[
            "--since",
            "2026-12-01T12:00:00Z",
            "--until",
            "2026-12-03T06:00:00Z",
        ],
    ] {
        stats(manager, args);
    }
    for args in [&[][..], &["--by", "mailing"], &["--by", "day"]] {
        stats(owner, args);
    }
    let by_mailing = stats(manager, &["--by", "mailing"]);
    assert_eq!(
        counts_by_mailing(&by_mailing),
        reference_by_mailing(env, None, None)
    );
}

fn cache_never_stale(env: &mut Env) {
    env.set("MAILCTL_REDIS_URL", &servers::redis_url());
    let env = &*env;
    let manager = env.account("manager", "mia");
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let c1 = ann.client("c1@example.com");
    let c2 = ann.client("c2@example.com");
    let c3 = ann.client("c3@example.com");
    let msg = ann.message("Hello");
    let m1 = ann.mailing(msg, &[c1, c2, c3]);
    let m2 = ann.mailing(msg, &[c1]);
    let bc = bob.client("b1@example.com");
    let bm = bob.mailing(bob.message("Hi"), &[bc]);

    // Nothing attempted yet: one overall row of zeros.
    let none = stats(&manager, &[]);
    assert_eq!(none[0]["attempted"], 0);
    assert_eq!(none[0]["success_rate"], Value::Null);
    check_all(env, &manager, &ann);

    // New attempts: the cached answers must move.
    attempts(
        env,
        &[
            (m1, Some(c1), "2026-12-01T09:00:00", false),
            (m1, Some(c1), "2026-12-02T09:00:00", true),
            (m1, Some(c2), "2026-12-02T10:00:00", true),
            (m1, Some(c3), "2026-12-03T10:00:00", false),
            (m2, Some(c1), "2026-12-03T11:00:00", true),
            (bm, Some(bc), "2026-12-01T13:00:00", true),
        ],
    );
    let all = stats(&manager, &[]);
    assert_eq!(all[0]["attempted"], 6);
    assert_eq!(all[0]["succeeded"], 4);
    assert_eq!(all[0]["recipients_reached"], 4);
    assert_eq!(stats(&ann, &[])[0]["attempted"], 5);
    check_all(env, &manager, &ann);

    // One more attempt after the cache is warm.
    attempts(env, &[(m1, Some(c3), "2026-12-04T08:00:00", true)]);
    let all = stats(&manager, &[]);
    assert_eq!(all[0]["attempted"], 7);
    assert_eq!(all[0]["last_attempt_at"], "2026-12-04T08:00:00Z");
    check_all(env, &manager, &ann);

    // A client deleted: it was reached, and stays counted (issue 18: history is kept).
    ann.run(&["clients", "delete", &c2.to_string(), "--yes"])
        .success();
    assert_eq!(
        stats(&ann, &["--mailing", &m1.to_string()])[0]["recipients_reached"],
        3
    );
    check_all(env, &manager, &ann);

    // A mailing edited (changes no figure, but must not confuse the cache either).
    let end = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    ann.run(&["mailings", "edit", &m2.to_string(), "--end", &end])
        .success();
    check_all(env, &manager, &ann);

    // A mailing moved to another owner (no command does it yet; an administrator with SQL).
    let bob_id = bob.json(&["whoami"])["id"].as_i64().unwrap();
    sql(
        env,
        &format!("UPDATE mailings SET owner_id = {bob_id} WHERE id = {m2};"),
    );
    assert_eq!(stats(&ann, &[])[0]["attempted"], 5);
    assert_eq!(stats(&bob, &[])[0]["attempted"], 2);
    check_all(env, &manager, &ann);
    check_all(env, &manager, &bob);

    // An owner's email changed: --by user shows it.
    sql(
        env,
        &format!("UPDATE accounts SET email = 'robert@example.com' WHERE id = {bob_id};"),
    );
    let by_user = stats(&manager, &["--by", "user"]);
    assert!(
        by_user
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["email"] == "robert@example.com"),
        "{by_user}"
    );

    // A mailing deleted (with --purge-history): its attempts go with it.
    ann.run(&["mailings", "delete", &m1.to_string(), "--yes"])
        .expect_code(5);
    ann.run(&[
        "mailings",
        "delete",
        &m1.to_string(),
        "--yes",
        "--purge-history",
    ])
    .success();
    assert_eq!(stats(&ann, &[])[0]["attempted"], 0);
    assert_eq!(stats(&manager, &[])[0]["attempted"], 2);
    check_all(env, &manager, &ann);
}

/// Proves the cache is read (a doctored entry is served) and that a write makes it unreachable.
fn cached_entries_are_used_until_a_write(env: &mut Env) {
    let redis = servers::start_private_redis();
    env.set("MAILCTL_REDIS_URL", &redis.url());
    let env = &*env;
    let ann = env.account("user", "ann");
    let c = ann.client("c@example.com");
    let m = ann.mailing(ann.message("Hello"), &[c]);
    attempts(env, &[(m, Some(c), "2026-12-01T09:00:00", true)]);
    assert_eq!(stats(&ann, &[])[0]["attempted"], 1);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("mailctl:stats:*")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys.len(), 1, "one entry per (scope, query, versions)");
    let doctored = r#"[{"id":null,"owner_id":null,"label":null,"attempted":999,"succeeded":0,"failed":0,"recipients_reached":0,"first_attempt_at":null,"last_attempt_at":null}]"#;
    let _: () = redis::cmd("SET")
        .arg(&keys[0])
        .arg(doctored)
        .query(&mut con)
        .unwrap();
    assert_eq!(
        ann.json(&["stats"])[0]["attempted"],
        999,
        "served from Redis"
    );
    assert_eq!(ann.json(&["stats", "--no-cache"])[0]["attempted"], 1);

    // Any write that changes the answer changes the key.
    attempts(env, &[(m, Some(c), "2026-12-01T10:00:00", false)]);
    assert_eq!(ann.json(&["stats"])[0]["attempted"], 2);
}

fn redis_killed_mid_test(env: &mut Env) {
    let mut redis = servers::start_private_redis();
    env.set("MAILCTL_REDIS_URL", &redis.url());
    let env = &*env;
    let ann = env.account("user", "ann");
    let c = ann.client("c@example.com");
    let m = ann.mailing(ann.message("Hello"), &[c]);
    attempts(env, &[(m, Some(c), "2026-12-01T09:00:00", false)]);
    assert_eq!(stats(&ann, &["--by", "mailing"])[0]["attempted"], 1);

    redis.kill();
    attempts(env, &[(m, Some(c), "2026-12-01T10:00:00", true)]);
    let started = std::time::Instant::now();
    let run = ann.run(&["stats", "--by", "mailing", "--format", "json"]);
    run.success();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "a dead Redis costs little"
    );
    // With --format json the warning is a JSON line too (issue 18: logs stay JSON).
    let warning: Value = serde_json::from_str(run.stderr().trim())
        .unwrap_or_else(|e| panic!("{e}: stderr: {}", run.stderr()));
    assert_eq!(warning["level"], "warning", "{warning}");
    let said = warning["message"].as_str().unwrap();
    assert!(
        said.starts_with("Redis at") && said.contains("answering from the database"),
        "{warning}"
    );
    let v = run.json();
    assert_eq!(v[0]["attempted"], 2);
    assert_eq!(v[0]["recipients_reached"], 1);
    // For people, the same warning as text.
    let text = ann.run(&["stats", "--by", "mailing"]);
    text.success();
    assert!(
        text.stderr().starts_with("mailctl: warning: Redis at"),
        "{}",
        text.stderr()
    );
    // --no-cache does not even try.
    let run = ann.run(&["stats", "--no-cache"]);
    run.success();
    assert_eq!(run.stderr(), "");

    // Back up (empty): works again, without a warning, and right.
    redis.restart();
    attempts(env, &[(m, Some(c), "2026-12-01T11:00:00", true)]);
    assert_eq!(stats(&ann, &["--by", "mailing"])[0]["attempted"], 3);
}

fn role_scoping(env: &Env) {
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");
    let mia = env.account("manager", "mia");
    let admin = env.admin();
    let a = ann.client("a@example.com");
    let am = ann.mailing(ann.message("A"), &[a]);
    let b = bob.client("b@example.com");
    let bm = bob.mailing(bob.message("B"), &[b]);
    attempts(
        env,
        &[
            (am, Some(a), "2026-12-01T09:00:00", true),
            (bm, Some(b), "2026-12-01T09:00:00", true),
            (bm, Some(b), "2026-12-01T10:00:00", false),
        ],
    );
    assert_eq!(ann.json(&["stats"])[0]["attempted"], 1);
    assert_eq!(bob.json(&["stats"])[0]["attempted"], 2);
    let ann_by_mailing = ann.json(&["stats", "--by", "mailing"]);
    assert_eq!(ann_by_mailing.as_array().unwrap().len(), 1);
    assert_eq!(ann_by_mailing[0]["mailing_id"], am);
    // Another user's mailing does not exist for ann.
    ann.run(&["stats", "--mailing", &bm.to_string()])
        .expect_code(4);
    // --by user: managers and admins only.
    ann.run(&["stats", "--by", "user"]).expect_code(3);
    for boss in [&mia, &admin] {
        assert_eq!(boss.json(&["stats"])[0]["attempted"], 3);
        let users = boss.json(&["stats", "--by", "user"]);
        let emails: Vec<&str> = users
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["email"].as_str().unwrap())
            .collect();
        assert_eq!(emails, ["ann@example.com", "bob@example.com"]);
        assert_eq!(
            boss.json(&["stats", "--mailing", &bm.to_string()])[0]["failed"],
            1
        );
    }
    // Not logged in.
    env.as_("nobody").run(&["stats"]).expect_code(3);
    // Rebuilding the counters: administrators only, and it changes no figure.
    mia.run(&["stats", "--rebuild"]).expect_code(3);
    let before = admin.json(&["stats", "--by", "day"]);
    admin.run(&["stats", "--rebuild"]).success();
    assert_eq!(admin.json(&["stats", "--by", "day"]), before);
}

fn ranges_match_the_attempts(env: &Env) {
    let ann = env.account("user", "ann");
    let cs: Vec<i64> = (0..4)
        .map(|i| ann.client(&format!("c{i}@example.com")))
        .collect();
    let msg = ann.message("Hello");
    let m1 = ann.mailing(msg, &cs);
    let m2 = ann.mailing(msg, &cs[..2]);
    let mut rows = Vec::new();
    let times = [
        "2026-11-30T23:59:59",
        "2026-12-01T00:00:00",
        "2026-12-01T08:30:00",
        "2026-12-01T23:00:00",
        "2026-12-02T12:00:00",
        "2026-12-03T00:00:01",
        "2026-12-03T18:00:00",
        "2026-12-05T06:00:00",
    ];
    for (i, t) in times.iter().enumerate() {
        let c = cs[i % cs.len()];
        rows.push((m1, Some(c), *t, i % 3 != 0));
        rows.push((m2, Some(cs[i % 2]), *t, i % 2 == 0));
    }
    attempts(env, &rows);
    let ranges: &[(Option<&str>, Option<&str>)] = &[
        (None, None),
        (Some("2026-12-01T00:00:00"), Some("2026-12-03T00:00:00")),
        (Some("2026-12-01T08:00:00"), Some("2026-12-03T12:00:00")),
        (Some("2026-12-01T08:00:00"), Some("2026-12-01T23:30:00")),
        (Some("2026-12-01T23:00:00"), Some("2026-12-02T12:00:01")),
        (Some("2026-12-02T00:00:00"), None),
        (None, Some("2026-12-02T13:00:00")),
        (Some("2026-12-03T00:00:01"), None),
    ];
    for (since, until) in ranges {
        let mut args = vec!["stats", "--by", "mailing"];
        let (s, u) = (
            since.map(|s| format!("{s}Z")),
            until.map(|u| format!("{u}Z")),
        );
        if let Some(s) = &s {
            args.extend(["--since", s]);
        }
        if let Some(u) = &u {
            args.extend(["--until", u]);
        }
        let got = ann.json(&args);
        assert_eq!(
            counts_by_mailing(&got),
            reference_by_mailing(env, *since, *until),
            "range {since:?}..{until:?}"
        );
        // Days add up to the overall row.
        args[2] = "day";
        let days = ann.json(&args);
        args.truncate(1);
        if let Some(s) = &s {
            args.extend(["--since", s]);
        }
        if let Some(u) = &u {
            args.extend(["--until", u]);
        }
        let overall = ann.json(&args);
        for f in ["attempted", "succeeded", "failed", "recipients_reached"] {
            let sum: i64 = days
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d[f].as_i64().unwrap())
                .sum();
            assert_eq!(
                sum,
                overall[0][f].as_i64().unwrap(),
                "{f} over days, {since:?}..{until:?}"
            );
        }
    }
    // An exact edge: an attempt at `until` is not counted, one at `since` is.
    let v = ann.json(&[
        "stats",
        "--since",
        "2026-12-01T08:30:00Z",
        "--until",
        "2026-12-01T23:00:00Z",
    ]);
    assert_eq!(v[0]["attempted"], 2);
    assert_eq!(v[0]["first_attempt_at"], "2026-12-01T08:30:00Z");
    // An empty or reversed range is invalid input.
    ann.run(&[
        "stats",
        "--since",
        "2026-12-02T00:00:00Z",
        "--until",
        "2026-12-01T00:00:00Z",
    ])
    .expect_code(5);
    // (`yesterday` is a time now: tests/mailings_truth.rs.)
    ann.run(&["stats", "--since", "last week"]).expect_code(5);
}

fn field_names(env: &Env) {
    let admin = env.admin();
    let c = admin.client("c@example.com");
    let m = admin.mailing(admin.message("Hello"), &[c]);
    attempts(env, &[(m, Some(c), "2026-12-01T09:00:00", true)]);
    let figures = [
        "attempted",
        "succeeded",
        "failed",
        "deferred",
        "recipients_reached",
        "bounced",
        "complained",
        "success_rate",
        "first_attempt_at",
        "last_attempt_at",
    ];
    for (by, keys) in [
        (None, vec![]),
        (Some("mailing"), vec!["mailing_id", "owner_id", "subject"]),
        (Some("user"), vec!["user_id", "email"]),
        (Some("day"), vec!["day"]),
    ] {
        let mut want: Vec<&str> = keys.clone();
        want.extend(figures);
        let mut args = vec!["stats"];
        if let Some(by) = by {
            args.extend(["--by", by]);
        }
        let json = admin.json(&args);
        let obj = json[0].as_object().expect("a JSON object");
        let got: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut sorted_want = want.clone();
        sorted_want.sort();
        let mut sorted_got = got.clone();
        sorted_got.sort();
        assert_eq!(sorted_got, sorted_want, "JSON fields of {by:?}");
        assert_eq!(obj["success_rate"], 1.0);
        args.extend(["--format", "csv"]);
        let csv = admin.run(&args).success().stdout();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            want.join(","),
            "CSV header of {by:?}"
        );
        assert_eq!(lines.count(), 1);
    }
    let day = admin.json(&["stats", "--by", "day"]);
    assert_eq!(day[0]["day"], "2026-12-01");
    // The man page documents them.
    let man =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/man/mailctl.1")).unwrap();
    assert!(
        man.contains("recipients_reached"),
        "man page lists the stats fields"
    );
}

on_both_backends!(role_scoping, ranges_match_the_attempts, field_names);

on_both_backends_mut!(
    cache_never_stale,
    cached_entries_are_used_until_a_write,
    redis_killed_mid_test
);
