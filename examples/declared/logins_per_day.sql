-- The one migration of the declared projection logins_per_day
-- (examples/declared/logins_per_day.conf): its table, and the daemon
-- role's rights on it (sql/V007).
CREATE TABLE IF NOT EXISTS read_model.logins_per_day (
    day    date PRIMARY KEY,
    logins bigint NOT NULL
);
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON read_model.logins_per_day TO projectord;
