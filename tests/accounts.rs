//! Accounts and sessions: csu bootstrap, create-user/manager, login, logout, whoami.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Backend, Env, PASSWORD};

fn first_admin_needs_no_login_later_ones_do(env: &Env) {
    let nobody = env.as_("nobody");
    let admin = env.admin();
    assert_eq!(admin.json(&["whoami"])["role"], "admin");
    // Once an administrator exists, creating accounts needs an administrator's session.
    for cmd in [
        "csu",
        "create-user",
        "create-manager",
        "createsuperuser",
        "create_user",
    ] {
        nobody
            .stdin(
                &[cmd, "--email", "x@example.com", "--password-stdin"],
                PASSWORD,
            )
            .expect_code(3);
    }
    let ann = env.account("user", "ann");
    let boss = env.account("manager", "boss");
    for caller in [&ann, &boss] {
        for cmd in ["csu", "create-user", "create-manager"] {
            caller
                .stdin(
                    &[cmd, "--email", "y@example.com", "--password-stdin"],
                    PASSWORD,
                )
                .expect_code(3);
        }
    }
    let users = admin.json(&["users", "list"]);
    let emails: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["admin@example.com", "ann@example.com", "boss@example.com"]
    );
    // The alias of create_manager works for an administrator.
    admin
        .stdin(
            &[
                "create_manager",
                "--email",
                "m2@example.com",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .success();
    assert_eq!(admin.json(&["users", "list"]).as_array().unwrap().len(), 4);
}

fn account_input_is_validated(env: &Env) {
    let admin = env.admin();
    let create = |email: &str, pw: &str| {
        admin.stdin(&["create-user", "--email", email, "--password-stdin"], pw)
    };
    create("not-an-email", PASSWORD).expect_code(5);
    create("short@example.com", "short").expect_code(5);
    create("ann@example.com", PASSWORD).success();
    let dup = create("ANN@Example.com", PASSWORD);
    dup.expect_code(5);
    assert!(dup.stderr().contains("email"), "{}", dup.stderr());
    // Nothing half-written: still exactly two accounts.
    assert_eq!(admin.json(&["users", "list"]).as_array().unwrap().len(), 2);
    // Without --password-stdin and without a terminal there is nobody to ask.
    admin
        .run(&["create-user", "--email", "bob@example.com"])
        .expect_code(5);
}

fn login_logout_whoami(env: &Env) {
    let admin = env.admin();
    admin
        .stdin(
            &[
                "create-user",
                "--email",
                "Ann@Example.com",
                "--password-stdin",
            ],
            PASSWORD,
        )
        .success();
    let ann = env.as_("ann");
    ann.run(&["whoami"]).expect_code(3);
    let wrong = ann.stdin(
        &["login", "--email", "ann@example.com", "--password-stdin"],
        "wrong-password",
    );
    wrong.expect_code(3);
    let unknown = ann.stdin(
        &["login", "--email", "nobody@example.com", "--password-stdin"],
        "wrong-password",
    );
    unknown.expect_code(3);
    // Same answer for a wrong password and an unknown account.
    assert_eq!(wrong.stderr(), unknown.stderr());
    // Email is case-insensitive at login.
    ann.stdin(
        &["login", "--email", "ANN@example.com", "--password-stdin"],
        PASSWORD,
    )
    .success();
    let me = ann.json(&["whoami"]);
    assert_eq!(me["email"], "Ann@Example.com");
    assert_eq!(me["role"], "user");
    let mode = std::fs::metadata(env.session_file("ann"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "session file mode {mode:o}");
    // The file holds a token; the database only its hash, so the file's text is not in the db.
    let token = std::fs::read_to_string(env.session_file("ann")).unwrap();
    assert!(token.trim().len() >= 43);
    ann.run(&["logout"]).success();
    ann.run(&["whoami"]).expect_code(3);
    // A copied token stops working after logout: log in, copy, log out, restore the copy.
    ann.stdin(
        &["login", "--email", "ann@example.com", "--password-stdin"],
        PASSWORD,
    )
    .success();
    let copy = std::fs::read(env.session_file("ann")).unwrap();
    ann.run(&["logout"]).success();
    std::fs::write(env.session_file("ann"), copy).unwrap();
    ann.run(&["whoami"]).expect_code(3);
}

fn blocked_accounts_lose_access_at_once(env: &Env) {
    let admin = env.admin();
    let boss = env.account("manager", "boss");
    let ann = env.account("user", "ann");
    ann.run(&["clients", "list"]).success();
    ann.run(&["users", "block", "boss@example.com"])
        .expect_code(3);
    boss.run(&["users", "block", "boss@example.com"])
        .expect_code(3);
    boss.run(&["users", "block", "admin@example.com"])
        .expect_code(3);
    boss.run(&["users", "block", "nobody@example.com"])
        .expect_code(4);
    boss.run(&["users", "block", "ann@example.com"]).success();
    ann.run(&["clients", "list"]).expect_code(3);
    ann.stdin(
        &["login", "--email", "ann@example.com", "--password-stdin"],
        PASSWORD,
    )
    .expect_code(3);
    let listed = boss.json(&["users", "list"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ann@example.com")
        .unwrap()
        .clone();
    assert_eq!(row["blocked"], true);
    admin
        .run(&["users", "unblock", "ann@example.com"])
        .success();
    ann.login("ann@example.com");
    ann.run(&["clients", "list"]).success();
}

fn sessions_expire(env: &Env) {
    let admin = env.admin();
    admin.run(&["whoami"]).success();
    assert_eq!(env.sql("UPDATE sessions SET expires_at = created_at"), 1);
    let run = admin.run(&["whoami"]);
    run.expect_code(3);
    assert!(run.stderr().contains("expired"), "{}", run.stderr());
    admin.login("admin@example.com");
    admin.run(&["whoami"]).success();
}

on_both_backends!(
    sessions_expire,
    first_admin_needs_no_login_later_ones_do,
    account_input_is_validated,
    login_logout_whoami,
    blocked_accounts_lose_access_at_once,
);

#[test]
fn sqlite_file_is_private_and_created_on_first_use() {
    let env = Env::new(Backend::Sqlite);
    env.admin();
    let db = env.dir.path().join("data/mailctl/mailctl.db");
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "database mode {mode:o}");
    let dir_mode = std::fs::metadata(db.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0, "directory mode {dir_mode:o}");
}

#[test]
fn default_database_is_under_xdg_data_home() {
    // No MAILCTL_DATABASE_URL at all: the default path is used and migrated.
    let env = Env::new(Backend::Sqlite);
    let mut cmd = env.command("admin");
    cmd.env_remove("MAILCTL_DATABASE_URL")
        .args(["csu", "--email", "admin@example.com", "--password-stdin"])
        .write_stdin(format!("{PASSWORD}\n"))
        .assert()
        .success();
    assert!(env.dir.path().join("data/mailctl/mailctl.db").exists());
}

#[test]
fn migrate_is_idempotent() {
    let env = Env::new(Backend::Sqlite);
    env.as_("x").run(&["migrate"]).success();
    env.as_("x").run(&["migrate"]).success();
    env.admin();
}

#[test]
fn bad_database_url_is_a_clear_error() {
    let mut env = Env::new(Backend::Sqlite);
    env.db_url = "mysql://root:hunter2@localhost/x".into();
    let run = env.as_("x").run(&["migrate"]);
    run.expect_code(5);
    assert!(
        !run.stderr().contains("hunter2"),
        "password leaked: {}",
        run.stderr()
    );
    env.db_url = "postgres://bob:hunter2@127.0.0.1:1/none".into();
    let run = env.as_("x").run(&["migrate"]);
    run.expect_code(1);
    assert!(
        !run.stderr().contains("hunter2"),
        "password leaked: {}",
        run.stderr()
    );
    assert!(run.stderr().contains("bob:***@"), "{}", run.stderr());
}
