-- Letters from the installation itself (confirmation, password reset, "you already have an
-- account") waiting to be sent: written before the first try, deleted once the server took
-- the letter, so one that cannot go at once is sent by the next send-due (or serve). No link
-- is stored: its token is made when the letter is composed, just before each try.
CREATE TABLE system_letters (
    id             INTEGER PRIMARY KEY,
    kind           TEXT    NOT NULL CHECK (kind IN ('confirm', 'reset', 'already')),
    account_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- confirm: the argon2 hash of the password chosen at that registration
    password_hash  TEXT,
    created_at     TEXT NOT NULL,
    next_try_at    TEXT NOT NULL,
    lease_until    TEXT,
    tries          INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT
);
CREATE INDEX system_letters_due ON system_letters (next_try_at);
