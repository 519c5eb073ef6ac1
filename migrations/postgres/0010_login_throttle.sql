-- Login throttling reserves a try before the password is checked, in one upsert on this row
-- (so parallel logins cannot all pass a "fewer than 5?" check). Replaces login_failures.
CREATE TABLE login_throttle (
    email_key     TEXT        PRIMARY KEY,
    tries         BIGINT      NOT NULL,
    window_start  TIMESTAMPTZ NOT NULL
);
DROP TABLE login_failures;
