-- The sender's claims, one small index per kind of due row instead of one index over every
-- delivery. A claim reads only rows it can take, in a fixed order, whatever the planner's
-- statistics say; with the old index a stale estimate ("every row is pending", true right
-- after a mailing is prepared) could make each claim walk past all the rows already sent.
DROP INDEX deliveries_work;
-- Never tried: taken in id order.
CREATE INDEX deliveries_fresh ON deliveries (mailing_id, id)
    WHERE state = 'pending' AND next_try_at IS NULL;
-- Waiting for a retry: taken once their time has come.
CREATE INDEX deliveries_retry ON deliveries (mailing_id, next_try_at)
    WHERE state = 'pending' AND next_try_at IS NOT NULL;
-- Claimed: taken over once the lease has lapsed (the claimer died).
CREATE INDEX deliveries_leased ON deliveries (mailing_id, lease_until)
    WHERE state = 'sending';
