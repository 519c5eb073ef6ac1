//! TLS to the SMTP server, chosen by MAILCTL_SMTP_URL: `smtp://` takes STARTTLS when offered,
//! `?tls=required` insists on it, `smtps://` is TLS from the first byte; user:pass@ adds AUTH.
//! The test servers (tests/smtp_server.py) present a certificate from a throwaway CA, trusted
//! through MAILCTL_SMTP_CA_FILE, and record whether each letter came over TLS.

mod common;

use common::servers::{SmtpServer, SmtpTls, start_smtp, start_smtp_tls, start_smtp_tls_with_auth};
use common::{Caller, Env};

on_both_backends_mut!(
    starttls_offered_is_taken_up,
    tls_required_fails_on_a_server_without_starttls,
    implicit_tls_with_smtps,
    starttls_then_auth,
    untrusted_certificate_is_refused_not_downgraded,
    unusable_ca_file_is_a_configuration_error,
);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Points the environment at `server` (URL as given) and trusts its CA.
fn use_server(env: &mut Env, url: &str, server: &SmtpServer) {
    env.set("MAILCTL_SMTP_URL", url);
    env.set("MAILCTL_SMTP_CA_FILE", server.ca_file().to_str().unwrap());
    env.set("MAILCTL_FROM", "News <news@example.org>");
    env.set("MAILCTL_BASE_URL", "https://mail.example.org");
    // A failed try may be retried at once by the next run.
    env.set("MAILCTL_RETRY_DELAY", "0");
}

/// Ann's mailing to `to`, due now.
fn mailing_to<'a>(env: &'a Env, to: &[&str]) -> Caller<'a> {
    let ann = env.account("user", "ann");
    let ids: Vec<i64> = to.iter().map(|email| ann.client(email)).collect();
    ann.mailing(ann.message("Over TLS"), &ids);
    ann
}

fn sent(caller: &Caller) -> u64 {
    let summary = caller.json(&["send-due"]);
    summary["sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("no sent in {summary}"))
}

/// Every letter the server took came over TLS 1.2 or 1.3.
fn assert_all_over_tls(server: &SmtpServer, letters: usize) {
    let versions = server.tls_versions();
    assert_eq!(versions.len(), letters, "{versions:?}");
    assert!(
        versions
            .iter()
            .all(|v| matches!(v.as_deref(), Some("TLSv1.2" | "TLSv1.3"))),
        "not all letters came over TLS: {versions:?}"
    );
}

/// How many deliveries are in `state`, and how many there are in all.
fn deliveries_in(env: &Env, state: &str) -> (i64, i64) {
    (
        env.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE state = '{state}'"
        )),
        env.count("SELECT COUNT(*) FROM deliveries"),
    )
}

// ---------------------------------------------------------------------------------------------
// scenarios
// ---------------------------------------------------------------------------------------------

/// Plain `smtp://` against a server that offers STARTTLS (and would take plain text too):
/// every letter goes over TLS.
fn starttls_offered_is_taken_up(env: &mut Env) {
    let server = start_smtp_tls(SmtpTls::Starttls);
    use_server(env, &server.url(), &server);
    let ann = mailing_to(env, &["one@example.com", "two@example.com"]);

    assert_eq!(sent(&ann), 2);
    assert_all_over_tls(&server, 2);
    let log = server.log().join("\n");
    assert!(log.contains("one@example.com") && log.contains("two@example.com"));
    assert_eq!(deliveries_in(env, "sent"), (2, 2));
}

/// `?tls=required` against a server without STARTTLS: the run stops (exit 1) saying why,
/// nothing is sent or marked sent, and the letter goes out on a later run once TLS is not
/// required any more.
fn tls_required_fails_on_a_server_without_starttls(env: &mut Env) {
    let server = start_smtp();
    env.set(
        "MAILCTL_SMTP_URL",
        &format!("{}?tls=required", server.url()),
    );
    env.set("MAILCTL_RETRY_DELAY", "0");
    let ann = mailing_to(env, &["careful@example.com"]);

    let run = ann.run(&["send-due"]);
    run.expect_code(1);
    assert!(run.stderr().contains("STARTTLS"), "{}", run.stderr());
    assert_eq!(server.received_count(), 0);
    assert_eq!(deliveries_in(env, "pending"), (1, 1));
    let tries = ann.json(&["attempts", "list"]);
    assert_eq!(tries.as_array().unwrap().len(), 1, "{tries}");
    assert_eq!(tries[0]["status"], "deferred");

    env.set("MAILCTL_SMTP_URL", &server.url());
    let ann = env.as_("ann");
    assert_eq!(sent(&ann), 1);
    assert_eq!(server.received_count(), 1);
    assert_eq!(deliveries_in(env, "sent"), (1, 1));
}

/// `smtps://`: TLS from the first byte.
fn implicit_tls_with_smtps(env: &mut Env) {
    let server = start_smtp_tls(SmtpTls::Implicit);
    assert!(server.url().starts_with("smtps://"));
    use_server(env, &server.url(), &server);
    let ann = mailing_to(env, &["implicit@example.com"]);

    assert_eq!(sent(&ann), 1);
    assert_all_over_tls(&server, 1);
    assert_eq!(deliveries_in(env, "sent"), (1, 1));
}

/// user:pass@ with STARTTLS: this server refuses mail and AUTH before STARTTLS, so the
/// letter arriving proves the order STARTTLS, then AUTH.
fn starttls_then_auth(env: &mut Env) {
    let server = start_smtp_tls_with_auth(SmtpTls::StarttlsRequired, "mailer", "tls-secret");
    use_server(env, &format!("{}?tls=required", server.url()), &server);
    let ann = mailing_to(env, &["auth@example.com"]);

    assert_eq!(sent(&ann), 1);
    assert_all_over_tls(&server, 1);
    assert_eq!(deliveries_in(env, "sent"), (1, 1));
}

/// A certificate from a CA nobody trusts: the connection fails naming the certificate, and
/// plain `smtp://` does not fall back to sending in clear text.
fn untrusted_certificate_is_refused_not_downgraded(env: &mut Env) {
    let server = start_smtp_tls(SmtpTls::Starttls);
    env.set("MAILCTL_SMTP_URL", &server.url());
    env.set("MAILCTL_RETRY_DELAY", "0");
    let ann = mailing_to(env, &["mitm@example.com"]);

    let run = ann.run(&["send-due"]);
    run.expect_code(1);
    assert!(run.stderr().contains("certificate"), "{}", run.stderr());
    assert!(
        run.stderr().contains("MAILCTL_SMTP_CA_FILE"),
        "{}",
        run.stderr()
    );
    assert_eq!(server.received_count(), 0);
    assert_eq!(deliveries_in(env, "pending"), (1, 1));

    // Trusting the CA is all it takes.
    env.set("MAILCTL_SMTP_CA_FILE", server.ca_file().to_str().unwrap());
    let ann = env.as_("ann");
    assert_eq!(sent(&ann), 1);
    assert_all_over_tls(&server, 1);
}

/// MAILCTL_SMTP_CA_FILE missing, not PEM, or PEM without a certificate: a one-line error
/// naming the variable, exit 5 like a malformed MAILCTL_SMTP_URL, and nothing tried.
fn unusable_ca_file_is_a_configuration_error(env: &mut Env) {
    let server = start_smtp_tls(SmtpTls::Starttls);
    use_server(env, &server.url(), &server);
    mailing_to(env, &["config@example.com"]);
    let garbage = env.dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let missing = env.dir.path().join("missing.pem");
    let key_only = server.dir.join("key.pem");

    for file in [&missing, &garbage, &key_only] {
        env.set("MAILCTL_SMTP_CA_FILE", file.to_str().unwrap());
        let ann = env.as_("ann");
        let run = ann.run(&["send-due"]);
        run.expect_code(5);
        let stderr = run.stderr();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains("MAILCTL_SMTP_CA_FILE"), "{stderr}");
        assert!(lines[0].contains(file.to_str().unwrap()), "{stderr}");
    }
    assert_eq!(server.received_count(), 0);
    assert_eq!(
        env.as_("ann").json(&["attempts", "list"]),
        serde_json::json!([])
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM deliveries WHERE state <> 'pending'"),
        0
    );

    env.set("MAILCTL_SMTP_CA_FILE", server.ca_file().to_str().unwrap());
    assert_eq!(sent(&env.as_("ann")), 1);
    assert_all_over_tls(&server, 1);

    // Nothing is due now: the bad file still fails the run (cron reports it at once).
    env.set("MAILCTL_SMTP_CA_FILE", garbage.to_str().unwrap());
    env.as_("ann").run(&["send-due"]).expect_code(5);
}
