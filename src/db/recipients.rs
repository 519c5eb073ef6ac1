//! Who a mailing goes to and where each letter stands, read for people (`mailings
//! recipients`) and for `--dry-run`. A recipient is a row of `mailing_clients`, or a former
//! one whose letter has a delivery row (its history stays). A recipient without a delivery
//! row has not been tried yet: `pending`. A letter not yet sent to an address the owner may
//! no longer write to reads `suppressed`: the next run sets it aside instead of sending it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Db;
use crate::error::Result;
use crate::on_pool;
use crate::output::{Record, opt_time};

/// A recipient of one mailing with the state of its letter.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Recipient {
    pub client_id: i64,
    pub email: String,
    pub full_name: String,
    /// pending, sending, sent, failed or suppressed.
    pub state: String,
    pub tries: i32,
    /// The server's last reply (or why the letter was set aside).
    pub last_reply: Option<String>,
    /// When the state last changed (empty: never tried).
    pub updated_at: Option<DateTime<Utc>>,
    /// When a temporary failure is tried again.
    pub next_try_at: Option<DateTime<Utc>>,
}

impl Record for Recipient {
    const HEADERS: &'static [&'static str] = &[
        "client_id",
        "email",
        "full_name",
        "state",
        "tries",
        "last_reply",
        "updated_at",
        "next_try_at",
    ];
    fn cells(&self) -> Vec<String> {
        vec![
            self.client_id.to_string(),
            self.email.clone(),
            self.full_name.clone(),
            self.state.clone(),
            self.tries.to_string(),
            self.last_reply.clone().unwrap_or_default(),
            opt_time(&self.updated_at),
            opt_time(&self.next_try_at),
        ]
    }
}

/// The owner may no longer write to client `c`'s address.
const SUPPRESSED: &str = "EXISTS (SELECT 1 FROM suppressions s \
       WHERE s.owner_id = c.owner_id AND s.email_key = c.email_key)";

/// The recipients of the mailings `ids` (a list of integers), current and former, with their
/// client and delivery row (`r`, `c`, `d`).
fn recipients_of(ids: &str) -> String {
    format!(
        "(SELECT mailing_id, client_id FROM mailing_clients WHERE mailing_id IN ({ids}) \
           UNION SELECT mailing_id, client_id FROM deliveries WHERE mailing_id IN ({ids})) r \
         JOIN clients c ON c.id = r.client_id \
         LEFT JOIN deliveries d ON d.mailing_id = r.mailing_id AND d.client_id = r.client_id"
    )
}

fn id_list(ids: &[i64]) -> String {
    ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
}

/// The recipients of one mailing (the caller has checked it may see it), by client id.
pub async fn list(db: &Db, mailing_id: i64, state: Option<&str>) -> Result<Vec<Recipient>> {
    let sql = format!(
        "SELECT * FROM (SELECT c.id AS client_id, c.email, c.full_name, \
             CASE WHEN (d.state IS NULL OR d.state IN ('pending', 'sending')) AND {SUPPRESSED} \
                  THEN 'suppressed' ELSE COALESCE(d.state, 'pending') END AS state, \
             COALESCE(d.tries, 0) AS tries, d.last_reply, d.updated_at, d.next_try_at \
           FROM {}) x \
         WHERE ($1 IS NULL OR x.state = $1) ORDER BY x.client_id",
        recipients_of(&mailing_id.to_string())
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Recipient>(&sql).bind(state).fetch_all(p).await)?)
}

/// One letter of a dry run's mailings, as the database has it now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Letter {
    pub mailing_id: i64,
    pub client_id: i64,
    pub email: String,
    pub full_name: String,
    /// The client's custom fields, as stored (a JSON object).
    pub fields: String,
    /// The delivery row's state; None: not tried yet (no row).
    pub state: Option<String>,
    pub next_try_at: Option<DateTime<Utc>>,
    pub lease_until: Option<DateTime<Utc>>,
    pub suppressed: bool,
}

/// What a run starting at `now` does with a letter (the sender's rules: `deliveries`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// The address is suppressed: the run sets the letter aside (counted as `suppressed`).
    Suppress,
    Skip(&'static str),
}

impl Letter {
    pub fn verdict(&self, now: DateTime<Utc>) -> Verdict {
        let open = match self.state.as_deref() {
            None => true,
            Some("pending") => {
                if self.next_try_at.is_some_and(|t| t > now) && !self.suppressed {
                    return Verdict::Skip("retry not due");
                }
                true
            }
            Some("sending") => {
                if self.lease_until.is_none_or(|t| t >= now) {
                    return Verdict::Skip("in flight");
                }
                true
            }
            Some("sent") => return Verdict::Skip("already sent"),
            Some("failed") => return Verdict::Skip("failed before"),
            Some("suppressed") => return Verdict::Skip("suppressed before"),
            Some(_) => return Verdict::Skip("unknown state"),
        };
        match (open, self.suppressed) {
            (true, true) => Verdict::Suppress,
            _ => Verdict::Send,
        }
    }
}

/// Every letter of these mailings, by mailing and client id.
pub async fn letters(db: &Db, mailing_ids: &[i64]) -> Result<Vec<Letter>> {
    if mailing_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT r.mailing_id, c.id AS client_id, c.email, c.full_name, c.fields, d.state, d.next_try_at, \
           d.lease_until, {SUPPRESSED} AS suppressed \
         FROM {} ORDER BY r.mailing_id, c.id",
        recipients_of(&id_list(mailing_ids))
    );
    Ok(on_pool!(db, p => sqlx::query_as::<_, Letter>(&sql).fetch_all(p).await)?)
}

/// Of these mailings, those with a letter left to send or to set aside now or later (not
/// tried yet, waiting to retry, in flight): the ones a run has work for. A finished mailing
/// (every recipient with a final outcome) is left out of runs and their counts.
pub async fn unfinished(db: &Db, mailing_ids: &[i64]) -> Result<Vec<i64>> {
    if mailing_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT m.id FROM mailings m WHERE m.id IN ({}) AND (\
           EXISTS (SELECT 1 FROM deliveries d WHERE d.mailing_id = m.id AND d.state IN ('pending', 'sending')) \
           OR EXISTS (SELECT 1 FROM mailing_clients mc WHERE mc.mailing_id = m.id AND NOT EXISTS \
             (SELECT 1 FROM deliveries d WHERE d.mailing_id = mc.mailing_id AND d.client_id = mc.client_id))) \
         ORDER BY m.id",
        id_list(mailing_ids)
    );
    Ok(on_pool!(db, p => sqlx::query_scalar::<_, i64>(&sql).fetch_all(p).await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(state: Option<&str>, suppressed: bool) -> Letter {
        Letter {
            mailing_id: 1,
            client_id: 1,
            email: "a@example.com".into(),
            full_name: String::new(),
            fields: "{}".into(),
            state: state.map(str::to_string),
            next_try_at: None,
            lease_until: None,
            suppressed,
        }
    }

    #[test]
    fn verdicts_follow_the_sender() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(5);
        let earlier = now - chrono::Duration::minutes(5);
        assert_eq!(letter(None, false).verdict(now), Verdict::Send);
        assert_eq!(letter(None, true).verdict(now), Verdict::Suppress);
        assert_eq!(
            letter(Some("pending"), true).verdict(now),
            Verdict::Suppress
        );
        let mut retry = letter(Some("pending"), false);
        retry.next_try_at = Some(later);
        assert_eq!(retry.verdict(now), Verdict::Skip("retry not due"));
        retry.next_try_at = Some(earlier);
        assert_eq!(retry.verdict(now), Verdict::Send);
        let mut flight = letter(Some("sending"), false);
        flight.lease_until = Some(later);
        assert_eq!(flight.verdict(now), Verdict::Skip("in flight"));
        flight.lease_until = Some(earlier);
        assert_eq!(flight.verdict(now), Verdict::Send);
        assert_eq!(
            letter(Some("sent"), false).verdict(now),
            Verdict::Skip("already sent")
        );
        assert_eq!(
            letter(Some("suppressed"), true).verdict(now),
            Verdict::Skip("suppressed before")
        );
    }
}
