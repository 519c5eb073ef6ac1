//! The whole command tree (clap derive). It also feeds completions/ and man/.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

use crate::output::Format;

const AFTER_HELP: &str = "\
Examples:
  echo 's3cret-pass' | mailctl login --email ann@example.com --password-stdin
  mailctl clients import contacts.csv --on-conflict update
  mailctl mailings add --message 3 --start now --end 2026-12-31T18:00:00Z --all-clients
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
    /// Letters: subject and body
    #[command(subcommand)]
    Messages(MessagesCmd),
    /// Mailings: a message, a time window and a list of clients
    #[command(subcommand)]
    Mailings(MailingsCmd),
    /// Send attempts, one row per try
    #[command(subcommand)]
    Attempts(AttemptsCmd),
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
    },
    /// List clients
    #[command(after_help = "Example:\n  mailctl clients list --search example.com --format json")]
    List {
        /// Only clients whose email, name or comment contains this text
        #[arg(long)]
        search: Option<String>,
    },
    /// Show one client
    #[command(after_help = "Example:\n  mailctl clients show 12")]
    Show {
        /// Client id
        id: i64,
    },
    /// Change a client
    #[command(after_help = "Example:\n  mailctl clients edit 12 --comment 'left the company'")]
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
    /// Import clients from CSV (header row: email, full_name|name, comment)
    #[command(
        after_help = "Example:\n  mailctl clients import contacts.csv --on-conflict update --skip-invalid --rejects bad.csv"
    )]
    Import(ImportArgs),
    /// Export clients as CSV (default) or JSON, in the import's column names
    #[command(after_help = "Example:\n  mailctl clients export > contacts.csv")]
    Export,
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
    /// Delete messages
    #[command(after_help = "Example:\n  mailctl messages delete 3 --yes --force")]
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
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MailingStatus {
    Created,
    Active,
    Completed,
}

#[derive(Debug, Subcommand)]
pub enum MailingsCmd {
    /// Add a mailing
    #[command(
        after_help = "Example:\n  mailctl mailings add --message 3 --start 2026-12-01T09:00:00Z --end 2026-12-02T09:00:00Z --all-clients"
    )]
    Add {
        /// Id of the message to send
        #[arg(long)]
        message: i64,
        /// Start (RFC 3339; UTC when no offset; or `now`)
        #[arg(long)]
        start: String,
        /// End (RFC 3339), after the start
        #[arg(long)]
        end: String,
        /// A recipient (repeatable)
        #[arg(long = "client")]
        clients: Vec<i64>,
        /// Every client of the owner
        #[arg(long)]
        all_clients: bool,
    },
    /// List mailings
    #[command(after_help = "Example:\n  mailctl mailings list --status active")]
    List {
        /// Only mailings with this status
        #[arg(long, value_enum)]
        status: Option<MailingStatus>,
    },
    /// Show one mailing
    #[command(after_help = "Example:\n  mailctl mailings show 7 --format json")]
    Show {
        /// Mailing id
        id: i64,
    },
    /// Change a mailing
    #[command(after_help = "Example:\n  mailctl mailings edit 7 --end 2026-12-03T09:00:00Z")]
    Edit {
        /// Mailing id
        id: i64,
        /// Id of the message to send instead
        #[arg(long)]
        message: Option<i64>,
        /// New start (same forms as `add --start`)
        #[arg(long)]
        start: Option<String>,
        /// New end, after the start
        #[arg(long)]
        end: Option<String>,
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
}

#[derive(Debug, Subcommand)]
pub enum AttemptsCmd {
    /// List send attempts (streamed)
    #[command(
        after_help = "Example:\n  mailctl attempts list --mailing 7 --status failure --format csv"
    )]
    List {
        /// Only attempts of this mailing
        #[arg(long)]
        mailing: Option<i64>,
        /// Only attempts with this outcome
        #[arg(long, value_enum)]
        status: Option<AttemptStatus>,
        /// Only attempts at or after this time (RFC 3339)
        #[arg(long)]
        since: Option<String>,
        /// Only attempts before this time (RFC 3339)
        #[arg(long)]
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
    /// Show what would be sent without sending
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
    /// Attempts at or after this time (RFC 3339; exact to the second, UTC days are whole)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Attempts strictly before this time (RFC 3339; exact to the second)
    #[arg(long, value_name = "T")]
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
