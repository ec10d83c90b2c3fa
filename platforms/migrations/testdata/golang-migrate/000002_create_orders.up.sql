CREATE TABLE orders (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL,
    status varchar(20) NOT NULL DEFAULT 'new'
);
