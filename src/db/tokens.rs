//! Single-use account tokens emailed as links (confirmation, password reset) and the failed
//! logins kept for throttling when Redis is not configured.
//!
//! Only the SHA-256 of a token is stored. Spending a token is one `UPDATE ... WHERE used_at IS
//! NULL AND expires_at > now`, so two concurrent POSTs of the same link cannot both succeed.

use chrono::{DateTime, Duration, Utc};

use super::accounts::email_key;
use super::{Db, now};
use crate::auth::token;
use crate::error::Result;
use crate::on_pool;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Confirm,
    Reset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Confirm => "confirm",
            Purpose::Reset => "reset",
        }
    }

    /// How long a link of this kind stays valid.
    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::Confirm => Duration::hours(48),
            Purpose::Reset => Duration::hours(1),
        }
    }
}

/// Issues a new token for an account and returns the raw token for the letter. A reset token
/// spends (invalidates) the older unused reset tokens. Confirmation tokens do not spend each
/// other: each carries (`password_hash`) the password chosen at the registration that sent it,
/// and confirms only for a reader who types that password, so a later registration of the same
/// address cannot change what an earlier link does. Confirming spends them all.
pub async fn issue(
    db: &Db,
    account_id: i64,
    purpose: Purpose,
    password_hash: Option<&str>,
) -> Result<String> {
    let raw = token::generate();
    let created = now();
    let expires = created + purpose.lifetime();
    on_pool!(db, p => {
        let mut tx = p.begin().await?;
        if purpose == Purpose::Reset {
            sqlx::query("UPDATE account_tokens SET used_at = $1 WHERE account_id = $2 AND purpose = $3 AND used_at IS NULL")
                .bind(created)
                .bind(account_id)
                .bind(purpose.as_str())
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO account_tokens (account_id, purpose, token_hash, password_hash, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(account_id)
            .bind(purpose.as_str())
            .bind(token::hash(&raw))
            .bind(password_hash)
            .bind(created)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    })?;
    Ok(raw)
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct TokenRow {
    id: i64,
    account_id: i64,
    token_hash: String,
    password_hash: Option<String>,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    email: String,
    account_hash: String,
}

/// What a link's token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// Usable: the account it belongs to, by id and email.
    Valid {
        account_id: i64,
        email: String,
    },
    Used,
    Expired,
    /// Malformed, unknown, or issued for another purpose.
    Unknown,
}

async fn find(db: &Db, purpose: Purpose, raw: &str) -> Result<Option<TokenRow>> {
    if !token::is_well_formed(raw) {
        return Ok(None);
    }
    let wanted = token::hash(raw);
    let sql = "SELECT t.id, t.account_id, t.token_hash, t.password_hash, t.expires_at, t.used_at, a.email, \
               a.password_hash AS account_hash \
               FROM account_tokens t JOIN accounts a ON a.id = t.account_id \
               WHERE t.token_hash = $1 AND t.purpose = $2";
    let row = on_pool!(db, p => sqlx::query_as::<_, TokenRow>(sql)
        .bind(&wanted)
        .bind(purpose.as_str())
        .fetch_optional(p)
        .await)?;
    // The index found the row; compare the stored hash in constant time all the same.
    Ok(row.filter(|r| token::hashes_equal(&r.token_hash, &wanted)))
}

fn state_of(row: Option<&TokenRow>) -> TokenState {
    match row {
        None => TokenState::Unknown,
        Some(r) if r.used_at.is_some() => TokenState::Used,
        Some(r) if r.expires_at <= Utc::now() => TokenState::Expired,
        Some(r) => TokenState::Valid {
            account_id: r.account_id,
            email: r.email.clone(),
        },
    }
}

/// Looks a token up without changing anything (what a GET may do).
pub async fn check(db: &Db, purpose: Purpose, raw: &str) -> Result<TokenState> {
    Ok(state_of(find(db, purpose, raw).await?.as_ref()))
}

/// A confirmation token's state and, when valid, the password hash the reader must type the
/// password of: the one chosen at the registration that sent it (older links carry none and
/// stand for the account's first password).
pub async fn confirmation(db: &Db, raw: &str) -> Result<(TokenState, Option<String>)> {
    let row = find(db, Purpose::Confirm, raw).await?;
    let state = state_of(row.as_ref());
    let bound = row
        .filter(|_| matches!(state, TokenState::Valid { .. }))
        .map(|r| r.password_hash.unwrap_or(r.account_hash));
    Ok((state, bound))
}

/// Confirms the account's email with a confirmation token, spending it. The password chosen
/// at the registration that sent this very link becomes the account's password.
pub async fn confirm(db: &Db, raw: &str) -> Result<TokenState> {
    let row = find(db, Purpose::Confirm, raw).await?;
    let state = state_of(row.as_ref());
    let (TokenState::Valid { .. }, Some(row)) = (&state, row) else {
        return Ok(state);
    };
    spend(db, &row, row.password_hash.as_deref(), false, state).await
}

/// Sets a new password with a reset token: spends the token, ends every session of the
/// account, and marks its email confirmed (the link proves the mailbox is theirs).
pub async fn reset_password(db: &Db, raw: &str, new_hash: &str) -> Result<TokenState> {
    let row = find(db, Purpose::Reset, raw).await?;
    let state = state_of(row.as_ref());
    let (TokenState::Valid { .. }, Some(row)) = (&state, row) else {
        return Ok(state);
    };
    spend(db, &row, Some(new_hash), true, state).await
}

/// Spends a valid token and applies it in one transaction: confirms the email, sets the
/// password when one is given, spends every other pending confirmation link of the account
/// (it is confirmed now), and ends every session when asked. A token spent by a
/// concurrent request in the meantime reads as used.
async fn spend(
    db: &Db,
    row: &TokenRow,
    password_hash: Option<&str>,
    end_sessions: bool,
    valid: TokenState,
) -> Result<TokenState> {
    let at = now();
    let spent = on_pool!(db, p => {
        let mut tx = p.begin().await?;
        let spent = sqlx::query("UPDATE account_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1")
            .bind(at)
            .bind(row.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if spent == 1 {
            sqlx::query("UPDATE accounts SET email_confirmed = TRUE, password_hash = COALESCE($1, password_hash) WHERE id = $2")
                .bind(password_hash)
                .bind(row.account_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE account_tokens SET used_at = $1 WHERE account_id = $2 AND purpose = 'confirm' AND used_at IS NULL")
                .bind(at)
                .bind(row.account_id)
                .execute(&mut *tx)
                .await?;
            if end_sessions {
                sqlx::query("DELETE FROM sessions WHERE account_id = $1")
                    .bind(row.account_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await.map(|_| spent)
    })?;
    Ok(if spent == 1 { valid } else { TokenState::Used })
}

/// Deletes tokens that expired more than a week ago, so the table does not grow forever.
pub async fn drop_expired(db: &Db) -> Result<()> {
    let cutoff = now() - Duration::days(7);
    on_pool!(db, p => sqlx::query("DELETE FROM account_tokens WHERE expires_at <= $1")
        .bind(cutoff).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Reserves one login try for an account key, before its password is checked, in one
/// statement (atomic on both backends: the upsert locks the key's row). Returns how many tries
/// the window now holds, this one included, and when the window started. A window older than
/// `since` starts again at one.
pub async fn reserve_try(
    db: &Db,
    email: &str,
    since: DateTime<Utc>,
) -> Result<(i64, DateTime<Utc>)> {
    let sql = "INSERT INTO login_throttle (email_key, tries, window_start) VALUES ($1, 1, $2) \
               ON CONFLICT (email_key) DO UPDATE SET \
               tries = CASE WHEN login_throttle.window_start <= $3 THEN 1 ELSE login_throttle.tries + 1 END, \
               window_start = CASE WHEN login_throttle.window_start <= $3 THEN $2 ELSE login_throttle.window_start END \
               RETURNING tries, window_start";
    let (tries, start): (i64, DateTime<Utc>) = on_pool!(db, p => sqlx::query_as(sql)
        .bind(email_key(email)).bind(now()).bind(since).fetch_one(p).await)?;
    Ok((tries, start))
}

/// Forgets the tries of an account key (after a successful login, or `users unlock`).
/// Returns whether there were any.
pub async fn clear_tries(db: &Db, email: &str) -> Result<bool> {
    let n = on_pool!(db, p => sqlx::query("DELETE FROM login_throttle WHERE email_key = $1")
        .bind(email_key(email)).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Spends a token whose letter could not be sent, so no live link exists that nobody got.
pub async fn discard(db: &Db, raw: &str) -> Result<()> {
    let sql = "UPDATE account_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL";
    on_pool!(db, p => sqlx::query(sql).bind(now()).bind(token::hash(raw))
        .execute(p).await.map(|r| r.rows_affected()))?;
    Ok(())
}
