//! bounces import: read reports, tie each to its letter, record it (db::bounces).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::Ctx;
use crate::bounce::report::{self, Kind, Parsed};
use crate::bounce::source::{self, Source};
use crate::bounce::{self, Letter};
use crate::cli::BouncesCmd;
use crate::db::bounces::{self as db_bounces, Applied, Event};
use crate::db::{self, suppressions};
use crate::error::{Error, Result};
use crate::mail::compose::mailbox;
use crate::output::{self, Format, Record};

/// What one import did. The field names are a contract (`--format json|csv`).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub read: u64,
    pub hard: u64,
    pub soft: u64,
    pub complaints: u64,
    /// Reports imported before: nothing changed.
    pub duplicates: u64,
    pub unmatched: u64,
    pub malformed: u64,
    /// Addresses newly suppressed by this import.
    pub suppressed: u64,
}

impl Record for Summary {
    const HEADERS: &'static [&'static str] = &[
        "read",
        "hard",
        "soft",
        "complaints",
        "duplicates",
        "unmatched",
        "malformed",
        "suppressed",
    ];
    fn cells(&self) -> Vec<String> {
        [
            self.read,
            self.hard,
            self.soft,
            self.complaints,
            self.duplicates,
            self.unmatched,
            self.malformed,
            self.suppressed,
        ]
        .iter()
        .map(u64::to_string)
        .collect()
    }
}

/// What became of one message.
enum Outcome {
    Recorded(Kind, bool),
    Duplicate,
    Unmatched(&'static str),
    Malformed(&'static str),
}

pub async fn run(ctx: &Ctx, cmd: BouncesCmd) -> Result<()> {
    let BouncesCmd::Import {
        path,
        delete,
        rejects,
    } = cmd;
    let started = Instant::now();
    let (source, messages) = source::read(path.as_deref())?;
    if delete && !matches!(source, Source::Maildir(_)) {
        return Err(Error::invalid(
            "delete",
            "applies to a Maildir directory only",
        ));
    }
    if let Some(dir) = &rejects {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::runtime(format!("cannot create {}: {e}", dir.display())))?;
    }
    let db = ctx.db().await?;
    let secret = suppressions::secret(db, "unsubscribe").await?;
    let from = mailbox("MAILCTL_FROM", &ctx.config.from)?;
    let domain = from.email.domain().to_string();

    let mut sum = Summary::default();
    for message in &messages {
        sum.read += 1;
        let outcome = one(db, &message.raw, &secret, &domain).await?;
        match outcome {
            Outcome::Recorded(kind, suppressed) => {
                match kind {
                    Kind::Hard => sum.hard += 1,
                    Kind::Soft => sum.soft += 1,
                    Kind::Complaint => sum.complaints += 1,
                }
                sum.suppressed += u64::from(suppressed);
            }
            Outcome::Duplicate => sum.duplicates += 1,
            Outcome::Unmatched(why) | Outcome::Malformed(why) => {
                let malformed = matches!(outcome, Outcome::Malformed(_));
                if malformed {
                    sum.malformed += 1;
                } else {
                    sum.unmatched += 1;
                }
                let label = if malformed { "malformed" } else { "unmatched" };
                tracing_line(label, sum.read, why);
                if let Some(dir) = &rejects {
                    keep(dir, label, &message.raw)?;
                }
            }
        }
        if let (Source::Maildir(dir), Some(file)) = (&source, &message.file) {
            source::done(dir, file, delete)?;
        }
    }
    print(ctx.format(), &sum, started)
}

/// One message, start to end; database errors end the run (exit 1), bad input never does.
async fn one(db: &db::Db, raw: &[u8], secret: &[u8], domain: &str) -> Result<Outcome> {
    let report = match report::parse(raw) {
        Parsed::Report(r) => r,
        Parsed::NotReport(why) => return Ok(Outcome::Unmatched(why)),
        Parsed::Malformed(why) => return Ok(Outcome::Malformed(why)),
    };
    let candidates: Vec<Letter> = bounce::candidates(raw, secret, domain);
    if candidates.is_empty() {
        return Ok(Outcome::Unmatched(
            "no signed return path or Message-ID of ours",
        ));
    }
    for letter in &candidates {
        let Some(sent) = db_bounces::sent(db, letter.mailing_id, letter.client_id).await? else {
            continue;
        };
        if !bounce::confirms(&report, letter, &sent.email_key, raw) {
            continue;
        }
        let digest = bounce::digest(&report, letter);
        let event = Event {
            digest: &digest,
            mailing_id: letter.mailing_id,
            client_id: letter.client_id,
            recipient: &sent,
            kind: report.kind,
            text: &report.text,
            at: db::now(),
        };
        return Ok(match db_bounces::apply(db, &event).await? {
            Applied::Recorded { suppressed } => Outcome::Recorded(report.kind, suppressed),
            Applied::Duplicate => Outcome::Duplicate,
        });
    }
    Ok(Outcome::Unmatched(
        "no letter of ours to that recipient (unknown, or another client's)",
    ))
}

/// Why a message was set aside, on stderr (logs never go to stdout).
fn tracing_line(label: &str, n: u64, why: &str) {
    eprintln!("message {n}: {label}: {why}");
}

/// A copy of a message set aside, named by its content (a second import keeps one copy).
fn keep(dir: &Path, label: &str, raw: &[u8]) -> Result<()> {
    use sha2::{Digest, Sha256};
    let name = format!("{label}-{}.eml", &hex::encode(Sha256::digest(raw))[..16]);
    let path = dir.join(name);
    std::fs::write(&path, raw)
        .map_err(|e| Error::runtime(format!("cannot write {}: {e}", path.display())))
}

fn print(format: Format, sum: &Summary, started: Instant) -> Result<()> {
    match format {
        Format::Table => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "read {}, hard {}, soft {}, complaints {}, duplicates {}, unmatched {}, malformed {}; \
                 {} address(es) suppressed; {:.2}s, {:.0} reports/s",
                sum.read,
                sum.hard,
                sum.soft,
                sum.complaints,
                sum.duplicates,
                sum.unmatched,
                sum.malformed,
                sum.suppressed,
                secs,
                sum.read as f64 / secs.max(1e-9)
            );
            Ok(())
        }
        _ => output::print_one(format, sum),
    }
}
