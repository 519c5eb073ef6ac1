//! Generated documentation: shell completions and man pages, from the one clap tree.
//! `tests/generated.rs` fails when the committed files in completions/ and man/ drift;
//! `MAILCTL_REGENERATE=1 cargo test --test generated` rewrites them.

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::Cli;

/// The command tree with the plain package version, so generated files do not change with
/// every commit (the binary's own --version adds `git describe`).
pub fn command() -> clap::Command {
    Cli::command().version(env!("CARGO_PKG_VERSION"))
}

pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "mailctl", &mut out);
    out
}

/// The committed completion files: (file name, shell).
pub const COMPLETIONS: &[(&str, Shell)] = &[
    ("mailctl.bash", Shell::Bash),
    ("_mailctl", Shell::Zsh),
    ("mailctl.fish", Shell::Fish),
];

/// Field names of the records printed with `--format json|csv`: a public contract.
pub fn record_fields() -> Vec<(&'static str, &'static [&'static str])> {
    use crate::output::Record;
    vec![
        (
            "accounts (whoami, users list, csu, create-user, create-manager)",
            crate::db::accounts::Account::HEADERS,
        ),
        ("clients", crate::db::clients::Client::HEADERS),
        ("messages", crate::db::messages::Message::HEADERS),
        ("mailings", crate::db::mailings::Mailing::HEADERS),
        (
            "mailings recipients",
            crate::db::recipients::Recipient::HEADERS,
        ),
        (
            "--dry-run letters (send-due, mailings send; JSON: in \"letters\")",
            crate::commands::dry_run::Planned::HEADERS,
        ),
        ("attempts list", crate::db::attempts::Attempt::HEADERS),
        (
            "clients export (JSON; CSV has one column per custom field instead of fields)",
            crate::db::import::ExportRow::HEADERS,
        ),
        ("tags list", crate::db::tags::TagCount::HEADERS),
        ("mailings test", crate::commands::preview::TestSend::HEADERS),
        (
            "clients import summary",
            crate::commands::import::Summary::HEADERS,
        ),
        (
            "bounces import summary",
            crate::commands::bounces::Summary::HEADERS,
        ),
        (
            "suppressions list",
            crate::db::suppressions::Suppression::HEADERS,
        ),
        ("doctor", crate::commands::doctor::Check::HEADERS),
        ("stats", crate::commands::stats::OverallStats::HEADERS),
        (
            "stats --by mailing",
            crate::commands::stats::MailingStats::HEADERS,
        ),
        (
            "stats --by user",
            crate::commands::stats::UserStats::HEADERS,
        ),
        ("stats --by day", crate::commands::stats::DayStats::HEADERS),
    ]
}

/// Every setting of the clap tree: (environment variable, flag, help text with its default).
pub fn settings() -> Vec<(String, String, String)> {
    command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_string();
            let flag = a.get_long()?.to_string();
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            Some((env, flag, help))
        })
        .collect()
}

fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('-', "\\-")
}

/// Sections the top page adds to what clap_mangen renders.
fn extra_sections() -> String {
    let mut s = String::new();
    s.push_str(".SH ENVIRONMENT\nEvery setting is a global flag or its environment variable (the flag wins):\n");
    for (name, flag, text) in settings() {
        s.push_str(&format!(
            ".TP\n\\fB{}\\fR (\\fB\\-\\-{}\\fR)\n{}\n",
            roff_escape(&name),
            roff_escape(&flag),
            roff_escape(&text)
        ));
    }
    s.push_str(".SH EXIT STATUS\n");
    for (code, text) in [
        ("0", "Success (also: send\\-due with nothing to do)."),
        (
            "1",
            "Runtime failure: database, SMTP unreachable, file system.",
        ),
        ("2", "Usage error (unknown command or flag)."),
        (
            "3",
            "Not logged in or not permitted: wrong password, unconfirmed or blocked account, expired session, throttled login, role not allowed.",
        ),
        ("4", "Not found, including another user's record."),
        ("5", "Invalid input: validation, CSV rows, conflicts."),
    ] {
        s.push_str(&format!(".TP\n\\fB{code}\\fR\n{text}\n"));
    }
    s.push_str(".SH FILES\n");
    for (name, text) in [
        (
            "$XDG_DATA_HOME/mailctl/mailctl.db",
            "The default SQLite database (mode 0600).",
        ),
        (
            "$XDG_DATA_HOME/mailctl/outbox/",
            "Letters written as .eml files when MAILCTL_SMTP_URL is unset.",
        ),
        (
            "$XDG_CONFIG_HOME/mailctl/session",
            "The login session token (mode 0600); the database keeps only its SHA\\-256.",
        ),
    ] {
        s.push_str(&format!(".TP\n\\fB{}\\fR\n{}\n", roff_escape(name), text));
    }
    s.push_str(".SH FIELDS\nField names of \\fB\\-\\-format json\\fR objects and \\fB\\-\\-format csv\\fR columns, in order:\n");
    for (what, fields) in record_fields() {
        s.push_str(&format!(
            ".TP\n\\fB{}\\fR\n{}\n",
            roff_escape(what),
            roff_escape(&fields.join(", "))
        ));
    }
    s.push_str(".SH CSV IMPORT\nA header row is required; columns email (required), full_name (or name), comment, in any order, case\\-insensitive; UTF\\-8 with or without BOM; a comma or semicolon delimiter is detected.\n");
    s
}

/// Every man page: (file name, roff text). One for mailctl and one per subcommand, nested
/// ones included (mailctl-clients-import.1).
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let root = command();
    let mut top = Vec::new();
    clap_mangen::Man::new(root.clone())
        .render(&mut top)
        .expect("render man page");
    top.extend_from_slice(extra_sections().as_bytes());
    pages.push(("mailctl.1".to_string(), top));
    fn walk(cmd: &clap::Command, prefix: &str, pages: &mut Vec<(String, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let name = format!("{prefix}-{}", sub.get_name());
            let page_cmd = sub
                .clone()
                .name(name.clone())
                .version(env!("CARGO_PKG_VERSION"));
            let mut buf = Vec::new();
            clap_mangen::Man::new(page_cmd)
                .render(&mut buf)
                .expect("render man page");
            buf.extend_from_slice(b".SH SEE ALSO\n\\fBmailctl\\fR(1) for the environment, exit status, files and field names.\n");
            pages.push((format!("{name}.1"), buf));
            walk(sub, &name, pages);
        }
    }
    walk(&root, "mailctl", &mut pages);
    pages
}
