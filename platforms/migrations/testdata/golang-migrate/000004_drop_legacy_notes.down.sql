ALTER TABLE users ADD COLUMN legacy_notes text;
