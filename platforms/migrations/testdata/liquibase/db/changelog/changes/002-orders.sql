--liquibase formatted sql

--changeset bob:2
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, status varchar(20) NOT NULL DEFAULT 'new');
--rollback DROP TABLE orders;

--changeset bob:orders-status-index
CREATE INDEX orders_status_idx ON orders (status);
--rollback DROP INDEX orders_status_idx;
