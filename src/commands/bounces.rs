//! bounces import: read reports, tie each to its letter, record it (db::bounces).

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::Ctx;
use crate::bounce::report::{self, Kind, Parsed, Report};
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
    /// The database refused its rows (counted as malformed): nothing of it was written.
    Refused(String),
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
    for chunk in messages.chunks(BATCH) {
        let outcomes = batch(db, chunk, &secret, &domain).await?;
        for (message, outcome) in chunk.iter().zip(outcomes) {
            sum.read += 1;
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
                rejected => {
                    let (label, why) = match rejected {
                        Outcome::Unmatched(why) => {
                            sum.unmatched += 1;
                            ("unmatched", why.to_string())
                        }
                        Outcome::Refused(why) => {
                            sum.malformed += 1;
                            ("malformed", format!("not recorded: {why}"))
                        }
                        Outcome::Malformed(why) => {
                            sum.malformed += 1;
                            ("malformed", why.to_string())
                        }
                        Outcome::Recorded(..) | Outcome::Duplicate => unreachable!("matched above"),
                    };
                    eprintln!("message {}: {label}: {why}", sum.read);
                    if let Some(dir) = &rejects {
                        keep(dir, label, &message.raw)?;
                    }
                }
            }
            // Only once its batch committed: a crash before leaves it in new/ for next time.
            if let (Source::Maildir(dir), Some(file)) = (&source, &message.file) {
                source::done(dir, file, delete)?;
            }
        }
    }
    print(ctx.format(), &sum, started)
}

/// Reports per transaction: one commit per report would cap the import at the database's
/// fsync rate (benches/bounces.sh). Each message is still all or nothing (db::bounces).
const BATCH: usize = 500;

/// A report tied to the letter it is about, or why not.
enum Tied<'a> {
    Letter(Report, &'a db_bounces::Sent),
    Not(Outcome),
}

/// One batch of messages, start to end; database errors end the run (exit 1), bad input never
/// does.
async fn batch(
    db: &db::Db,
    chunk: &[source::Message],
    secret: &[u8],
    domain: &str,
) -> Result<Vec<Outcome>> {
    let parsed: Vec<(Parsed, Vec<Letter>)> = chunk
        .iter()
        .map(|m| {
            let p = report::parse(&m.raw);
            let letters = match &p {
                Parsed::Report(_) => bounce::candidates(&m.raw, secret, domain),
                _ => Vec::new(),
            };
            (p, letters)
        })
        .collect();
    let pairs: Vec<(i64, i64)> = parsed
        .iter()
        .flat_map(|(_, ls)| ls.iter().map(|l| (l.mailing_id, l.client_id)))
        .collect();
    let sent = db_bounces::sent(db, &pairs).await?;

    let mut tied = Vec::with_capacity(chunk.len());
    for (message, (p, letters)) in chunk.iter().zip(parsed) {
        tied.push(match p {
            Parsed::NotReport(why) => Tied::Not(Outcome::Unmatched(why)),
            Parsed::Malformed(why) => Tied::Not(Outcome::Malformed(why)),
            Parsed::Report(r) if letters.is_empty() => {
                let _ = r;
                Tied::Not(Outcome::Unmatched(
                    "no signed return path or Message-ID of ours",
                ))
            }
            Parsed::Report(r) => {
                // The first letter that went out and whose recipient the report agrees with.
                let found = letters.iter().find_map(|l| {
                    let s = sent.get(&(l.mailing_id, l.client_id))?;
                    bounce::confirms(&r, l, &s.email_key, &message.raw).then_some(s)
                });
                match found {
                    Some(s) => Tied::Letter(r, s),
                    None => Tied::Not(Outcome::Unmatched(
                        "no letter of ours to that recipient (unknown, or another client's)",
                    )),
                }
            }
        });
    }

    let at = db::now();
    let digests: Vec<Option<String>> = tied
        .iter()
        .map(|t| match t {
            Tied::Letter(r, s) => Some(bounce::digest(r, s.mailing_id, s.client_id)),
            Tied::Not(_) => None,
        })
        .collect();
    let events: Vec<Event> = tied
        .iter()
        .zip(&digests)
        .filter_map(|(t, d)| match (t, d) {
            (Tied::Letter(r, s), Some(d)) => Some(Event {
                digest: d,
                recipient: s,
                kind: r.kind,
                text: &r.text,
            }),
            _ => None,
        })
        .collect();
    let mut applied = db_bounces::apply_all(db, at, &events).await?.into_iter();
    Ok(tied
        .into_iter()
        .map(|t| match t {
            Tied::Not(o) => o,
            Tied::Letter(r, _) => match applied.next().expect("one result per event") {
                Applied::Recorded { suppressed } => Outcome::Recorded(r.kind, suppressed),
                Applied::Duplicate => Outcome::Duplicate,
                Applied::Refused(why) => Outcome::Refused(why),
            },
        })
        .collect())
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
