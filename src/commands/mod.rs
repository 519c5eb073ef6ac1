//! One module per top-level subcommand. A command parses its arguments, asks auth::policy,
//! calls db/ or mail/, and hands records to output.

use std::io::{self, BufRead, IsTerminal};

use tokio::sync::OnceCell;

use crate::auth::policy::Actor;
use crate::auth::{session, token};
use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::db::Db;
use crate::db::accounts::{self, SessionState};
use crate::error::{Error, Result};
use crate::output::Format;

pub mod accounts_cmd;
pub mod attempts;
pub mod bounces;
pub mod clients;
pub mod doctor;
pub mod dry_run;
pub mod import;
pub mod mailings;
pub mod messages;
pub mod password;
pub mod preview;
pub mod register;
pub mod send;
pub mod serve;
pub mod stats;
pub mod suppressions;
pub mod system_letters;
pub mod tags;
pub mod users;

/// What every command may need, opened lazily so `completions` or `--help` touch nothing.
pub struct Ctx {
    pub config: Config,
    db: OnceCell<Db>,
    /// A missing SQLite file may be created (the default location, or `csu`).
    create_db: std::cell::Cell<bool>,
}

impl Ctx {
    pub fn new(config: Config) -> Ctx {
        let create_db = config.database_is_default();
        Ctx {
            config,
            db: OnceCell::new(),
            create_db: std::cell::Cell::new(create_db),
        }
    }

    pub fn format(&self) -> Format {
        self.config.format
    }

    pub async fn db(&self) -> Result<&Db> {
        self.db
            .get_or_try_init(|| Db::open(&self.config.database_url, 4, self.create_db.get()))
            .await
    }

    /// The logged-in account, or exit 3 with a message that says what to do.
    pub async fn actor(&self) -> Result<Actor> {
        let Some(tok) = session::load(&self.config.session_file) else {
            return Err(Error::forbidden(
                "not logged in: run `mailctl login --email ...` first",
            ));
        };
        match accounts::session_actor(self.db().await?, &token::hash(&tok)).await? {
            SessionState::Valid(actor) => Ok(actor),
            SessionState::Expired => Err(Error::forbidden("session expired: log in again")),
            SessionState::Blocked => Err(Error::forbidden("this account is blocked")),
            SessionState::Unknown => {
                Err(Error::forbidden("session is no longer valid: log in again"))
            }
        }
    }

    pub async fn close(&self) {
        if let Some(db) = self.db.get() {
            db.close().await;
        }
    }
}

pub async fn run(cli: Cli) -> Result<()> {
    let config = Config::load(&cli.settings).inspect_err(|_| {
        // A bad setting ends the run before the configuration exists: its error line still
        // follows --format json.
        crate::output::configure(crate::output::Style {
            bom: false,
            json_logs: cli.settings.format == Some(Format::Json),
        })
    })?;
    let ctx = Ctx::new(config);
    crate::output::configure(crate::output::Style {
        bom: ctx.config.bom,
        json_logs: ctx.config.format == Format::Json,
    });
    let result = dispatch(&ctx, cli.command).await;
    ctx.close().await;
    result.map_err(|e| e.map_text(|text| ctx.config.hide_secrets(text)))
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<()> {
    use crate::auth::policy::Role;
    match command {
        Command::Migrate => {
            let db = Db::connect(&ctx.config.database_url, 1).await?;
            db.migrate().await?;
            db.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Csu(a) => {
            // The first administrator may start a new database wherever it is asked for.
            ctx.create_db.set(true);
            accounts_cmd::create(ctx, a, Role::Admin).await
        }
        Command::CreateUser(a) => accounts_cmd::create(ctx, a, Role::User).await,
        Command::CreateManager(a) => accounts_cmd::create(ctx, a, Role::Manager).await,
        Command::Login(a) => accounts_cmd::login(ctx, a).await,
        Command::Logout => accounts_cmd::logout(ctx).await,
        Command::Whoami => accounts_cmd::whoami(ctx).await,
        Command::Users(c) => users::run(ctx, c).await,
        Command::Clients(c) => clients::run(ctx, c).await,
        Command::Tags(c) => tags::run(ctx, c).await,
        Command::Messages(c) => messages::run(ctx, c).await,
        Command::Mailings(c) => mailings::run(ctx, c).await,
        Command::Completions(a) => {
            use std::io::Write;
            io::stdout().write_all(&crate::docs::completion(a.shell))?;
            Ok(())
        }
        Command::Register(a) => register::register(ctx, a).await,
        Command::Password(c) => password::run(ctx, c).await,
        Command::Serve(a) => serve::run(ctx, a).await,
        Command::Attempts(c) => attempts::run(ctx, c).await,
        Command::Bounces(c) => bounces::run(ctx, c).await,
        Command::Suppressions(c) => suppressions::run(ctx, c).await,
        Command::SendDue(a) => send::send_due(ctx, a).await,
        Command::Stats(a) => stats::run(ctx, a).await,
        Command::Doctor => doctor::run(ctx).await,
    }
}

/// A password from standard input (`--password-stdin`, one line) or a terminal prompt.
pub fn read_password(from_stdin: bool, prompt: &str, confirm: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        io::stdin().lock().read_line(&mut line)?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            return Err(Error::invalid(
                "password",
                "standard input gave an empty line",
            ));
        }
        return Ok(pw);
    }
    if !io::stdin().is_terminal() {
        return Err(Error::invalid(
            "password",
            "no terminal to prompt on: pass --password-stdin",
        ));
    }
    let mut p = dialoguer::Password::new().with_prompt(prompt);
    if confirm {
        p = p.with_confirmation("Repeat the password", "The passwords do not match");
    }
    p.interact()
        .map_err(|e| Error::runtime(format!("prompt: {e}")))
}

/// `delete` asks on a terminal and needs `--yes` elsewhere.
pub fn confirm_delete(what: &str, ids: &[i64], yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !io::stdin().is_terminal() {
        return Err(Error::invalid(
            "yes",
            format!("deleting {what} needs --yes when not on a terminal"),
        ));
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let ok = dialoguer::Confirm::new()
        .with_prompt(format!("Delete {what} {}?", list.join(", ")))
        .default(false)
        .interact()
        .map_err(|e| Error::runtime(format!("prompt: {e}")))?;
    if ok {
        Ok(())
    } else {
        // Declining is not bad input: exit 1, and say that nothing changed.
        Err(Error::runtime("nothing deleted"))
    }
}

/// A short confirmation on stderr, so stdout stays data.
pub fn notice(msg: impl std::fmt::Display) {
    eprintln!("{msg}");
}
