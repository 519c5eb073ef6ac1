//! `send-due --dry-run` and `mailings send ID --dry-run`: every letter the run would send,
//! with its recipient and rendered subject, and every recipient it would skip, with the
//! reason. The verdicts follow the sender's rules (`recipients::Letter::verdict`), so the
//! counts are what the real run then does.

use serde::Serialize;

use super::Ctx;
use crate::db::{self, deliveries::Target, recipients};
use crate::error::Result;
use crate::mail::compose;
use crate::output::{Format, Record, print_list};

/// One line of a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct Planned {
    pub mailing_id: i64,
    pub client_id: i64,
    pub email: String,
    /// The subject as this recipient would read it.
    pub subject: String,
    /// `send`, `suppress` (set aside: the address is suppressed) or `skip`.
    pub action: &'static str,
    /// Why not `send`: suppressed, already sent, retry not due, in flight, failed before,
    /// suppressed before, over --limit.
    pub reason: &'static str,
}

impl Record for Planned {
    const HEADERS: &'static [&'static str] = &[
        "mailing_id",
        "client_id",
        "email",
        "subject",
        "action",
        "reason",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.mailing_id.to_string(),
            self.client_id.to_string(),
            self.email.clone(),
            self.subject.clone(),
            self.action.to_string(),
            self.reason.to_string(),
        ]
    }
}

/// The JSON answer: the counts scripts had before, and every line.
#[derive(Serialize)]
struct Answer<'a> {
    dry_run: bool,
    mailings: &'a [i64],
    would_send: u64,
    would_suppress: u64,
    would_skip: u64,
    letters: &'a [Planned],
}

/// Plans the run over `targets` (already without finished mailings) and prints it.
pub async fn run(ctx: &Ctx, targets: &[Target], limit: Option<u64>) -> Result<()> {
    let db = ctx.db().await?;
    let ids: Vec<i64> = targets.iter().map(|t| t.id).collect();
    let now = db::now();
    let mut left = limit.unwrap_or(u64::MAX);
    let (mut send, mut suppress, mut skip) = (0u64, 0u64, 0u64);
    let mut planned = Vec::new();
    for letter in recipients::letters(db, &ids).await? {
        let subject = targets
            .iter()
            .find(|t| t.id == letter.mailing_id)
            .map(|t| {
                let recipient = compose::Recipient {
                    client_id: letter.client_id,
                    email: &letter.email,
                    full_name: &letter.full_name,
                    fields: &letter.fields,
                };
                compose::subject(&t.subject, &recipient)
            })
            .unwrap_or_default();
        let (action, reason) = match letter.verdict(now) {
            recipients::Verdict::Send if left > 0 => {
                left -= 1;
                send += 1;
                ("send", "")
            }
            recipients::Verdict::Send => {
                skip += 1;
                ("skip", "over --limit")
            }
            recipients::Verdict::Suppress => {
                suppress += 1;
                ("suppress", "suppressed")
            }
            recipients::Verdict::Skip(why) => {
                skip += 1;
                ("skip", why)
            }
        };
        planned.push(Planned {
            mailing_id: letter.mailing_id,
            client_id: letter.client_id,
            email: letter.email,
            subject,
            action,
            reason,
        });
    }
    crate::output::log::info(format!(
        "dry run: would send {send} letter{}, set aside {suppress} suppressed, skip {skip} ({} mailing{})",
        plural(send),
        ids.len(),
        plural(ids.len() as u64)
    ));
    match ctx.format() {
        Format::Json => {
            let answer = Answer {
                dry_run: true,
                mailings: &ids,
                would_send: send,
                would_suppress: suppress,
                would_skip: skip,
                letters: &planned,
            };
            println!("{}", serde_json::to_string(&answer)?);
            Ok(())
        }
        format => print_list(format, &planned),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
