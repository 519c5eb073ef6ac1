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

ALTER TABLE suppressions DROP CONSTRAINT suppressions_reason_check;
UPDATE suppressions SET reason = 'refused' WHERE reason = 'bounced';
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason_check
    CHECK (reason IN ('unsubscribed', 'refused', 'bounced', 'complained', 'manual'));

ALTER TABLE attempts DROP CONSTRAINT attempts_status_check;
ALTER TABLE attempts ADD CONSTRAINT attempts_status_check
    CHECK (status IN ('success', 'failure', 'bounced', 'complained'));

ALTER TABLE mailing_stats ADD COLUMN bounced BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailing_stats ADD COLUMN complained BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailing_day_stats ADD COLUMN bounced BIGINT NOT NULL DEFAULT 0;
ALTER TABLE mailing_day_stats ADD COLUMN complained BIGINT NOT NULL DEFAULT 0;

-- The statement trigger of 0006, with reports counted apart from tries.
CREATE OR REPLACE FUNCTION attempts_stats_batch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mailing_stats AS s (mailing_id, attempted, succeeded, failed, bounced, complained,
                                    first_attempt_at, last_attempt_at)
    SELECT mailing_id,
           count(*) FILTER (WHERE status NOT IN ('bounced', 'complained')),
           count(*) FILTER (WHERE status = 'success'),
           count(*) FILTER (WHERE status NOT IN ('success', 'bounced', 'complained')),
           count(*) FILTER (WHERE status = 'bounced'),
           count(*) FILTER (WHERE status = 'complained'),
           min(attempted_at), max(attempted_at)
      FROM new_attempts GROUP BY mailing_id ORDER BY mailing_id
    ON CONFLICT (mailing_id) DO UPDATE SET
        attempted = s.attempted + EXCLUDED.attempted,
        succeeded = s.succeeded + EXCLUDED.succeeded,
        failed = s.failed + EXCLUDED.failed,
        bounced = s.bounced + EXCLUDED.bounced,
        complained = s.complained + EXCLUDED.complained,
        first_attempt_at = LEAST(s.first_attempt_at, EXCLUDED.first_attempt_at),
        last_attempt_at = GREATEST(s.last_attempt_at, EXCLUDED.last_attempt_at);
    INSERT INTO mailing_day_stats AS s (mailing_id, day, attempted, succeeded, failed, bounced,
                                        complained, first_attempt_at, last_attempt_at)
    SELECT mailing_id, (attempted_at AT TIME ZONE 'UTC')::date,
           count(*) FILTER (WHERE status NOT IN ('bounced', 'complained')),
           count(*) FILTER (WHERE status = 'success'),
           count(*) FILTER (WHERE status NOT IN ('success', 'bounced', 'complained')),
           count(*) FILTER (WHERE status = 'bounced'),
           count(*) FILTER (WHERE status = 'complained'),
           min(attempted_at), max(attempted_at)
      FROM new_attempts GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (mailing_id, day) DO UPDATE SET
        attempted = s.attempted + EXCLUDED.attempted,
        succeeded = s.succeeded + EXCLUDED.succeeded,
        failed = s.failed + EXCLUDED.failed,
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

-- digest: SHA-256 (hex) of what identifies the report (see src/bounce/mod.rs).
CREATE TABLE bounce_reports (
    digest       TEXT        PRIMARY KEY,
    owner_id     BIGINT      NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_key    TEXT        NOT NULL,
    mailing_id   BIGINT      NOT NULL,
    client_id    BIGINT      NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('hard', 'soft', 'complaint')),
    received_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX bounce_reports_address ON bounce_reports (owner_id, email_key, kind, received_at);
