-- The bad release adds an email column. Comments like "DROP TABLE users;" are ignored.
ALTER TABLE users ADD COLUMN email varchar(255);
CREATE INDEX users_email_idx ON users (email);
INSERT INTO users (id, name) VALUES (0, 'system; DELETE FROM users');
