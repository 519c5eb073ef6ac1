-- Nothing looks up first-success markers by client any more (since 0015 they stay when their
-- client is deleted), and every letter sent paid for this index. The primary key
-- (mailing_id, client_id) and the reached_at index serve every query.
DROP INDEX IF EXISTS stats_reached_client;
