-- Transactions through psql: COMMIT, ROLLBACK, errors aborting a block, savepoints, isolation levels,
-- and the implicit transaction of a multi-statement query string (\;).
SET client_min_messages = warning;
DROP TABLE IF EXISTS psqlt_accounts;
RESET client_min_messages;
CREATE TABLE psqlt_accounts (id int PRIMARY KEY, balance int NOT NULL CHECK (balance >= 0));
INSERT INTO psqlt_accounts VALUES (1, 100), (2, 50);
BEGIN;
UPDATE psqlt_accounts SET balance = balance - 30 WHERE id = 1;
UPDATE psqlt_accounts SET balance = balance + 30 WHERE id = 2;
COMMIT;
SELECT * FROM psqlt_accounts ORDER BY id;
BEGIN;
UPDATE psqlt_accounts SET balance = 0;
SELECT sum(balance) FROM psqlt_accounts;
ROLLBACK;
SELECT * FROM psqlt_accounts ORDER BY id;
-- An error aborts the whole block; COMMIT then reports ROLLBACK.
BEGIN;
UPDATE psqlt_accounts SET balance = balance + 5 WHERE id = 2;
UPDATE psqlt_accounts SET balance = balance - 1000 WHERE id = 1;
\echo SQLSTATE=:SQLSTATE
SELECT 1;
\echo SQLSTATE=:SQLSTATE
COMMIT;
SELECT * FROM psqlt_accounts ORDER BY id;
-- Savepoints.
BEGIN;
INSERT INTO psqlt_accounts VALUES (3, 10);
SAVEPOINT s1;
INSERT INTO psqlt_accounts VALUES (4, 20);
ROLLBACK TO SAVEPOINT s1;
INSERT INTO psqlt_accounts VALUES (5, 30);
SAVEPOINT s2;
INSERT INTO psqlt_accounts VALUES (5, 31);
ROLLBACK TO s2;
RELEASE SAVEPOINT s1;
COMMIT;
SELECT * FROM psqlt_accounts ORDER BY id;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SHOW transaction_isolation;
SELECT count(*) FROM psqlt_accounts;
END;
BEGIN READ ONLY;
INSERT INTO psqlt_accounts VALUES (9, 9);
\echo SQLSTATE=:SQLSTATE
ROLLBACK;
-- One query string, one implicit transaction: the error undoes the first INSERT as well.
INSERT INTO psqlt_accounts VALUES (6, 60) \; SELECT 1/0 \; INSERT INTO psqlt_accounts VALUES (7, 70);
SELECT * FROM psqlt_accounts ORDER BY id;
INSERT INTO psqlt_accounts VALUES (6, 60) \; INSERT INTO psqlt_accounts VALUES (7, 70);
SELECT * FROM psqlt_accounts ORDER BY id;
-- Transaction statements without a transaction.
COMMIT;
ROLLBACK;
SAVEPOINT nowhere;
DROP TABLE psqlt_accounts;
