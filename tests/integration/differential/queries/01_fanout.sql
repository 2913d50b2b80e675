-- Plain fan-out, filters on non-key columns, IN lists over several shards, and single-shard sanity
-- checks (statements with the shard key, which shardgate routes to one shard today).

-- Single shard: shard key given, reference table.
-- @single-shard
SELECT * FROM users WHERE id = 0;
-- @single-shard
SELECT * FROM users WHERE id = 9223372036854775807;
-- @single-shard
SELECT * FROM users WHERE id = -9223372036854775808;
-- @single-shard
-- @ordered
SELECT id, amount, status FROM orders WHERE user_id = 0 ORDER BY id;
-- @single-shard
SELECT count(*), sum(amount), max(created_at) FROM orders WHERE user_id = 9223372036854775807;
-- @single-shard
-- @ordered
SELECT * FROM countries ORDER BY code;
-- @single-shard
SELECT * FROM countries WHERE region = 'Europe';
-- @single-shard
SELECT * FROM events WHERE id = 0;
-- @single-shard
SELECT * FROM events WHERE id = 2999999;
-- @single-shard
-- @ordered
SELECT u.name, o.id, o.amount FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = 0 ORDER BY o.id;

-- Plain fan-out.
-- @must-answer
SELECT * FROM users;
-- @must-answer
SELECT id, name FROM users;
-- @must-answer
SELECT * FROM orders;
-- @must-answer
SELECT * FROM events;
-- @must-answer
SELECT * FROM typed;
-- @must-answer
SELECT id, user_id, amount FROM orders WHERE status = 'paid';
-- @must-answer
SELECT * FROM users WHERE country = 'fr';
SELECT * FROM users WHERE age > 100;
SELECT id FROM users WHERE name ILIKE '%é%';
SELECT * FROM users WHERE country IS NULL;
SELECT * FROM users WHERE active;
SELECT id, score FROM users WHERE score < 0;
SELECT id, amount * qty AS total FROM orders WHERE qty > 40;
SELECT * FROM events WHERE kind = 'Purchase' AND value > 0;
SELECT id, upper(name), length(name), lower(country) FROM users WHERE id % 7 = 3;
SELECT id::text || '-' || coalesce(name, '?') FROM users WHERE active IS NULL;
SELECT id, CASE WHEN age < 18 THEN 'minor' WHEN age >= 18 THEN 'adult' END AS bracket FROM users;
SELECT u.*, 'const' AS c, NULL::int AS n FROM users u WHERE u.age = 42;
SELECT * FROM orders WHERE created_at BETWEEN '2020-01-01' AND '2020-02-01';
SELECT * FROM orders WHERE discount IS NOT NULL AND discount < -90;
SELECT id, name FROM users WHERE name = ANY (ARRAY['alice', 'Alice', 'ALICE']);
SELECT id FROM users WHERE name IN ('Émile', 'émile', 'zoë', 'Zoe');
SELECT 1 AS one, id FROM users WHERE false;
SELECT * FROM users LIMIT 0;

-- IN lists and ranges over several shards.
SELECT * FROM users WHERE id IN (0, 9223372036854775807, -9223372036854775808);
SELECT * FROM orders WHERE user_id IN (0, 9223372036854775807, -9223372036854775808, 1, 2, 3);
SELECT * FROM events WHERE id IN (0, 2999999, 1000000, 999999, 1999999, 2000000);
SELECT * FROM users WHERE id = ANY (ARRAY[0, 9223372036854775807, -9223372036854775808]);
SELECT * FROM users WHERE id = 0 OR id = 9223372036854775807;
SELECT * FROM users WHERE id BETWEEN -100 AND 100;
SELECT * FROM users WHERE id <> 0;
SELECT * FROM events WHERE id >= 990000 AND id < 2010000;
SELECT * FROM events WHERE id < 500000;

-- Every type in a filter.
SELECT * FROM typed WHERE c_float8 = 'NaN';
SELECT * FROM typed WHERE c_numeric = 'NaN' OR c_float4 = 'Infinity';
SELECT id, c_text FROM typed WHERE c_text IS NULL;
SELECT * FROM typed WHERE grp IS NULL;
SELECT id, c_bytea, c_uuid FROM typed WHERE c_bytea = '\x';
SELECT id, c_timestamptz FROM typed WHERE c_timestamptz > '2030-01-01';
SELECT id, c_interval FROM typed WHERE c_interval < '0';
SELECT id, c_float8, c_float4 FROM typed WHERE c_float8 = 0 OR c_float4 = 0;
SELECT id, c_date, c_time FROM typed WHERE c_date < '1000-01-01' OR c_time = '24:00:00';
SELECT id, c_int2, c_int4, c_int8 FROM typed WHERE c_int2 = -32768 OR c_int4 = 2147483647 OR c_int8 = -9223372036854775808;
