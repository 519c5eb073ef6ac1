-- `deliveries` and the two append-only logs, `attempts` and `stats_reached`, lose their
-- foreign keys; triggers on the parent tables do what the keys' ON DELETE actions did.
--
-- Why: a foreign key checks every inserted row with a query of its own on the parent row, and
-- a send inserts a delivery row, an attempt and a first-success marker per letter. Those six
-- checks per letter were a third of PostgreSQL's work in a send (benches/README.md): 20,000
-- letters spent ~400 ms in them out of ~1.2 s.
--
-- What keeps the rows consistent without the keys:
-- - Delivery rows are made from `mailing_clients` (which keeps its keys) in transactions that
--   hold an advisory lock shared (deliveries::materialise), which the triggers below take
--   exclusive before they delete. A deletion waits for the rows being made to commit, then
--   deletes them too; rows started after it wait for it, then no longer see the recipient.
--   (Locking the recipient rows read would do the same, but would write a lock on every one
--   of them on every run, also when all of them have their delivery row already.)
-- - Attempts and markers are written for deliveries the sender holds. It updates the delivery
--   row before it inserts the attempt, and the triggers delete deliveries first, so a client
--   deleted while its letter is out waits for the sender's commit and its attempts are then
--   found. A mailing deleted meanwhile still fails the sender's turn (`mailing_stats` keeps its
--   key, and the stats trigger writes it).
-- - Deleting goes per statement, not per row: one pass over `attempts` and `deliveries` for a
--   whole batch of deleted clients, where ON DELETE scanned them once per client.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_client_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_mailing_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_client_id_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_mailing_id_fkey;
ALTER TABLE stats_reached DROP CONSTRAINT stats_reached_client_id_fkey;
ALTER TABLE stats_reached DROP CONSTRAINT stats_reached_mailing_id_fkey;

-- A deleted recipient's deliveries go; its attempts stay, without the recipient (as ON DELETE
-- SET NULL did); it no longer counts as reached (the marker's delete trigger of 0006 updates
-- the counters).
CREATE FUNCTION clients_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7881696737121037313);  -- DELIVERY_ROWS_LOCK in deliveries.rs
    DELETE FROM deliveries WHERE client_id IN (SELECT id FROM old_clients);
    UPDATE attempts SET client_id = NULL WHERE client_id IN (SELECT id FROM old_clients);
    DELETE FROM stats_reached WHERE client_id IN (SELECT id FROM old_clients);
    RETURN NULL;
END;
$$;
CREATE TRIGGER clients_delete_rows AFTER DELETE ON clients
    REFERENCING OLD TABLE AS old_clients
    FOR EACH STATEMENT EXECUTE FUNCTION clients_delete_rows();

-- A deleted mailing takes its deliveries, attempts and markers with it (as ON DELETE CASCADE
-- did).
CREATE FUNCTION mailings_delete_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7881696737121037313);  -- DELIVERY_ROWS_LOCK in deliveries.rs
    DELETE FROM deliveries WHERE mailing_id IN (SELECT id FROM old_mailings);
    DELETE FROM attempts WHERE mailing_id IN (SELECT id FROM old_mailings);
    DELETE FROM stats_reached WHERE mailing_id IN (SELECT id FROM old_mailings);
    RETURN NULL;
END;
$$;
CREATE TRIGGER mailings_delete_rows AFTER DELETE ON mailings
    REFERENCING OLD TABLE AS old_mailings
    FOR EACH STATEMENT EXECUTE FUNCTION mailings_delete_rows();
