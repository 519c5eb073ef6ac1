-- The stats counters of 0005, kept per statement instead of per row: the sender inserts a
-- whole group of attempts in one statement, and a row-level trigger ran four upserts per
-- attempt (and two more updates per first success). The same counters, from the statement's
-- transition table: one upsert per mailing (per mailing and day), one insert of first
-- successes, one version bump per owner. Rows are touched in key order, so concurrent
-- writers cannot deadlock on them.

CREATE FUNCTION attempts_stats_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_stats AS s (mailing_id, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
    SELECT mailing_id, count(*), count(*) FILTER (WHERE status = 'success'),
           count(*) - count(*) FILTER (WHERE status = 'success'), min(attempted_at), max(attempted_at)
      FROM new_attempts GROUP BY mailing_id ORDER BY mailing_id
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = s.attempted + EXCLUDED.attempted,
        succeeded = s.succeeded + EXCLUDED.succeeded,
        failed = s.failed + EXCLUDED.failed,
        first_attempt_at = LEAST(s.first_attempt_at, EXCLUDED.first_attempt_at),
        last_attempt_at = GREATEST(s.last_attempt_at, EXCLUDED.last_attempt_at);
    INSERT INTO mailing_day_stats AS s (mailing_id, day, attempted, succeeded, failed, first_attempt_at, last_attempt_at)
    SELECT mailing_id, (attempted_at AT TIME ZONE 'UTC')::date, count(*),
           count(*) FILTER (WHERE status = 'success'),
           count(*) - count(*) FILTER (WHERE status = 'success'), min(attempted_at), max(attempted_at)
      FROM new_attempts GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = s.attempted + EXCLUDED.attempted,
        succeeded = s.succeeded + EXCLUDED.succeeded,
        failed = s.failed + EXCLUDED.failed,
        first_attempt_at = LEAST(s.first_attempt_at, EXCLUDED.first_attempt_at),
        last_attempt_at = GREATEST(s.last_attempt_at, EXCLUDED.last_attempt_at);
    INSERT INTO stats_reached (mailing_id, client_id, reached_at)
    SELECT mailing_id, client_id, min(attempted_at) FROM new_attempts
     WHERE status = 'success' AND client_id IS NOT NULL
     GROUP BY mailing_id, client_id ORDER BY mailing_id, client_id
    ON CONFLICT DO NOTHING;
    PERFORM stats_bump(o.owner_id) FROM (
        SELECT DISTINCT m.owner_id FROM mailings m
         WHERE m.id IN (SELECT mailing_id FROM new_attempts) ORDER BY m.owner_id) o;
    RETURN NULL;
END;
$$;
DROP TRIGGER attempts_stats ON attempts;
CREATE TRIGGER attempts_stats AFTER INSERT ON attempts
    REFERENCING NEW TABLE AS new_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION attempts_stats_batch();
DROP FUNCTION attempts_stats();

-- First successes: counted per statement; a deleted recipient (row by row, as before).
CREATE FUNCTION stats_reached_insert_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE mailing_stats s SET recipients_reached = s.recipients_reached + n.n
      FROM (SELECT mailing_id, count(*) AS n FROM new_reached GROUP BY mailing_id) n
     WHERE s.mailing_id = n.mailing_id;
    UPDATE mailing_day_stats s SET recipients_reached = s.recipients_reached + n.n
      FROM (SELECT mailing_id, (reached_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
              FROM new_reached GROUP BY 1, 2) n
     WHERE s.mailing_id = n.mailing_id AND s.day = n.day;
    RETURN NULL;
END;
$$;
-- The insert trigger keeps the old name: `stats --rebuild` turns it off while it loads markers.
DROP TRIGGER stats_reached_change ON stats_reached;
CREATE TRIGGER stats_reached_change AFTER INSERT ON stats_reached
    REFERENCING NEW TABLE AS new_reached
    FOR EACH STATEMENT EXECUTE FUNCTION stats_reached_insert_batch();
CREATE TRIGGER stats_reached_delete AFTER DELETE ON stats_reached
    FOR EACH ROW EXECUTE FUNCTION stats_reached_change();
