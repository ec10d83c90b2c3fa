ALTER TABLE users DROP COLUMN legacy_notes;
DELETE FROM orders WHERE status = 'test';
