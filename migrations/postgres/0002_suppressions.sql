-- Installation secrets (e.g. the key that signs unsubscribe links), created on first use.
CREATE TABLE secrets (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Addresses an owner must not write to again: unsubscribed, or refused for good (5xx).
CREATE TABLE suppressions (
    owner_id    BIGINT      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_key   TEXT        NOT NULL,
    reason      TEXT        NOT NULL CHECK (reason IN ('unsubscribed', 'bounced')),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (owner_id, email_key)
);
