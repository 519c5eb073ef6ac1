-- Issue 18 (points 5 and 7): history that survives deletes, deferred tries told from final
-- failures, and a folded search key for clients.
--
-- 1. attempts: status may be 'deferred' (a 4xx or no answer, tried again later) beside
--    'success' and 'failure' (final), and 'bounced'/'complained' (from DSN/ARF reports);
--    each row keeps the address and name it was sent to (`email`, `full_name`) and its
--    client_id when the client is deleted. Old 'failure' rows whose reply is not a 5xx were
--    retried: they become 'deferred'.
ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_status_check;
ALTER TABLE attempts ADD COLUMN email TEXT, ADD COLUMN full_name TEXT;
UPDATE attempts a SET email = c.email, full_name = c.full_name FROM clients c WHERE c.id = a.client_id;
UPDATE attempts SET status = 'deferred' WHERE status = 'failure' AND server_response NOT LIKE '5%';
ALTER TABLE attempts ADD CONSTRAINT attempts_status_check
    CHECK (status IN ('success', 'deferred', 'failure', 'bounced', 'complained'));

-- 2. The counters: `deferred` beside `failed` (which now counts final failures only).
ALTER TABLE mailing_stats ADD COLUMN deferred BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailing_day_stats ADD COLUMN deferred BIGINT NOT NULL DEFAULT 0;
UPDATE mailing_stats s SET deferred = d.n, failed = GREATEST(s.failed - d.n, 0)
  FROM (SELECT mailing_id, count(*) AS n FROM attempts WHERE status = 'deferred' GROUP BY mailing_id) d
 WHERE s.mailing_id = d.mailing_id;
UPDATE mailing_day_stats s SET deferred = d.n, failed = GREATEST(s.failed - d.n, 0)
  FROM (SELECT mailing_id, (attempted_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n
          FROM attempts WHERE status = 'deferred' GROUP BY 1, 2) d
 WHERE s.mailing_id = d.mailing_id AND s.day = d.day;

-- The statement trigger's function of 0006, counting `failed` and `deferred` by status.
CREATE OR REPLACE FUNCTION attempts_stats_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_stats AS s (mailing_id, attempted, succeeded, failed, deferred, bounced,
                                    complained, first_attempt_at, last_attempt_at)
    SELECT mailing_id,
           count(*) FILTER (WHERE status NOT IN ('bounced', 'complained')),
           count(*) FILTER (WHERE status = 'success'),
           count(*) FILTER (WHERE status = 'failure'),
           count(*) FILTER (WHERE status = 'deferred'),
           count(*) FILTER (WHERE status = 'bounced'),
           count(*) FILTER (WHERE status = 'complained'),
           min(attempted_at), max(attempted_at)
      FROM new_attempts GROUP BY mailing_id ORDER BY mailing_id
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = s.attempted + EXCLUDED.attempted,
        succeeded = s.succeeded + EXCLUDED.succeeded,
        failed = s.failed + EXCLUDED.failed,
        deferred = s.deferred + EXCLUDED.deferred,
        bounced = s.bounced + EXCLUDED.bounced,
        complained = s.complained + EXCLUDED.complained,
        first_attempt_at = LEAST(s.first_attempt_at, EXCLUDED.first_attempt_at),
        last_attempt_at = GREATEST(s.last_attempt_at, EXCLUDED.last_attempt_at);
    INSERT INTO mailing_day_stats AS s (mailing_id, day, attempted, succeeded, failed, deferred,
                                        bounced, complained, first_attempt_at, last_attempt_at)
    SELECT mailing_id, (attempted_at AT TIME ZONE 'UTC')::date,
           count(*) FILTER (WHERE status NOT IN ('bounced', 'complained')),
           count(*) FILTER (WHERE status = 'success'),
           count(*) FILTER (WHERE status = 'failure'),
           count(*) FILTER (WHERE status = 'deferred'),
           count(*) FILTER (WHERE status = 'bounced'),
           count(*) FILTER (WHERE status = 'complained'),
           min(attempted_at), max(attempted_at)
      FROM new_attempts GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = s.attempted + EXCLUDED.attempted,
        succeeded = s.succeeded + EXCLUDED.succeeded,
        failed = s.failed + EXCLUDED.failed,
        deferred = s.deferred + EXCLUDED.deferred,
        bounced = s.bounced + EXCLUDED.bounced,
        complained = s.complained + EXCLUDED.complained,
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

-- 3. A deleted client's deliveries go; its attempts (with client_id) and its first-success
--    markers stay, so recipients_reached never drops below what happened. Markers now go
--    only with their mailing, whose counters go too: no row trigger lowers them any more.
CREATE OR REPLACE FUNCTION clients_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7881696737121037313);  -- DELIVERY_ROWS_LOCK in deliveries.rs
    DELETE FROM deliveries WHERE client_id IN (SELECT id FROM old_clients);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS stats_reached_delete ON stats_reached;

-- 4. clients.search_key: name, email and comment folded (Unicode lower case, accents
--    removed) by mailctl itself (src/db/search.rs), the same on both backends. NULL until
--    filled: the next `clients list --search` folds the rows left NULL.
ALTER TABLE clients ADD COLUMN search_key TEXT;
CREATE INDEX clients_search_key_missing ON clients (id) WHERE search_key IS NULL;
