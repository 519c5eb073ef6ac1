//! Recording a bounce or complaint against the letter it is about: an attempt row
//! (`bounced` / `complained`, the stats counters follow by trigger), the delivery marked
//! failed for a hard bounce, and the address suppressed for the owner when the report says
//! so. Each report is one transaction, and `bounce_reports` makes a second import a no-op.

use chrono::{DateTime, Duration, Utc};

use super::Db;
use crate::bounce::report::Kind;
use crate::error::Result;
use crate::on_pool;

/// The letter's recipient as the database knows it, when that letter went out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Sent {
    pub owner_id: i64,
    pub email_key: String,
}

/// The owner and recipient of a letter that was sent (or failed after it was sent): a
/// report about a letter that never left is about no letter of ours.
pub async fn sent(db: &Db, mailing_id: i64, client_id: i64) -> Result<Option<Sent>> {
    let sql = "SELECT m.owner_id, c.email_key FROM deliveries d \
               JOIN mailings m ON m.id = d.mailing_id \
               JOIN clients c ON c.id = d.client_id AND c.owner_id = m.owner_id \
               WHERE d.mailing_id = $1 AND d.client_id = $2 AND d.state IN ('sent', 'failed')";
    Ok(on_pool!(db, p => sqlx::query_as::<_, Sent>(sql)
        .bind(mailing_id).bind(client_id).fetch_optional(p).await)?)
}

/// One report about one letter.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub digest: &'a str,
    pub mailing_id: i64,
    pub client_id: i64,
    pub recipient: &'a Sent,
    pub kind: Kind,
    pub text: &'a str,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Recorded {
        suppressed: bool,
    },
    /// This report was imported before: nothing changed.
    Duplicate,
}

/// Soft bounces of one address within this window that suppress it.
pub const SOFT_LIMIT: i64 = 3;
pub const SOFT_WINDOW_DAYS: i64 = 30;

pub async fn apply(db: &Db, e: &Event<'_>) -> Result<Applied> {
    let status = if e.kind == Kind::Complaint {
        "complained"
    } else {
        "bounced"
    };
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO bounce_reports (digest, owner_id, email_key, mailing_id, client_id, kind, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (digest) DO NOTHING",
        )
        .bind(e.digest).bind(e.recipient.owner_id).bind(&e.recipient.email_key)
        .bind(e.mailing_id).bind(e.client_id).bind(e.kind.as_str()).bind(e.at)
        .execute(&mut *tx).await?.rows_affected();
        if fresh == 0 {
            tx.rollback().await?;
            return Ok(Applied::Duplicate);
        }
        sqlx::query(
            "INSERT INTO attempts (mailing_id, client_id, attempted_at, status, server_response) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(e.mailing_id).bind(e.client_id).bind(e.at).bind(status).bind(e.text)
        .execute(&mut *tx).await?;
        let reason = match e.kind {
            Kind::Hard => {
                sqlx::query(
                    "UPDATE deliveries SET state = 'failed', last_reply = $3, updated_at = $4 \
                     WHERE mailing_id = $1 AND client_id = $2 AND state = 'sent'",
                )
                .bind(e.mailing_id).bind(e.client_id).bind(e.text).bind(e.at)
                .execute(&mut *tx).await?;
                Some("bounced")
            }
            Kind::Soft => {
                let since = e.at - Duration::days(SOFT_WINDOW_DAYS);
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM bounce_reports \
                     WHERE owner_id = $1 AND email_key = $2 AND kind = 'soft' AND received_at >= $3",
                )
                .bind(e.recipient.owner_id).bind(&e.recipient.email_key).bind(since)
                .fetch_one(&mut *tx).await?;
                (n >= SOFT_LIMIT).then_some("bounced")
            }
            Kind::Complaint => Some("complained"),
        };
        let mut suppressed = false;
        if let Some(reason) = reason {
            suppressed = sqlx::query(
                "INSERT INTO suppressions (owner_id, email_key, reason, created_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (owner_id, email_key) DO NOTHING",
            )
            .bind(e.recipient.owner_id).bind(&e.recipient.email_key).bind(reason).bind(e.at)
            .execute(&mut *tx).await?.rows_affected() > 0;
        }
        tx.commit().await?;
        Ok::<_, crate::error::Error>(Applied::Recorded { suppressed })
    })
}
