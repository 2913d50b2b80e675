-- Errors raised by a shard during a fan-out reach the client with Postgres's SQLSTATE.

-- @error
SELECT id, 1 / (age - age) FROM users WHERE age IS NOT NULL;
-- @error
SELECT sum(1 / qty) FROM orders;
-- @error
SELECT id::int FROM users;
-- @error
SELECT no_such_column FROM users;
-- @error
SELECT name::int FROM users WHERE name IS NOT NULL;
-- @error
SELECT id, c_int2 + 32767::int2 FROM typed ORDER BY id;
