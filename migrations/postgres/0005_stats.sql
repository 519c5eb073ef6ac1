-- Statistics: running counters kept by triggers on `attempts`, in the same transaction as
-- each attempt, so `mailctl stats` never scans the attempts table for whole days.
-- Attempts are append-only (the sender inserts one row per try and never edits or deletes
-- one); deleting a mailing or a client cascades through the foreign keys below.
--
-- stats_versions: one row per owner (not one global row, so workers sending for different
-- owners never wait on each other), bumped by every write that can change that owner's
-- figures (new attempt, mailing deleted or moved to another owner, recipient deleted, the
-- owner's email changed). `stats` folds the versions into its Redis key, so a cached answer
-- is never stale whichever process wrote. Rows are never deleted (no foreign key), so the
-- sum of versions only grows.

CREATE TABLE stats_meta (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    installation  TEXT    NOT NULL
);
INSERT INTO stats_meta (id, installation)
VALUES (1, md5(random()::text || clock_timestamp()::text || pg_backend_pid()::text));

CREATE TABLE stats_versions (
    owner_id  BIGINT PRIMARY KEY,
    version   BIGINT NOT NULL
);

CREATE TABLE mailing_stats (
    mailing_id          BIGINT      PRIMARY KEY REFERENCES mailings (id) ON DELETE CASCADE,
    attempted           BIGINT      NOT NULL,
    succeeded           BIGINT      NOT NULL,
    failed              BIGINT      NOT NULL,
    recipients_reached  BIGINT      NOT NULL DEFAULT 0,
    first_attempt_at    TIMESTAMPTZ NOT NULL,
    last_attempt_at     TIMESTAMPTZ NOT NULL
);

-- day: the UTC date of attempted_at. recipients_reached counts the recipients whose first
-- success fell on that day, so days add up to the mailing's total.
CREATE TABLE mailing_day_stats (
    mailing_id          BIGINT      NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    day                 DATE        NOT NULL,
    attempted           BIGINT      NOT NULL,
    succeeded           BIGINT      NOT NULL,
    failed              BIGINT      NOT NULL,
    recipients_reached  BIGINT      NOT NULL DEFAULT 0,
    first_attempt_at    TIMESTAMPTZ NOT NULL,
    last_attempt_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (mailing_id, day)
);
CREATE INDEX mailing_day_stats_day ON mailing_day_stats (day);

-- One row per (mailing, recipient) with at least one successful attempt: the first success.
CREATE TABLE stats_reached (
    mailing_id  BIGINT      NOT NULL REFERENCES mailings (id) ON DELETE CASCADE,
    client_id   BIGINT      NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    reached_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (mailing_id, client_id)
);
CREATE INDEX stats_reached_client ON stats_reached (client_id);
CREATE INDEX stats_reached_time ON stats_reached (reached_at);

CREATE FUNCTION stats_bump(owner BIGINT) RETURNS void LANGUAGE sql AS $$
    INSERT INTO stats_versions (owner_id, version) VALUES (owner, 1)
    ON CONFLICT (owner_id) DO UPDATE SET version = stats_versions.version + 1;
$$;

CREATE FUNCTION attempts_stats() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ok   BIGINT := CASE WHEN NEW.status = 'success' THEN 1 ELSE 0 END;
    d    DATE := (NEW.attempted_at AT TIME ZONE 'UTC')::date;
BEGIN
    INSERT INTO mailing_stats AS s (mailing_id, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, 1, ok, 1 - ok, NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = s.attempted + 1,
        succeeded = s.succeeded + ok,
        failed = s.failed + 1 - ok,
        first_attempt_at = LEAST(s.first_attempt_at, NEW.attempted_at),
        last_attempt_at = GREATEST(s.last_attempt_at, NEW.attempted_at);
    INSERT INTO mailing_day_stats AS s (mailing_id, day, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
    VALUES (NEW.mailing_id, d, 1, ok, 1 - ok, NEW.attempted_at, NEW.attempted_at)
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = s.attempted + 1,
        succeeded = s.succeeded + ok,
        failed = s.failed + 1 - ok,
        first_attempt_at = LEAST(s.first_attempt_at, NEW.attempted_at),
        last_attempt_at = GREATEST(s.last_attempt_at, NEW.attempted_at);
    IF ok = 1 AND NEW.client_id IS NOT NULL THEN
        INSERT INTO stats_reached (mailing_id, client_id, reached_at)
        VALUES (NEW.mailing_id, NEW.client_id, NEW.attempted_at)
        ON CONFLICT DO NOTHING;
    END IF;
    PERFORM stats_bump(owner_id) FROM mailings WHERE id = NEW.mailing_id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER attempts_stats AFTER INSERT ON attempts
    FOR EACH ROW EXECUTE FUNCTION attempts_stats();

CREATE FUNCTION stats_reached_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE mailing_stats SET recipients_reached = recipients_reached + 1
         WHERE mailing_id = NEW.mailing_id;
        UPDATE mailing_day_stats SET recipients_reached = recipients_reached + 1
         WHERE mailing_id = NEW.mailing_id AND day = (NEW.reached_at AT TIME ZONE 'UTC')::date;
    ELSE
        -- A deleted recipient no longer counts as reached (the same as a GROUP BY over
        -- attempts, whose client_id becomes NULL).
        UPDATE mailing_stats SET recipients_reached = recipients_reached - 1
         WHERE mailing_id = OLD.mailing_id;
        UPDATE mailing_day_stats SET recipients_reached = recipients_reached - 1
         WHERE mailing_id = OLD.mailing_id AND day = (OLD.reached_at AT TIME ZONE 'UTC')::date;
        PERFORM stats_bump(owner_id) FROM mailings WHERE id = OLD.mailing_id;
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER stats_reached_change AFTER INSERT OR DELETE ON stats_reached
    FOR EACH ROW EXECUTE FUNCTION stats_reached_change();

CREATE FUNCTION mailings_stats_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_bump(OLD.owner_id);
    IF TG_OP = 'UPDATE' THEN
        PERFORM stats_bump(NEW.owner_id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER mailings_stats_delete AFTER DELETE ON mailings
    FOR EACH ROW EXECUTE FUNCTION mailings_stats_change();
CREATE TRIGGER mailings_stats_move AFTER UPDATE OF owner_id ON mailings
    FOR EACH ROW WHEN (NEW.owner_id IS DISTINCT FROM OLD.owner_id)
    EXECUTE FUNCTION mailings_stats_change();

-- `stats --by user` shows the owner's email.
CREATE FUNCTION accounts_stats_email() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM stats_bump(NEW.id);
    RETURN NULL;
END;
$$;
CREATE TRIGGER accounts_stats_email AFTER UPDATE OF email ON accounts
    FOR EACH ROW WHEN (NEW.email IS DISTINCT FROM OLD.email)
    EXECUTE FUNCTION accounts_stats_email();

-- Counters for attempts recorded before this migration.
INSERT INTO mailing_stats (mailing_id, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
SELECT mailing_id, count(*), count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'failure'), min(attempted_at), max(attempted_at)
  FROM attempts GROUP BY mailing_id;
INSERT INTO mailing_day_stats (mailing_id, day, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
SELECT mailing_id, (attempted_at AT TIME ZONE 'UTC')::date, count(*),
       count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE status = 'failure'),
       min(attempted_at), max(attempted_at)
  FROM attempts GROUP BY 1, 2;
INSERT INTO stats_reached (mailing_id, client_id, reached_at)
SELECT mailing_id, client_id, min(attempted_at) FROM attempts
 WHERE status = 'success' AND client_id IS NOT NULL GROUP BY mailing_id, client_id;
