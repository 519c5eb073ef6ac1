-- Times are RFC 3339 text in UTC written by the application (lexically ordered);
-- email_key is the lower-cased email computed by the application (Unicode-aware),
-- so case-insensitive uniqueness behaves the same as on PostgreSQL.

CREATE TABLE accounts (
    id              INTEGER PRIMARY KEY,
    email           TEXT    NOT NULL,
    email_key       TEXT    NOT NULL UNIQUE,
    password_hash   TEXT    NOT NULL,
    role            TEXT    NOT NULL CHECK (role IN ('user', 'manager', 'admin')),
    email_confirmed BOOLEAN NOT NULL DEFAULT 0,
    blocked         BOOLEAN NOT NULL DEFAULT 0,
    created_at      TEXT    NOT NULL
);

CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    account_id  INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  TEXT    NOT NULL,
    expires_at  TEXT    NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE clients (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email       TEXT    NOT NULL,
    email_key   TEXT    NOT NULL,
    full_name   TEXT    NOT NULL DEFAULT '',
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  TEXT    NOT NULL,
    UNIQUE (owner_id, email_key)
);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    subject     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    html        TEXT,
    created_at  TEXT    NOT NULL
);
CREATE INDEX messages_owner ON messages (owner_id);

CREATE TABLE mailings (
    id          INTEGER PRIMARY KEY,
    owner_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE RESTRICT,
    start_at    TEXT    NOT NULL,
    end_at      TEXT    NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'active', 'completed')),
    disabled    BOOLEAN NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL,
    CHECK (end_at > start_at)
);
CREATE INDEX mailings_owner ON mailings (owner_id);
CREATE INDEX mailings_message ON mailings (message_id);
CREATE INDEX mailings_due ON mailings (status, start_at);

CREATE TABLE mailing_clients (
    mailing_id  INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id   INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    PRIMARY KEY (mailing_id, client_id)
) WITHOUT ROWID;
CREATE INDEX mailing_clients_client ON mailing_clients (client_id);

-- One row per (mailing, recipient): the sender's source of truth.
CREATE TABLE deliveries (
    id           INTEGER PRIMARY KEY,
    mailing_id   INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id    INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
    tries        INTEGER NOT NULL DEFAULT 0,
    next_try_at  TEXT,
    lease_until  TEXT,
    last_reply   TEXT,
    updated_at   TEXT    NOT NULL,
    UNIQUE (mailing_id, client_id)
);
CREATE INDEX deliveries_work ON deliveries (mailing_id, state, next_try_at);

-- One row per try.
CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY,
    mailing_id       INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id        INTEGER REFERENCES clients (id) ON DELETE SET NULL,
    attempted_at     TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('success', 'failure')),
    server_response  TEXT    NOT NULL
);
CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
CREATE INDEX attempts_time ON attempts (attempted_at);
