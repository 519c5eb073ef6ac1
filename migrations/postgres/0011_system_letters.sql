-- Letters from the installation itself (confirmation, password reset, "you already have an
-- account") waiting to be sent: written before the first try, deleted once the server took
-- the letter, so one that cannot go at once is sent by the next send-due (or serve). No link
-- is stored: its token is made when the letter is composed, just before each try.
CREATE TABLE system_letters (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('confirm', 'reset', 'already')),
    account_id     BIGINT  NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- confirm: the argon2 hash of the password chosen at that registration
    password_hash  TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    next_try_at    TIMESTAMPTZ NOT NULL,
    lease_until    TIMESTAMPTZ,
    tries          BIGINT NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX system_letters_due ON system_letters (next_try_at);
