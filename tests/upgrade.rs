//! Upgrading a database made by an older mailctl: the schema is migrated up to an old
//! version with the repository's own migration files, filled as the old code filled it, and
//! then `mailctl migrate` (the real binary) brings it up to date. Checks the data migrations
//! did to old rows.

mod common;

use std::path::Path;

use common::{Backend, Env};

on_both_backends!(refusals_once_named_bounced_become_refused);

/// Applies the repository's migrations up to and including `last`, as an older binary did.
fn migrate_up_to(env: &Env, last: i64) {
    let dir = match env.backend {
        Backend::Sqlite => "migrations/sqlite",
        Backend::Postgres => "migrations/postgres",
    };
    let old = env.dir.path().join("old-migrations");
    std::fs::create_dir_all(&old).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version <= last {
            std::fs::copy(&path, old.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert!(copied > 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let migrator = sqlx::migrate::Migrator::new(old.as_path()).await.unwrap();
        let db = mailctl::db::Db::connect(&env.db_url, 1).await.unwrap();
        mailctl::on_pool!(&db, p => migrator.run(p).await).unwrap();
        db.close().await;
    });
}

/// Before migration 0013 a 5xx refusal during the SMTP conversation suppressed the address
/// as `bounced`; since, `bounced` means a bounce report, and refusals are `refused`.
fn refusals_once_named_bounced_become_refused(env: &Env) {
    migrate_up_to(env, 12);
    assert_eq!(
        env.count("SELECT MAX(version) FROM _sqlx_migrations WHERE success"),
        12
    );
    let t = "'2026-11-30T10:00:00+00:00'";
    for statement in [
        format!(
            "INSERT INTO accounts (email, email_key, password_hash, role, email_confirmed, created_at) \
             VALUES ('ann@example.com', 'ann@example.com', 'x', 'user', TRUE, {t})"
        ),
        format!(
            "INSERT INTO clients (owner_id, email, email_key, created_at) VALUES \
             (1, 'gone@example.com', 'gone@example.com', {t}), \
             (1, 'left@example.com', 'left@example.com', {t})"
        ),
        format!(
            "INSERT INTO messages (owner_id, subject, body, created_at) VALUES (1, 'News', 'Hi', {t})"
        ),
        format!(
            "INSERT INTO mailings (owner_id, message_id, start_at, end_at, status, created_at) \
             VALUES (1, 1, {t}, '2026-12-01T10:00:00+00:00', 'completed', {t})"
        ),
        // What the old sender wrote for a refusal: the try, and the address suppressed.
        format!(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
             VALUES (1, 1, {t}, 'failure', '550 5.1.1 no such user')"
        ),
        format!(
            "INSERT INTO suppressions (owner_id, email_key, reason, created_at) VALUES \
             (1, 'gone@example.com', 'bounced', {t}), (1, 'left@example.com', 'unsubscribed', {t})"
        ),
    ] {
        env.sql(&statement);
    }

    env.as_("x").run(&["migrate"]).success();
    let reason = |email: &str| {
        env.text(&format!(
            "SELECT reason FROM suppressions WHERE email_key = '{email}'"
        ))
    };
    assert_eq!(reason("gone@example.com"), "refused");
    assert_eq!(reason("left@example.com"), "unsubscribed");
    assert_eq!(env.count("SELECT COUNT(*) FROM suppressions"), 2);

    // As the commands show it: the refusal is still a failed try, not a bounce report.
    let admin = env.admin();
    let list = admin.json(&["suppressions", "list", "--owner", "ann@example.com"]);
    let gone = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["email"] == "gone@example.com")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(gone["reason"], "refused", "{list}");
    let stats = admin.json(&["stats", "--by", "mailing"]);
    let row = &stats[0];
    assert_eq!(
        (&row["failed"], &row["bounced"], &row["complained"]),
        (&1.into(), &0.into(), &0.into()),
        "{stats}"
    );
    let attempts = admin.json(&["attempts", "list", "--mailing", "1"]);
    assert_eq!(attempts[0]["status"], "failure", "{attempts}");
    assert_eq!(attempts[0]["server_response"], "550 5.1.1 no such user");
}
