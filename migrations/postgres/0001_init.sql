-- email_key is the lower-cased email computed by the application (Unicode-aware, the same on
-- both backends); the unique indexes on it make emails unique case-insensitively.

CREATE TABLE accounts (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email           TEXT        NOT NULL,
    email_key       TEXT        NOT NULL UNIQUE CHECK (email_key = lower(email_key)),
    password_hash   TEXT        NOT NULL,
    role            TEXT        NOT NULL CHECK (role IN ('user', 'manager', 'admin')),
    email_confirmed BOOLEAN     NOT NULL DEFAULT FALSE,
    blocked         BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE sessions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  BIGINT      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash  TEXT        NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_account ON sessions (account_id);

CREATE TABLE clients (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    BIGINT      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email       TEXT        NOT NULL,
    email_key   TEXT        NOT NULL,
    full_name   TEXT        NOT NULL DEFAULT '',
    comment     TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (owner_id, email_key)
);

CREATE TABLE messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    BIGINT      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    subject     TEXT        NOT NULL,
    body        TEXT        NOT NULL,
    html        TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX messages_owner ON messages (owner_id);

CREATE TABLE mailings (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id    BIGINT      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message_id  BIGINT      NOT NULL REFERENCES messages (id) ON DELETE RESTRICT,
    start_at    TIMESTAMPTZ NOT NULL,
    end_at      TIMESTAMPTZ NOT NULL,
    status      TEXT        NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'active', 'completed')),
    disabled    BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at  TIMESTAMPTZ NOT NULL,
    CHECK (end_at > start_at)
);
CREATE INDEX mailings_owner ON mailings (owner_id);
CREATE INDEX mailings_message ON mailings (message_id);
CREATE INDEX mailings_due ON mailings (status, start_at);

CREATE TABLE mailing_clients (
    mailing_id  BIGINT NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id   BIGINT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    PRIMARY KEY (mailing_id, client_id)
);
CREATE INDEX mailing_clients_client ON mailing_clients (client_id);

CREATE TABLE deliveries (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailing_id   BIGINT      NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id    BIGINT      NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    state        TEXT        NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
    tries        INTEGER     NOT NULL DEFAULT 0,
    next_try_at  TIMESTAMPTZ,
    lease_until  TIMESTAMPTZ,
    last_reply   TEXT,
    updated_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (mailing_id, client_id)
);
CREATE INDEX deliveries_work ON deliveries (mailing_id, state, next_try_at);

CREATE TABLE attempts (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailing_id       BIGINT      NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id        BIGINT      REFERENCES clients (id) ON DELETE SET NULL,
    attempted_at     TIMESTAMPTZ NOT NULL,
    status           TEXT        NOT NULL CHECK (status IN ('success', 'failure')),
    server_response  TEXT        NOT NULL
);
CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
CREATE INDEX attempts_time ON attempts (attempted_at);
