-- Issue 18 (points 5 and 7): history that survives deletes, deferred tries told from final
-- failures, and a folded search key for clients.
--
-- 1. attempts: status may be 'deferred' (a 4xx or no answer, tried again later) beside
--    'success' and 'failure' (final), and 'bounced'/'complained' (from DSN/ARF reports);
--    each row keeps the address and name it was sent to (`email`, `full_name`), and keeps
--    its client_id when the client is deleted (no foreign key on it any more). SQLite cannot
--    change a CHECK in place, so the table is rebuilt (its trigger and indexes with it).
--    Old 'failure' rows whose reply is not a 5xx were retried: they become 'deferred'.
CREATE TABLE attempts_new (
    id               INTEGER PRIMARY KEY,
    mailing_id       INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id        INTEGER,
    attempted_at     TEXT    NOT NULL,
    status           TEXT    NOT NULL
                     CHECK (status IN ('success', 'deferred', 'failure', 'bounced', 'complained')),
    server_response  TEXT    NOT NULL,
    email            TEXT,
    full_name        TEXT
);
INSERT INTO attempts_new (id, mailing_id, client_id, attempted_at, status, server_response, email, full_name)
SELECT a.id, a.mailing_id, a.client_id, a.attempted_at,
       CASE WHEN a.status = 'failure' AND a.server_response NOT LIKE '5%' THEN 'deferred' ELSE a.status END,
       a.server_response, c.email, c.full_name
  FROM attempts a LEFT JOIN clients c ON c.id = a.client_id;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_mailing ON attempts (mailing_id, attempted_at);
CREATE INDEX attempts_time ON attempts (attempted_at);

-- 2. The counters: `deferred` beside `failed` (which now counts final failures only).
ALTER TABLE mailing_stats ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
ALTER TABLE mailing_day_stats ADD COLUMN deferred INTEGER NOT NULL DEFAULT 0;
UPDATE mailing_stats SET deferred = (
    SELECT count(*) FROM attempts a WHERE a.mailing_id = mailing_stats.mailing_id AND a.status = 'deferred');
UPDATE mailing_stats SET failed = max(failed - deferred, 0);
UPDATE mailing_day_stats SET deferred = (
    SELECT count(*) FROM attempts a WHERE a.mailing_id = mailing_day_stats.mailing_id
       AND substr(a.attempted_at, 1, 10) = mailing_day_stats.day AND a.status = 'deferred');
UPDATE mailing_day_stats SET failed = max(failed - deferred, 0);

-- 3. A recipient reached stays reached when its client is deleted: the first-success markers
--    lose their foreign key to clients (rebuilt; the insert trigger of 0007 comes back, the
--    delete trigger of 0005 that lowered the counters does not).
CREATE TABLE stats_reached_new (
    mailing_id  INTEGER NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id   INTEGER NOT NULL,
    reached_at  TEXT    NOT NULL,
    PRIMARY KEY (mailing_id, client_id)
) WITHOUT ROWID;
INSERT INTO stats_reached_new SELECT mailing_id, client_id, reached_at FROM stats_reached;
DROP TABLE stats_reached;
ALTER TABLE stats_reached_new RENAME TO stats_reached;
CREATE INDEX stats_reached_client ON stats_reached (client_id);
CREATE INDEX stats_reached_time ON stats_reached (reached_at);
CREATE TRIGGER stats_reached_insert AFTER INSERT ON stats_reached
WHEN NOT EXISTS (SELECT 1 FROM stats_batching)
BEGIN
    UPDATE mailing_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id;
    UPDATE mailing_day_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id AND day = substr(NEW.reached_at, 1, 10);
END;

-- 4. clients.search_key: name, email and comment folded (Unicode lower case, accents
--    removed) by mailctl itself (src/db/search.rs), since SQLite's lower() and LIKE fold
--    ASCII only. NULL until filled: the next `clients list --search` folds the rows left NULL.
ALTER TABLE clients ADD COLUMN search_key TEXT;
CREATE INDEX clients_search_key_missing ON clients (id) WHERE search_key IS NULL;

-- 5. The row trigger of 0013 (off while the sender records a batch), with `deferred`: a
--    report (bounced, complained) is not a try; `failed` counts final failures only. Last,
--    once both tables it writes exist again.
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
