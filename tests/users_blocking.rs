//! Manager actions from issue 3: users list / block / unblock, mailings disable / enable.

mod common;

use common::{Env, PASSWORD};

on_both_backends!(blocking_rules_and_effects, disabling_mailings);

fn blocking_rules_and_effects(env: &Env) {
    let admin = env.admin();
    let boss = env.account("manager", "boss");
    let boss2 = env.account("manager", "boss2");
    let ann = env.account("user", "ann");
    let bob = env.account("user", "bob");

    // A user can do none of this.
    for args in [
        vec!["users", "list"],
        vec!["users", "block", "bob@example.com"],
        vec!["users", "unblock", "bob@example.com"],
    ] {
        assert_eq!(ann.code(&args), 3, "{args:?}");
    }
    let list = boss.json(&["users", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 5);
    // Nobody blocks an admin or themselves; only an admin blocks a manager.
    assert_eq!(boss.code(&["users", "block", "admin@example.com"]), 3);
    assert_eq!(boss.code(&["users", "block", "boss@example.com"]), 3);
    assert_eq!(boss.code(&["users", "block", "boss2@example.com"]), 3);
    assert_eq!(admin.code(&["users", "block", "admin@example.com"]), 3);
    assert_eq!(boss.code(&["users", "block", "nobody@example.com"]), 4);

    // Blocking ends ann's session at once and refuses her login.
    ann.run(&["whoami"]).success();
    boss.run(&["users", "block", "ann@example.com"]).success();
    let r = ann.run(&["whoami"]);
    r.expect_code(3);
    assert!(
        r.stderr().contains("blocked") || r.stderr().contains("log in"),
        "{}",
        r.stderr()
    );
    let r = ann.stdin(
        &["login", "--email", "ann@example.com", "--password-stdin"],
        PASSWORD,
    );
    r.expect_code(3);
    assert!(r.stderr().contains("blocked"), "{}", r.stderr());
    bob.run(&["whoami"]).success();
    let list = boss.json(&["users", "list"]);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ann@example.com")
        .unwrap()
        .clone();
    assert_eq!(row["blocked"], true);

    // Unblocked: she can log in again (the old session stays ended).
    boss.run(&["users", "unblock", "ann@example.com"]).success();
    ann.run(&["whoami"]).expect_code(3);
    ann.login("ann@example.com");
    ann.run(&["whoami"]).success();

    // An admin may block a manager.
    admin
        .run(&["users", "block", "boss2@example.com"])
        .success();
    boss2.run(&["whoami"]).expect_code(3);
}

fn disabling_mailings(env: &Env) {
    let boss = env.account("manager", "boss");
    let ann = env.account("user", "ann");
    let c = ann.client("reader@example.com");
    let m = ann.message("Hello");
    let id = ann.mailing(m, &[c]).to_string();
    assert_eq!(ann.code(&["mailings", "disable", &id]), 3);
    let shown = boss.json(&["mailings", "disable", &id]);
    assert_eq!(shown["disabled"], true);
    assert_eq!(ann.json(&["mailings", "show", &id])["disabled"], true);
    assert_eq!(ann.code(&["mailings", "enable", &id]), 3);
    assert_eq!(boss.json(&["mailings", "enable", &id])["disabled"], false);
    assert_eq!(boss.code(&["mailings", "disable", "999999"]), 4);
}
