-- Bounces and complaints (issue 16).
--
-- 1. Suppression reasons: 'bounced' used to mean a 5xx refusal during the SMTP conversation;
--    it now means a bounce report (DSN) received later, and refusals become 'refused'.
--    Complaints (ARF) and addresses added by hand get their own reasons.
-- 2. Attempts may be 'bounced' or 'complained': a report tied to a letter we sent.
-- 3. The stats counters count those two apart: `attempted`, `succeeded` and `failed` keep
--    their meaning (tries of the sender), `bounced` and `complained` are new.
-- 4. bounce_reports: one row per report acted on, so importing it again changes nothing, and
--    soft bounces of an address can be counted over 30 days.
-- SQLite cannot change a CHECK in place: both tables are rebuilt, with their indexes and the
-- stats trigger (which goes with the table).

CREATE TABLE suppressions_new (
    owner_id    INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_key   TEXT    NOT NULL,
    reason      TEXT    NOT NULL
                CHECK (reason IN ('unsubscribed', 'refused', 'bounced', 'complained', 'manual')),
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (owner_id, email_key)
);
INSERT INTO suppressions_new (owner_id, email_key, reason, created_at)
SELECT owner_id, email_key, CASE reason WHEN 'bounced' THEN 'refused' ELSE reason END, created_at
  FROM suppressions;
DROP TABLE suppressions;
ALTER TABLE suppressions_new RENAME TO suppressions;

CREATE TABLE attempts_new (
    id               INTEGER PRIMARY KEY,
    mailing_id       INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id        INTEGER REFERENCES clients (id) ON DELETE SET NULL,
    attempted_at     TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('success', 'failure', 'bounced', 'complained')),
    server_response  TEXT    NOT NULL
);
INSERT INTO attempts_new (id, mailing_id, client_id, attempted_at, status, server_response)
SELECT id, mailing_id, client_id, attempted_at, status, server_response FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
CREATE INDEX attempts_time ON attempts (attempted_at);

ALTER TABLE mailing_stats ADD COLUMN bounced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailing_stats ADD COLUMN complained INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailing_day_stats ADD COLUMN bounced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailing_day_stats ADD COLUMN complained INTEGER NOT NULL DEFAULT 0;

-- The trigger of 0007, with reports counted apart from tries. The sender's own batches
-- (src/db/attempts.rs) only ever insert tries.
CREATE TRIGGER attempts_stats AFTER INSERT ON attempts
WHEN NOT EXISTS (SELECT 1 FROM stats_batching)
BEGIN
    INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, bounced, complained, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, NEW.status NOT IN ('bounced', 'complained'), NEW.status = 'success',
            NEW.status NOT IN ('success', 'bounced', 'complained'), NEW.status = 'bounced',
            NEW.status = 'complained', NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = attempted + excluded.attempted,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
        bounced = bounced + excluded.bounced,
        complained = complained + excluded.complained,
        first_attempt_at = min(first_attempt_at, excluded.first_attempt_at),
        last_attempt_at = max(last_attempt_at, excluded.last_attempt_at);
    INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, bounced, complained, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, substr(NEW.attempted_at, 1, 10), NEW.status NOT IN ('bounced', 'complained'),
            NEW.status = 'success', NEW.status NOT IN ('success', 'bounced', 'complained'),
            NEW.status = 'bounced', NEW.status = 'complained', NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = attempted + excluded.attempted,
        succeeded = succeeded + excluded.succeeded,
        failed = failed + excluded.failed,
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

-- digest: SHA-256 (hex) of what identifies the report (see src/bounce/mod.rs).
CREATE TABLE bounce_reports (
    digest       TEXT    PRIMARY KEY,
    owner_id     INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_key    TEXT    NOT NULL,
    mailing_id   INTEGER NOT NULL,
    client_id    INTEGER NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
    received_at  TEXT    NOT NULL
);
CREATE INDEX bounce_reports_address ON bounce_reports (owner_id, email_key, kind, received_at);
