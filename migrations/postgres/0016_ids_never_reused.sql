-- Issue 18: ids of clients and mailings are never reused. SQLite needed AUTOINCREMENT for
-- that (its 0016 rebuilds the tables); PostgreSQL identity columns are sequences, which never
-- hand out a value twice, so nothing changes here. Kept so both backends number alike.
SELECT 1;
