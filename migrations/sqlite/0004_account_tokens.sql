-- Single-use links emailed to an account owner: confirmation (48 h) and password reset (1 h).
-- Only the SHA-256 (hex) of the token is stored. A confirmation token may carry the password
-- hash chosen at that registration, applied when that very link is confirmed.
CREATE TABLE account_tokens (
    id             INTEGER PRIMARY KEY,
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose        TEXT    NOT NULL CHECK (purpose IN ('confirm', 'reset')),
    token_hash     TEXT    NOT NULL UNIQUE,
    password_hash  TEXT,
    created_at     TEXT    NOT NULL,
    expires_at     TEXT    NOT NULL,
    used_at        TEXT
);
CREATE INDEX account_tokens_account ON account_tokens (account_id, purpose);

-- Failed logins per account key (lower-cased email), for throttling when Redis is not configured.
CREATE TABLE login_failures (
    id         INTEGER PRIMARY KEY,
    email_key  TEXT    NOT NULL,
    failed_at  TEXT    NOT NULL
);
CREATE INDEX login_failures_key ON login_failures (email_key, failed_at);
