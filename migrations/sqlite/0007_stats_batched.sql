-- The sender records tries in batches, and a row trigger ran six statements per attempt.
-- While the sender inserts a batch, a row in stats_batching (inserted and deleted inside the
-- same transaction, so no other connection ever sees it) turns the row triggers off, and the
-- sender updates the same counters once per batch (src/db/attempts.rs). Any other insert (an
-- administrator's SQL, an import) still goes through the triggers, which are otherwise
-- those of 0005.

CREATE TABLE stats_batching (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    -- The batch's attempts are those with a larger id (the transaction holds the write lock).
    after  INTEGER NOT NULL
);

DROP TRIGGER attempts_stats;
DROP TRIGGER stats_reached_insert;

CREATE TRIGGER attempts_stats AFTER INSERT ON attempts
WHEN NOT EXISTS (SELECT 1 FROM stats_batching)
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
WHEN NOT EXISTS (SELECT 1 FROM stats_batching)
BEGIN
    UPDATE mailing_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id;
    UPDATE mailing_day_stats SET recipients_reached = recipients_reached + 1
     WHERE mailing_id = NEW.mailing_id AND day = substr(NEW.reached_at, 1, 10);
END;
