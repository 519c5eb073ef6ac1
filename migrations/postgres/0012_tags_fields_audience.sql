-- Issue 15: tags and custom fields of clients, and a mailing's audience.
-- tags: the client's tags, lower-cased, sorted, each between semicolons (';news;vip;', or ''),
-- so "carries tag t" is a substring test for ';t;'. fields: a JSON object of text values with
-- lower-case keys (text, as on SQLite; cast to jsonb where a key is looked up). A mailing's
-- audience (all clients, or any of its tags, same ';t;' form) is resolved into mailing_clients
-- when it is made and at the start of every send-due run.
ALTER TABLE clients ADD COLUMN tags TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN fields TEXT NOT NULL DEFAULT '{}';
ALTER TABLE mailings ADD COLUMN all_clients BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE mailings ADD COLUMN audience_tags TEXT NOT NULL DEFAULT '';
