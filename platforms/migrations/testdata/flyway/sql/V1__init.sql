CREATE TABLE users (
    id bigint PRIMARY KEY,
    name varchar(100) NOT NULL,
    legacy_notes text
);
