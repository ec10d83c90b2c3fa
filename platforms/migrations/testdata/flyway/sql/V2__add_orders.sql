CREATE TABLE orders (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    status varchar(20) NOT NULL DEFAULT 'new'
);
