-- Issue 18: ids of clients and mailings are never reused.
--
-- Without AUTOINCREMENT, SQLite gives a new row max(id) + 1, so a new client takes the id of
-- the client deleted last. History keeps that id after the delete (attempts.client_id,
-- stats_reached, bounce_reports; since 0015), and letters already out carry it (Message-ID,
-- the signed unsubscribe link): the new client would inherit the old one's attempts, count as
-- "already reached", and could be unsubscribed by the old one's link. The same holds for a
-- mailing deleted with --purge-history (bounce_reports, Message-IDs, unsubscribe links).
-- PostgreSQL identity columns never reuse a value (its 0016 changes nothing).
--
-- SQLite cannot add AUTOINCREMENT in place: clients and mailings are rebuilt. sqlx runs this
-- in one transaction with foreign keys on (PRAGMA foreign_keys cannot change there), and
-- dropping a parent table would cascade into its children; so every table with a foreign
-- key to clients or mailings is rebuilt first, pointing at the new parents (renamed last,
-- which repoints those foreign keys by name). Triggers go first, since a rename re-checks
-- every trigger of the schema, and come back unchanged at the end; every index comes back.

DROP TRIGGER attempts_stats;
DROP TRIGGER stats_reached_insert;
DROP TRIGGER mailings_stats_delete;
DROP TRIGGER mailings_stats_move;

-- 1. The new parents, with the same columns in the same order.
CREATE TABLE clients_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email       TEXT    NOT NULL,
    email_key   TEXT    NOT NULL,
    full_name   TEXT    NOT NULL DEFAULT '',
    comment     TEXT    NOT NULL DEFAULT '',
    created_at  TEXT    NOT NULL,
    tags        TEXT    NOT NULL DEFAULT '',
    fields      TEXT    NOT NULL DEFAULT '{}',
    search_key  TEXT,
    UNIQUE (owner_id, email_key)
);
INSERT INTO clients_new (id, owner_id, email, email_key, full_name, comment, created_at, tags, fields, search_key)
SELECT id, owner_id, email, email_key, full_name, comment, created_at, tags, fields, search_key FROM clients;

CREATE TABLE mailings_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id       INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    message_id     INTEGER NOT NULL REFERENCES messages (id) ON DELETE RESTRICT,
    start_at       TEXT    NOT NULL,
    end_at         TEXT    NOT NULL,
    status         TEXT    NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'active', 'completed')),
    disabled       BOOLEAN NOT NULL DEFAULT 0,
    created_at     TEXT    NOT NULL,
    all_clients    BOOLEAN NOT NULL DEFAULT 0,
    audience_tags  TEXT    NOT NULL DEFAULT '',
    CHECK (end_at > start_at)
);
INSERT INTO mailings_new (id, owner_id, message_id, start_at, end_at, status, disabled, created_at, all_clients, audience_tags)
SELECT id, owner_id, message_id, start_at, end_at, status, disabled, created_at, all_clients, audience_tags FROM mailings;

-- 2. The children, each copied then swapped (nothing refers to them, so dropping the old
--    table cascades nowhere).
CREATE TABLE mailing_clients_new (
    mailing_id  INTEGER NOT NULL REFERENCES mailings_new (id) ON DELETE CASCADE,
    client_id   INTEGER NOT NULL REFERENCES clients_new (id) ON DELETE CASCADE,
    PRIMARY KEY (mailing_id, client_id)
) WITHOUT ROWID;
INSERT INTO mailing_clients_new (mailing_id, client_id) SELECT mailing_id, client_id FROM mailing_clients;
DROP TABLE mailing_clients;
ALTER TABLE mailing_clients_new RENAME TO mailing_clients;
CREATE INDEX mailing_clients_client ON mailing_clients (client_id);

CREATE TABLE deliveries_new (
    id           INTEGER PRIMARY KEY,
    mailing_id   INTEGER NOT NULL REFERENCES mailings_new (id) ON DELETE CASCADE,
    client_id    INTEGER NOT NULL REFERENCES clients_new (id) ON DELETE CASCADE,
    state        TEXT    NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sending', 'sent', 'failed', 'suppressed')),
    tries        INTEGER NOT NULL DEFAULT 0,
    next_try_at  TEXT,
    lease_until  TEXT,
    last_reply   TEXT,
    updated_at   TEXT    NOT NULL,
    UNIQUE (mailing_id, client_id)
);
INSERT INTO deliveries_new (id, mailing_id, client_id, state, tries, next_try_at, lease_until, last_reply, updated_at)
SELECT id, mailing_id, client_id, state, tries, next_try_at, lease_until, last_reply, updated_at FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_fresh ON deliveries (mailing_id, id)
    WHERE state = 'pending' AND next_try_at IS NULL;
CREATE INDEX deliveries_retry ON deliveries (mailing_id, next_try_at)
    WHERE state = 'pending' AND next_try_at IS NOT NULL;
CREATE INDEX deliveries_leased ON deliveries (mailing_id, lease_until)
    WHERE state = 'sending';

CREATE TABLE attempts_new (
    id               INTEGER PRIMARY KEY,
    mailing_id       INTEGER NOT NULL REFERENCES mailings_new (id) ON DELETE CASCADE,
    client_id        INTEGER,
    attempted_at     TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('success', 'deferred', 'failure', 'bounced', 'complained')),
    server_response  TEXT    NOT NULL,
    email            TEXT,
    full_name        TEXT
);
INSERT INTO attempts_new (id, mailing_id, client_id, attempted_at, status, server_response, email, full_name)
SELECT id, mailing_id, client_id, attempted_at, status, server_response, email, full_name FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
CREATE INDEX attempts_time ON attempts (attempted_at);

CREATE TABLE mailing_stats_new (
    mailing_id          INTEGER PRIMARY KEY REFERENCES mailings_new (id) ON DELETE CASCADE,
    attempted           INTEGER NOT NULL,
    succeeded           INTEGER NOT NULL,
    failed              INTEGER NOT NULL,
    recipients_reached  INTEGER NOT NULL DEFAULT 0,
    first_attempt_at    TEXT    NOT NULL,
    last_attempt_at     TEXT    NOT NULL,
    bounced             INTEGER NOT NULL DEFAULT 0,
    complained          INTEGER NOT NULL DEFAULT 0,
    deferred            INTEGER NOT NULL DEFAULT 0
);
INSERT INTO mailing_stats_new (mailing_id, attempted, succeeded, failed, recipients_reached, first_attempt_at, last_attempt_at, bounced, complained, deferred)
SELECT mailing_id, attempted, succeeded, failed, recipients_reached, first_attempt_at, last_attempt_at, bounced, complained, deferred FROM mailing_stats;
DROP TABLE mailing_stats;
ALTER TABLE mailing_stats_new RENAME TO mailing_stats;

CREATE TABLE mailing_day_stats_new (
    mailing_id          INTEGER NOT NULL REFERENCES mailings_new (id) ON DELETE CASCADE,
    day                 TEXT    NOT NULL,
    attempted           INTEGER NOT NULL,
    succeeded           INTEGER NOT NULL,
    failed              INTEGER NOT NULL,
    recipients_reached  INTEGER NOT NULL DEFAULT 0,
    first_attempt_at    TEXT    NOT NULL,
    last_attempt_at     TEXT    NOT NULL,
    bounced             INTEGER NOT NULL DEFAULT 0,
    complained          INTEGER NOT NULL DEFAULT 0,
    deferred            INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mailing_id, day)
) WITHOUT ROWID;
INSERT INTO mailing_day_stats_new (mailing_id, day, attempted, succeeded, failed, recipients_reached, first_attempt_at, last_attempt_at, bounced, complained, deferred)
SELECT mailing_id, day, attempted, succeeded, failed, recipients_reached, first_attempt_at, last_attempt_at, bounced, complained, deferred FROM mailing_day_stats;
DROP TABLE mailing_day_stats;
ALTER TABLE mailing_day_stats_new RENAME TO mailing_day_stats;
CREATE INDEX mailing_day_stats_day ON mailing_day_stats (day);

CREATE TABLE stats_reached_new (
    mailing_id  INTEGER NOT NULL REFERENCES mailings_new (id) ON DELETE CASCADE,
    client_id   INTEGER NOT NULL,
    reached_at  TEXT    NOT NULL,
    PRIMARY KEY (mailing_id, client_id)
) WITHOUT ROWID;
INSERT INTO stats_reached_new (mailing_id, client_id, reached_at) SELECT mailing_id, client_id, reached_at FROM stats_reached;
DROP TABLE stats_reached;
ALTER TABLE stats_reached_new RENAME TO stats_reached;
CREATE INDEX stats_reached_client ON stats_reached (client_id);
CREATE INDEX stats_reached_time ON stats_reached (reached_at);

-- 3. The old parents go (no child refers to them any more); the new ones take their names,
--    and the children's foreign keys follow the rename.
DROP TABLE clients;
ALTER TABLE clients_new RENAME TO clients;
CREATE INDEX clients_search_key_missing ON clients (id) WHERE search_key IS NULL;
DROP TABLE mailings;
ALTER TABLE mailings_new RENAME TO mailings;
CREATE INDEX mailings_owner ON mailings (owner_id);
CREATE INDEX mailings_message ON mailings (message_id);
CREATE INDEX mailings_due ON mailings (status, start_at);

-- 4. Start the sequences above every id that history still holds, so an id deleted before
--    this migration is not handed out either.
DELETE FROM sqlite_sequence WHERE name IN ('clients', 'mailings');
INSERT INTO sqlite_sequence (name, seq)
SELECT 'clients', max(
    (SELECT COALESCE(max(id), 0) FROM clients),
    (SELECT COALESCE(max(client_id), 0) FROM attempts),
    (SELECT COALESCE(max(client_id), 0) FROM stats_reached),
    (SELECT COALESCE(max(client_id), 0) FROM bounce_reports));
INSERT INTO sqlite_sequence (name, seq)
SELECT 'mailings', max(
    (SELECT COALESCE(max(id), 0) FROM mailings),
    (SELECT COALESCE(max(mailing_id), 0) FROM bounce_reports));

-- 5. The triggers, as 0005 and 0015 left them.
CREATE TRIGGER mailings_stats_delete AFTER DELETE ON mailings
BEGIN
    INSERT INTO stats_versions (owner_id, version) VALUES (OLD.owner_id, 1)
    ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER mailings_stats_move AFTER UPDATE OF owner_id ON mailings
WHEN NEW.owner_id IS NOT OLD.owner_id
BEGIN
    INSERT INTO stats_versions (owner_id, version) VALUES (OLD.owner_id, 1)
    ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
    INSERT INTO stats_versions (owner_id, version) VALUES (NEW.owner_id, 1)
    ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
END;

CREATE TRIGGER stats_reached_insert AFTER INSERT ON stats_reached
WHEN NOT EXISTS (SELECT 1 FROM stats_batching)
BEGIN
    UPDATE mailing_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id;
    UPDATE mailing_day_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id AND day = substr(NEW.reached_at, 1, 10);
END;

CREATE TRIGGER attempts_stats AFTER INSERT ON attempts
WHEN NOT EXISTS (SELECT 1 FROM stats_batching)
BEGIN
    INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, deferred, bounced, complained, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, NEW.status NOT IN ('bounced', 'complained'), NEW.status = 'success',
            NEW.status = 'failure', NEW.status = 'deferred', NEW.status = 'bounced',
            NEW.status = 'complained', NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = attempted + excluded.attempted,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        deferred = deferred + excluded.deferred,
        bounced = bounced + excluded.bounced,
        complained = complained + excluded.complained,
        first_attempt_at = min(first_attempt_at, excluded.first_attempt_at),
        last_attempt_at = max(last_attempt_at, excluded.last_attempt_at);
    INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, deferred, bounced, complained, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, substr(NEW.attempted_at, 1, 10), NEW.status NOT IN ('bounced', 'complained'),
            NEW.status = 'success', NEW.status = 'failure', NEW.status = 'deferred',
            NEW.status = 'bounced', NEW.status = 'complained', NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = attempted + excluded.attempted,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        deferred = deferred + excluded.deferred,
        bounced = bounced + excluded.bounced,
        complained = complained + excluded.complained,
        first_attempt_at = min(first_attempt_at, excluded.first_attempt_at),
        last_attempt_at = max(last_attempt_at, excluded.last_attempt_at);
    INSERT INTO stats_reached (mailing_id, client_id, reached_at)
    SELECT NEW.mailing_id, NEW.client_id, NEW.attempted_at
    WHERE NEW.status = 'success' AND NEW.client_id IS NOT NULL
    ON CONFLICT DO NOTHING;
    INSERT INTO stats_versions (owner_id, version)
    SELECT owner_id, 1 FROM mailings WHERE id = NEW.mailing_id
    ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
END;
