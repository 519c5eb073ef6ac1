//! The whole command tree (clap derive). It also feeds completions/ and man/.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use crate::output::Format;

const AFTER_HELP: &str = "\
Examples:
  echo 's3cret-pass' | mailctl login --email ann@example.com --password-stdin
  mailctl clients import contacts.csv --on-conflict update
  mailctl mailings add --message 3 --all-clients --start now --end '2026-12-31 18:00'
  MAILCTL_SMTP_URL='smtp://relay.example.com:587?tls=required' mailctl send-due
  mailctl stats --by mailing --format json

Every setting is a flag or its MAILCTL_* environment variable (see Settings above).

Exit codes:
  0 success; 1 runtime failure (database, SMTP...); 2 usage error; 3 not logged in or not permitted;
  4 not found; 5 invalid input";

#[derive(Debug, Parser)]
#[command(
    name = "mailctl",
    version = crate::VERSION,
    about = "Manage email mailings: accounts, clients, messages, mailings, sending and statistics",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,

    #[command(subcommand)]
    pub command: Command,
}

/// Every setting: a flag or its environment variable, read once into `config::Config`
/// (which checks the values and names the variable when one is bad). Values that may hold a
/// password are never shown in `--help`.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Settings")]
pub struct Settings {
    /// Database: sqlite://PATH or postgres://USER[:PASSWORD]@HOST/DB [default: sqlite://$XDG_DATA_HOME/mailctl/mailctl.db]
    #[arg(
        long,
        env = "MAILCTL_DATABASE_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub database_url: Option<String>,

    /// SMTP server: smtp://[USER:PASS@]HOST[:PORT] (STARTTLS when offered), smtp://...?tls=required, smtps://... (implicit TLS) [default: none: .eml files in $XDG_DATA_HOME/mailctl/outbox/]
    #[arg(
        long,
        env = "MAILCTL_SMTP_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub smtp_url: Option<String>,

    /// PEM file of extra CA certificates to trust for SMTP over TLS (a relay with a private CA) [default: the Mozilla roots built into mailctl]
    #[arg(long, env = "MAILCTL_SMTP_CA_FILE", global = true, value_name = "FILE")]
    pub smtp_ca_file: Option<PathBuf>,

    /// Seconds to wait for the SMTP server at each step of a letter, connecting included [default: 30]
    #[arg(
        long,
        env = "MAILCTL_SMTP_TIMEOUT",
        global = true,
        allow_negative_numbers = true,
        value_name = "SECONDS"
    )]
    pub smtp_timeout: Option<String>,

    /// Seconds a claimed delivery is held before another worker may take it over [default: the larger of 600 and 10 x the SMTP timeout]
    #[arg(
        long,
        env = "MAILCTL_SEND_LEASE",
        global = true,
        allow_negative_numbers = true,
        value_name = "SECONDS"
    )]
    pub send_lease: Option<String>,

    /// Seconds before the first retry of a temporary failure; doubles per try [default: 60]
    #[arg(
        long,
        env = "MAILCTL_RETRY_DELAY",
        global = true,
        allow_negative_numbers = true,
        value_name = "SECONDS"
    )]
    pub retry_delay: Option<String>,

    /// Sender address of letters [default: mailctl@localhost]
    #[arg(long, env = "MAILCTL_FROM", global = true, value_name = "ADDRESS")]
    pub from: Option<String>,

    /// VERP return path for mailing letters (bounces+TOKEN@domain), e.g. bounces@example.com [default: none]
    #[arg(
        long,
        env = "MAILCTL_BOUNCE_ADDRESS",
        global = true,
        value_name = "ADDRESS"
    )]
    pub bounce_address: Option<String>,

    /// Public address of `mailctl serve`, used in emailed links [default: http://127.0.0.1:8025]
    #[arg(long, env = "MAILCTL_BASE_URL", global = true, value_name = "URL")]
    pub base_url: Option<String>,

    /// Redis for the stats cache, the login throttle and a rate limit shared by all workers: redis://[:PASSWORD@]HOST[:PORT] [default: none]
    #[arg(
        long,
        env = "MAILCTL_REDIS_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: Option<String>,

    /// Session file of `mailctl login` [default: $XDG_CONFIG_HOME/mailctl/session, mode 0600]
    #[arg(long, env = "MAILCTL_SESSION_FILE", global = true, value_name = "FILE")]
    pub session_file: Option<PathBuf>,

    /// Output format for records [default: table]
    #[arg(
        long,
        env = "MAILCTL_FORMAT",
        global = true,
        value_enum,
        hide_env_values = true
    )]
    pub format: Option<Format>,

    /// With --format csv: start the output with a UTF-8 byte order mark, so that Excel opens it as UTF-8
    #[arg(long, global = true)]
    pub bom: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (also done automatically on first use)
    #[command(after_help = "Example:\n  mailctl migrate")]
    Migrate,
    /// Create an administrator (the first one needs no login)
    #[command(
        alias = "createsuperuser",
        after_help = "Example:\n  echo 's3cret-pass' | mailctl csu --email admin@example.com --password-stdin"
    )]
    Csu(NewAccount),
    /// Create an account with the role `user` (administrators only)
    #[command(
        alias = "create_user",
        after_help = "Example:\n  echo 's3cret-pass' | mailctl create-user --email ann@example.com --password-stdin"
    )]
    CreateUser(NewAccount),
    /// Create an account with the role `manager` (administrators only)
    #[command(
        alias = "create_manager",
        after_help = "Example:\n  echo 's3cret-pass' | mailctl create-manager --email boss@example.com --password-stdin"
    )]
    CreateManager(NewAccount),
    /// Sign up; emails a confirmation link
    #[command(
        after_help = "Example:\n  echo 's3cret-pass' | mailctl register --email me@example.com --password-stdin"
    )]
    Register(NewAccount),
    /// Log in and keep a session in the session file
    #[command(
        after_help = "Example:\n  echo 's3cret-pass' | mailctl login --email ann@example.com --password-stdin"
    )]
    Login(LoginArgs),
    /// End the current session
    #[command(after_help = "Example:\n  mailctl logout")]
    Logout,
    /// Show the logged-in account
    #[command(after_help = "Example:\n  mailctl whoami --format json")]
    Whoami,
    /// Reset or change a password
    #[command(subcommand)]
    Password(PasswordCmd),
    /// List, block, unblock and unlock accounts (managers and administrators)
    #[command(subcommand)]
    Users(UsersCmd),
    /// Serve the emailed links: /confirm/{token}, /reset/{token}, /unsubscribe/{token}
    #[command(after_help = "Example:\n  mailctl serve --bind 127.0.0.1:8025")]
    Serve(ServeArgs),
    /// Recipients of mailings
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// Tags of clients
    #[command(subcommand)]
    Tags(TagsCmd),
    /// Letters: subject and body
    #[command(subcommand)]
    Messages(MessagesCmd),
    /// Mailings: a message, a time window and a list of clients
    #[command(subcommand)]
    Mailings(MailingsCmd),
    /// Send attempts, one row per try
    #[command(subcommand)]
    Attempts(AttemptsCmd),
    /// Bounces and spam complaints coming back (DSN, ARF): tie them to letters, suppress
    #[command(subcommand)]
    Bounces(BouncesCmd),
    /// Addresses not to write to again (unsubscribed, refused, bounced, complained, manual)
    #[command(subcommand)]
    Suppressions(SuppressionsCmd),
    /// Send every due mailing (run from cron every minute)
    #[command(
        after_help = "Example (crontab):\n  * * * * * mailctl send-due --format json >> /var/log/mailctl.log 2>&1"
    )]
    SendDue(SendArgs),
    /// Statistics of send attempts
    #[command(
        after_help = "Example:\n  mailctl stats --by day --since 2026-12-01T00:00:00Z --format csv"
    )]
    Stats(StatsArgs),
    /// Print a shell completion script
    #[command(after_help = "Example:\n  mailctl completions bash > /etc/bash_completion.d/mailctl")]
    Completions(CompletionsArgs),
    /// Check the database, migrations, SMTP, Redis and the base URL
    #[command(after_help = "Example:\n  mailctl doctor")]
    Doctor,
}

#[derive(Debug, Args)]
pub struct NewAccount {
    /// Email address (the login)
    #[arg(long)]
    pub email: String,
    /// Read the password from standard input (one line) instead of prompting
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Email address
    #[arg(long)]
    pub email: String,
    /// Read the password from standard input (one line)
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum PasswordCmd {
    /// Email a password reset link (the same reply whether or not the account exists)
    #[command(after_help = "Example:\n  mailctl password reset --email ann@example.com")]
    Reset {
        /// Email address of the account
        #[arg(long)]
        email: String,
    },
    /// Change the password of the logged-in account (old, then new)
    #[command(
        after_help = "Example:\n  printf 'old-pass\\nnew-pass\\n' | mailctl password change --password-stdin"
    )]
    Change {
        /// Read the old and the new password from standard input, one per line
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    /// List accounts
    #[command(after_help = "Example:\n  mailctl users list --format csv")]
    List,
    /// Block an account: no login, sessions end, mailings stop
    #[command(
        after_help = "Examples:\n  mailctl users block spammer@example.com\n  mailctl users block 7"
    )]
    Block {
        /// The account: its id (as `users list` shows it) or its email
        #[arg(value_name = "ID|EMAIL")]
        account: String,
    },
    /// Unblock an account
    #[command(
        after_help = "Examples:\n  mailctl users unblock ann@example.com\n  mailctl users unblock 7"
    )]
    Unblock {
        /// The account: its id (as `users list` shows it) or its email
        #[arg(value_name = "ID|EMAIL")]
        account: String,
    },
    /// Clear an account's login-throttle lock (administrators only)
    #[command(after_help = "Example:\n  mailctl users unlock admin@example.com")]
    Unlock {
        /// The account's email
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8025")]
    pub bind: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnConflict {
    Skip,
    Update,
    Error,
}

#[derive(Debug, Subcommand)]
pub enum ClientsCmd {
    /// Add a client
    #[command(
        after_help = "Example:\n  mailctl clients add --email ivan@example.com --name 'Иван Петров' --comment VIP"
    )]
    Add {
        /// Email address (unique among your clients, case-insensitively)
        #[arg(long)]
        email: String,
        /// Full name
        #[arg(long)]
        name: Option<String>,
        /// Free-text note
        #[arg(long)]
        comment: Option<String>,
        /// A tag, e.g. news (repeatable; case-insensitive, at most 64 characters)
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// A custom field for {{KEY}} placeholders, e.g. city=Moscow (repeatable)
        #[arg(long = "field", value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
    /// List clients
    #[command(
        after_help = "Example:\n  mailctl clients list --search example.com --tag news --format json"
    )]
    List {
        /// Only clients whose email, name or comment contains this text
        #[arg(long)]
        search: Option<String>,
        /// Only clients carrying this tag (repeatable: all of them)
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Show one client
    #[command(after_help = "Example:\n  mailctl clients show 12")]
    Show {
        /// Client id
        id: i64,
    },
    /// Change a client
    #[command(
        after_help = "Example:\n  mailctl clients edit 12 --comment 'left the company' --untag news --field city=Berlin"
    )]
    Edit {
        /// Client id
        id: i64,
        /// New email address
        #[arg(long)]
        email: Option<String>,
        /// New full name
        #[arg(long)]
        name: Option<String>,
        /// New note
        #[arg(long)]
        comment: Option<String>,
        /// Add a tag (repeatable); mailings addressed to it reach the client on their next run
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Remove a tag (repeatable)
        #[arg(long = "untag", value_name = "TAG")]
        untags: Vec<String>,
        /// Set a custom field (repeatable); KEY= removes it
        #[arg(long = "field", value_name = "KEY=VALUE")]
        fields: Vec<String>,
    },
    /// Delete clients
    #[command(after_help = "Example:\n  mailctl clients delete 12 13 --yes")]
    Delete {
        /// Client ids
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
    },
    /// Import clients from CSV (header row: email, full_name|name, comment, tags; any other column is a custom field)
    #[command(
        after_help = "Example:\n  mailctl clients import contacts.csv --on-conflict update --skip-invalid --rejects bad.csv"
    )]
    Import(ImportArgs),
    /// Export clients as CSV (default) or JSON, in the import's column names (tags and fields included)
    #[command(after_help = "Example:\n  mailctl clients export > contacts.csv")]
    Export,
}

#[derive(Debug, Subcommand)]
pub enum TagsCmd {
    /// Each tag with its number of clients
    #[command(after_help = "Example:\n  mailctl tags list --format csv")]
    List,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CSV file, or - for standard input
    pub file: String,
    /// What to do with an email the owner already has (or that repeats in the file)
    #[arg(long, value_enum, default_value = "skip")]
    pub on_conflict: OnConflict,
    /// Validate and count without writing
    #[arg(long)]
    pub dry_run: bool,
    /// Import the good rows and report the bad ones instead of failing
    #[arg(long)]
    pub skip_invalid: bool,
    /// Write rejected rows with their reasons to this CSV file
    #[arg(long)]
    pub rejects: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum MessagesCmd {
    /// Add a message
    #[command(
        after_help = "Example:\n  mailctl messages add --subject 'Hello {{full_name}}' --body-file body.txt --html-file body.html"
    )]
    Add {
        /// Subject line (may use {{full_name}}, {{email}})
        #[arg(long)]
        subject: String,
        /// Plain-text body
        #[arg(
            long,
            conflicts_with = "body_file",
            required_unless_present = "body_file"
        )]
        body: Option<String>,
        /// Read the plain-text body from a file
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Optional HTML alternative, read from a file
        #[arg(long)]
        html_file: Option<PathBuf>,
    },
    /// List messages
    #[command(after_help = "Example:\n  mailctl messages list --format json")]
    List,
    /// Show one message
    #[command(after_help = "Example:\n  mailctl messages show 3")]
    Show {
        /// Message id
        id: i64,
    },
    /// Change a message
    #[command(after_help = "Example:\n  mailctl messages edit 3 --subject 'New subject'")]
    Edit {
        /// Message id
        id: i64,
        /// New subject line
        #[arg(long)]
        subject: Option<String>,
        /// New plain-text body
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// Read the new plain-text body from a file
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Read a new HTML alternative from a file
        #[arg(long, conflicts_with = "no_html")]
        html_file: Option<PathBuf>,
        /// Remove the HTML alternative
        #[arg(long)]
        no_html: bool,
    },
    /// Print the exact letter (RFC 5322, as on the wire) a client would get
    #[command(
        after_help = "Without --client, placeholders are filled from the owner's first client (or a made-up one).\n\nExample:\n  mailctl messages preview 3 --client 12 > letter.eml"
    )]
    Preview {
        /// Message id
        id: i64,
        /// Personalise for this client
        #[arg(long, value_name = "ID")]
        client: Option<i64>,
    },
    /// Delete messages
    #[command(
        after_help = "Example:\n  mailctl messages delete 3 --yes --force\n\nA message used by mailings goes only with --force, which deletes them too; if any of\nthose mailings has send attempts, --purge-history is needed as well (else exit 5)."
    )]
    Delete {
        /// Message ids
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Also delete the mailings that use the message
        #[arg(long)]
        force: bool,
        /// With --force: also delete those mailings' send attempts and statistics (needed when they have any)
        #[arg(long)]
        purge_history: bool,
    },
}

/// What `mailings list --status` filters on: the status read at this moment, or a flag
/// shown beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MailingStatus {
    /// Its start is still to come
    Created,
    /// Due, with letters left to send
    Active,
    /// Every recipient has a final outcome, or the window has ended
    Completed,
    /// Stopped by a manager
    Disabled,
    /// The window ended before every recipient had a final outcome
    #[value(alias = "expired")]
    EndedWithLettersLeft,
}

/// A recipient's delivery state, for `mailings recipients --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeliveryState {
    /// Not sent yet (also: a temporary failure waiting for its retry)
    Pending,
    /// Claimed by a sender right now
    Sending,
    /// Accepted by the server
    Sent,
    /// Refused for good (5xx)
    Failed,
    /// Not sent: unsubscribed or refused before
    Suppressed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sending => "sending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
            DeliveryState::Suppressed => "suppressed",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum MailingsCmd {
    /// Add a mailing; at least one recipient option is required, and the window must not have ended
    #[command(
        after_help = "--all-clients and --tag are an audience, resolved again at the start of every send-due run while the mailing is due: a client added or tagged later gets the letter on a later run, exactly once. --client ids are fixed.\n\nTimes are local unless they carry an offset (TZ, else the system zone); the window is echoed on stderr.\n\nExample:\n  mailctl mailings add --message 3 --all-clients --start 'tomorrow 09:00' --end +3d",
        group(clap::ArgGroup::new("recipients").required(true).multiple(true))
    )]
    Add {
        /// The message to send (its id)
        #[arg(long, value_name = "ID")]
        message: i64,
        /// Start of the window: now, +2h, 'tomorrow 09:00', '2026-12-05 09:00' (local), or RFC 3339
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        start: String,
        /// End of the window, after the start and not in the past (same forms as --start)
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        end: String,
        /// A recipient (repeatable)
        #[arg(long = "client", value_name = "ID", group = "recipients")]
        clients: Vec<i64>,
        /// Every client of the owner, also those added while the mailing is due
        #[arg(long, group = "recipients")]
        all_clients: bool,
        /// The owner's clients carrying this tag (repeatable: any of them), also those tagged while the mailing is due
        #[arg(long = "tag", value_name = "TAG", group = "recipients")]
        tags: Vec<String>,
    },
    /// List mailings with their status as of now and their counts (sent, pending, failed, suppressed)
    #[command(after_help = "Example:\n  mailctl mailings list --status active")]
    List {
        /// Only mailings with this status or flag, as of now
        #[arg(long, value_enum)]
        status: Option<MailingStatus>,
    },
    /// Show one mailing
    #[command(after_help = "Example:\n  mailctl mailings show 7 --format json")]
    Show {
        /// Mailing id
        id: i64,
    },
    /// Change a mailing (the window is echoed on stderr in local time)
    #[command(after_help = "Example:\n  mailctl mailings edit 7 --end '2026-12-03 18:00'")]
    Edit {
        /// Mailing id
        id: i64,
        /// Another message (its id)
        #[arg(long, value_name = "ID")]
        message: Option<i64>,
        /// New start: now, +2h, 'tomorrow 09:00', '2026-12-05 09:00' (local), or RFC 3339
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        start: Option<String>,
        /// New end, not in the past (same forms as --start)
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        end: Option<String>,
        /// Address every client of the owner from now on (resolved on every run)
        #[arg(long)]
        all_clients: bool,
        /// Replace the mailing's tags (repeatable); recipients already resolved stay
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Print the exact letter of the mailing (with its Message-ID and List-Unsubscribe) for one recipient
    #[command(after_help = "Example:\n  mailctl mailings preview 7 --client 12")]
    Preview {
        /// Mailing id
        id: i64,
        /// This recipient (default: the mailing's first)
        #[arg(long, value_name = "ID")]
        client: Option<i64>,
    },
    /// Send one copy of the mailing's letter to ADDRESS now: no delivery, attempt or stats
    #[command(
        after_help = "Prints the server's reply; exit 1 when the server refuses the letter.\n\nExample:\n  mailctl mailings test 7 --to me@example.com --client 12"
    )]
    Test {
        /// Mailing id
        id: i64,
        /// Where the test copy goes
        #[arg(long, value_name = "ADDRESS")]
        to: String,
        /// Personalise as this client (default: the mailing's first recipient)
        #[arg(long, value_name = "ID")]
        client: Option<i64>,
    },
    /// Delete mailings
    #[command(
        after_help = "Example:\n  mailctl mailings delete 7 --yes --purge-history\n\nA mailing that has send attempts keeps them (and its statistics) unless\n--purge-history is given; without it such a delete is refused (exit 5)."
    )]
    Delete {
        /// Mailing ids
        #[arg(required = true)]
        ids: Vec<i64>,
        /// Do not ask for confirmation
        #[arg(long, short)]
        yes: bool,
        /// Also delete the mailings' send attempts and statistics (needed when they have any)
        #[arg(long)]
        purge_history: bool,
    },
    /// Add recipients to a mailing
    #[command(after_help = "Example:\n  mailctl mailings add-clients 7 12 13")]
    AddClients {
        /// Mailing id
        id: i64,
        /// Client ids to add
        #[arg(required = true)]
        client_ids: Vec<i64>,
    },
    /// Remove recipients from a mailing
    #[command(after_help = "Example:\n  mailctl mailings remove-clients 7 13")]
    RemoveClients {
        /// Mailing id
        id: i64,
        /// Client ids to remove
        #[arg(required = true)]
        client_ids: Vec<i64>,
    },
    /// Each recipient with its delivery state, tries, last reply and time
    #[command(after_help = "Example:\n  mailctl mailings recipients 7 --state failed --format csv")]
    Recipients {
        /// Mailing id
        id: i64,
        /// Only recipients in this state
        #[arg(long, value_enum)]
        state: Option<DeliveryState>,
    },
    /// Stop a mailing from being sent (managers and administrators)
    #[command(after_help = "Example:\n  mailctl mailings disable 7")]
    Disable {
        /// Mailing id
        id: i64,
    },
    /// Allow a disabled mailing to be sent again (managers and administrators)
    #[command(after_help = "Example:\n  mailctl mailings enable 7")]
    Enable {
        /// Mailing id
        id: i64,
    },
    /// Send one mailing now, outside the cron (owner or administrator)
    #[command(after_help = "Example:\n  mailctl mailings send 7 --concurrency 16")]
    Send {
        /// Mailing id
        id: i64,
        #[command(flatten)]
        opts: SendOpts,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AttemptStatus {
    /// Accepted by the server (2xx)
    Success,
    /// Refused for good (5xx): final
    Failure,
    /// Refused for now (4xx or no answer): tried again later
    Deferred,
    /// A bounce report (DSN) received after the letter left
    Bounced,
    /// A spam complaint (ARF) about the letter
    Complained,
}

#[derive(Debug, Subcommand)]
pub enum BouncesCmd {
    /// Read bounce reports and complaints: one message on stdin, an mbox file or a Maildir
    #[command(
        long_about = "Read bounce reports (RFC 3464 delivery status notifications, or plain-text bounces from a mail \
system) and spam complaints (RFC 5965 ARF reports), and tie each to the letter it is about: by the signed VERP \
return path (MAILCTL_BOUNCE_ADDRESS) or by the letter's Message-ID, whose recipient the report must name.\n\n\
A hard bounce (5.x.x) records an attempt `bounced`, marks the delivery failed and suppresses the address for \
the mailing's owner; a soft one (4.x.x) is recorded, and the third within 30 days suppresses the address. A \
complaint records `complained` and suppresses the address. Anything that cannot be tied to a letter we sent \
(no valid signature, unknown Message-ID, another recipient, not a report) is counted as unmatched and never \
acted on; a message that cannot be read is counted as malformed. Each report is one transaction; importing \
the same report again changes nothing.\n\n\
Prints a summary (read, hard, soft, complaints, duplicates, unmatched, malformed). Exit 0 unless the input \
cannot be read at all (exit 1, naming it). Runs without a login, like send-due: whoever can reach the \
database runs it (an MTA pipe, cron).",
        after_help = "Examples:\n  \
# /etc/aliases: bounces: \"|/usr/local/bin/mailctl bounces import -\"\n  \
mailctl bounces import /var/mail/bounces --format json\n  \
mailctl bounces import ~/Maildir/.bounces --rejects /var/lib/mailctl/rejects"
    )]
    Import {
        /// A message on standard input (`-`, the default), an mbox file, or a Maildir directory (its new/ is read)
        #[arg(value_name = "PATH|-")]
        path: Option<String>,
        /// Remove Maildir messages once done instead of moving them to cur/
        #[arg(long)]
        delete: bool,
        /// Keep a copy of every unmatched or malformed message in this directory
        #[arg(long, value_name = "DIR")]
        rejects: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuppressionsCmd {
    /// List the suppressed addresses, with the reason and the time
    #[command(after_help = "Example:\n  mailctl suppressions list --format csv")]
    List {
        /// Another account's list (administrators)
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
    },
    /// Suppress addresses by hand (reason `manual`); addresses already suppressed keep theirs
    #[command(after_help = "Example:\n  mailctl suppressions add old@example.com gone@example.org")]
    Add {
        /// Addresses to suppress
        #[arg(required = true, value_name = "EMAIL")]
        emails: Vec<String>,
        /// Another account's list (administrators)
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
    },
    /// Allow addresses again (all or nothing: an address not in the list is exit 4)
    #[command(after_help = "Example:\n  mailctl suppressions remove old@example.com")]
    Remove {
        /// Addresses to allow again
        #[arg(required = true, value_name = "EMAIL")]
        emails: Vec<String>,
        /// Another account's list (administrators)
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
    },
    /// Suppress the addresses of a file (one per line, or CSV with an `email` column; reason `manual`)
    #[command(after_help = "Example:\n  mailctl suppressions import do-not-mail.txt")]
    Import {
        /// The file (`-`: standard input)
        #[arg(value_name = "FILE")]
        file: String,
        /// Another account's list (administrators)
        #[arg(long, value_name = "EMAIL")]
        owner: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AttemptsCmd {
    /// List send attempts (streamed)
    #[command(
        after_help = "Example:\n  mailctl attempts list --mailing 7 --status failure --format csv"
    )]
    List {
        /// Only this mailing's attempts
        #[arg(long)]
        mailing: Option<i64>,
        /// Only attempts with this outcome (deferred: refused for now, tried again; bounced and complained come from `bounces import`)
        #[arg(long, value_enum)]
        status: Option<AttemptStatus>,
        /// Only attempts at or after this time (now, -1d, '2026-12-05 09:00' local, or RFC 3339)
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        since: Option<String>,
        /// Only attempts before this time (same forms as --since)
        #[arg(long, value_name = "T", allow_hyphen_values = true)]
        until: Option<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct SendOpts {
    /// Letters in flight at once (SMTP connections in the pool), 1-1024
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// At most N letters per second across all workers sharing MAILCTL_REDIS_URL, 1-1000000
    /// (without it, the pace follows the relay: it slows down when the relay throttles)
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate: Option<u32>,
    /// Send at most N letters in this run
    #[arg(long)]
    pub limit: Option<u64>,
    /// List every letter that would be sent and every recipient that would be skipped (with the reason), without sending
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub opts: SendOpts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsBy {
    Mailing,
    User,
    Day,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Statistics of send attempts: letters attempted, succeeded and failed, recipients reached \
(distinct recipients of a mailing with at least one successful attempt; a deleted client no longer counts), \
bounced and complained (bounce reports and spam complaints recorded by `bounces import`, not counted as attempts), \
success rate (succeeded / attempted, 4 decimals) and first and last attempt.\n\n\
A user sees their own mailings; a manager or an administrator sees everyone's and may use --by user. \
Groups with no attempt in the range are not listed; without --by there is always one row.\n\n\
The figures come from counters kept per mailing and per UTC day in the same transaction as each attempt, \
so they never scan the whole attempts table. With MAILCTL_REDIS_URL set, answers are cached in Redis under \
a key that includes a version the database bumps on every write that changes them: a cached answer is never \
stale. Redis down: the answer comes from the database, with a warning on stderr."
)]
pub struct StatsArgs {
    /// Group the figures (default: one overall row)
    #[arg(long, value_enum)]
    pub by: Option<StatsBy>,
    /// Only this mailing
    #[arg(long, value_name = "ID")]
    pub mailing: Option<i64>,
    /// Attempts at or after this time (now, -7d, '2026-12-01 00:00' local, or RFC 3339; exact to the second, UTC days are whole)
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Attempts strictly before this time (same forms as --since; exact to the second)
    #[arg(long, value_name = "T", allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Read from the database, bypassing the Redis cache
    #[arg(long)]
    pub no_cache: bool,
    /// Recompute the counters from the attempts table (administrator; after a bulk load)
    #[arg(long, conflicts_with_all = ["by", "mailing", "since", "until"])]
    pub rebuild: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print the script for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}
