-- Statistics: running counters kept by triggers on `attempts`, in the same transaction as
-- each attempt, so `mailctl stats` never scans the attempts table for whole days.
-- Attempts are append-only (the sender inserts one row per try and never edits or deletes
-- one); deleting a mailing or a client cascades through the foreign keys below.
--
-- stats_versions: one row per owner, bumped by every write that can change that owner's
-- figures (new attempt, mailing deleted or moved to another owner, recipient deleted, the
-- owner's email changed). `stats` folds the versions into its Redis key, so a cached answer
-- is never stale whichever process wrote. Rows are never deleted (no foreign key), so the
-- sum of versions only grows.

CREATE TABLE stats_meta (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    installation  TEXT    NOT NULL
);
INSERT INTO stats_meta (id, installation) VALUES (1, lower(hex(randomblob(16))));

CREATE TABLE stats_versions (
    owner_id  INTEGER PRIMARY KEY,
    version   INTEGER NOT NULL
);

CREATE TABLE mailing_stats (
    mailing_id          INTEGER PRIMARY KEY REFERENCES mailings (id) ON DELETE CASCADE,
    attempted           INTEGER NOT NULL,
    succeeded           INTEGER NOT NULL,
    failed              INTEGER NOT NULL,
    recipients_reached  INTEGER NOT NULL DEFAULT 0,
    first_attempt_at    TEXT    NOT NULL,
    last_attempt_at     TEXT    NOT NULL
);

-- day: the UTC date of attempted_at, 'YYYY-MM-DD'. recipients_reached counts the recipients
-- whose first success fell on that day, so days add up to the mailing's total.
CREATE TABLE mailing_day_stats (
    mailing_id          INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    day                 TEXT    NOT NULL,
    attempted           INTEGER NOT NULL,
    succeeded           INTEGER NOT NULL,
    failed              INTEGER NOT NULL,
    recipients_reached  INTEGER NOT NULL DEFAULT 0,
    first_attempt_at    TEXT    NOT NULL,
    last_attempt_at     TEXT    NOT NULL,
    PRIMARY KEY (mailing_id, day)
) WITHOUT ROWID;
CREATE INDEX mailing_day_stats_day ON mailing_day_stats (day);

-- One row per (mailing, recipient) with at least one successful attempt: the first success.
CREATE TABLE stats_reached (
    mailing_id  INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id   INTEGER NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    reached_at  TEXT    NOT NULL,
    PRIMARY KEY (mailing_id, client_id)
) WITHOUT ROWID;
CREATE INDEX stats_reached_client ON stats_reached (client_id);
CREATE INDEX stats_reached_time ON stats_reached (reached_at);

CREATE TRIGGER attempts_stats AFTER INSERT ON attempts
BEGIN
    INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, 1, NEW.status = 'success', NEW.status = 'failure', NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = attempted + 1,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        first_attempt_at = min(first_attempt_at, excluded.first_attempt_at),
        last_attempt_at = max(last_attempt_at, excluded.last_attempt_at);
    INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, substr(NEW.attempted_at, 1, 10), 1, NEW.status = 'success', NEW.status = 'failure', NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = attempted + 1,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
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

CREATE TRIGGER stats_reached_insert AFTER INSERT ON stats_reached
BEGIN
    UPDATE mailing_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id;
    UPDATE mailing_day_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id AND day = substr(NEW.reached_at, 1, 10);
END;

-- A deleted recipient no longer counts as reached (the same as a GROUP BY over attempts,
-- whose client_id becomes NULL).
CREATE TRIGGER stats_reached_delete AFTER DELETE ON stats_reached
BEGIN
    UPDATE mailing_stats SET recipients_reached = recipients_reached - 1
     WHERE mailing_id = OLD.mailing_id;
    UPDATE mailing_day_stats SET recipients_reached = recipients_reached - 1
     WHERE mailing_id = OLD.mailing_id AND day = substr(OLD.reached_at, 1, 10);
    INSERT INTO stats_versions (owner_id, version)
    SELECT owner_id, 1 FROM mailings WHERE id = OLD.mailing_id
    ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
END;

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

-- `stats --by user` shows the owner's email.
CREATE TRIGGER accounts_stats_email AFTER UPDATE OF email ON accounts
WHEN NEW.email IS NOT OLD.email
BEGIN
    INSERT INTO stats_versions (owner_id, version) VALUES (NEW.id, 1)
    ON CONFLICT (owner_id) DO UPDATE SET version = version + 1;
END;

-- Counters for attempts recorded before this migration.
INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
SELECT mailing_id, count(*), sum(status = 'success'), sum(status = 'failure'), min(attempted_at), max(attempted_at)
  FROM attempts GROUP BY mailing_id;
INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
SELECT mailing_id, substr(attempted_at, 1, 10), count(*), sum(status = 'success'), sum(status = 'failure'), min(attempted_at), max(attempted_at)
  FROM attempts GROUP BY mailing_id, substr(attempted_at, 1, 10);
INSERT INTO stats_reached (mailing_id, client_id, reached_at)
SELECT mailing_id, client_id, min(attempted_at) FROM attempts
 WHERE status = 'success' AND client_id IS NOT NULL GROUP BY mailing_id, client_id;
