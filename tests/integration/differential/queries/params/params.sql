-- Parameterised queries for the extended protocol (psycopg Parse/Bind/Execute with text and binary
-- results; asyncpg named prepared statements with binary results). @params gives $1, $2, ...

-- @single-shard
-- @params [0]
SELECT * FROM users WHERE id = $1;
-- @single-shard
-- @ordered
-- @params [0]
SELECT u.id, o.id, o.amount FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 ORDER BY o.id;
-- @ordered
-- @params ["fr"]
SELECT * FROM users WHERE country = $1 ORDER BY id;
-- @ordered
-- @must-answer
-- @params [45, 20]
SELECT id, amount FROM orders WHERE qty > $1 ORDER BY id LIMIT $2;
-- @ordered
-- @params [10, 5]
SELECT id FROM users ORDER BY id LIMIT $1 OFFSET $2;
-- @must-answer
-- @params ["paid"]
SELECT count(*), sum(amount), avg(amount) FROM orders WHERE status = $1;
-- @ordered
-- @params [50]
SELECT country, count(*) FROM users WHERE age > $1 GROUP BY country ORDER BY country NULLS FIRST;
-- @params [[0, 9223372036854775807, -9223372036854775808]]
SELECT * FROM users WHERE id = ANY($1::bigint[]);
-- @params [0, 9223372036854775807, -9223372036854775808]
SELECT count(*) FROM users WHERE id IN ($1, $2, $3);
-- @ordered
-- @params [100.5]
SELECT id, c_float8 FROM typed WHERE c_float8 > $1 ORDER BY c_float8, id;
-- @ordered
-- @params ["0"]
SELECT id, c_numeric FROM typed WHERE c_numeric < $1::text::numeric ORDER BY c_numeric, id LIMIT 50;
-- @ordered
-- @params ["a%"]
SELECT id, c_text FROM typed WHERE c_text LIKE $1 ORDER BY c_text, id;
-- @ordered
-- @params [3]
SELECT grp, bool_and(c_bool), bool_or(c_bool) FROM typed WHERE grp <> $1 GROUP BY grp ORDER BY grp NULLS FIRST;
-- @ordered
-- @params [true, 20, 25]
SELECT id, name FROM users WHERE active = $1 AND age BETWEEN $2 AND $3 ORDER BY id;
-- @params ["click"]
SELECT $1::text AS label, count(*) FROM events WHERE kind = $1;
-- @ordered
-- @params ["1970-01-01 00:00:00+00"]
SELECT id, c_timestamptz FROM typed WHERE c_timestamptz < $1::text::timestamptz ORDER BY c_timestamptz DESC, id LIMIT 20;
-- @params ["1000.50"]
SELECT count(DISTINCT user_id) FROM orders WHERE amount > $1::text::numeric;
-- @ordered
-- @params [5]
SELECT id, c_bytea, c_uuid, c_interval, c_time, c_date, c_timestamp FROM typed WHERE grp = $1 ORDER BY id;
-- @ordered
-- @params [97]
SELECT * FROM typed WHERE id % $1 = 0 ORDER BY id;
-- @ordered
-- @params [50]
SELECT status, string_agg(id::text, '|' ORDER BY id) FROM orders WHERE qty = $1 GROUP BY status ORDER BY status NULLS FIRST;
-- @unordered-array 1
-- @params [49]
SELECT status, array_agg(id) FROM orders WHERE qty = $1 GROUP BY status;
-- @ordered
-- @params [999000, 1001000]
SELECT id FROM events WHERE id >= $1 AND id < $2 ORDER BY id;
-- @params [2]
SELECT min(c_int2), max(c_int4), sum(c_int8), avg(c_float4), sum(c_numeric) FROM typed WHERE grp = $1;
-- @ordered
-- @params [4]
SELECT grp, array_agg(c_int4 ORDER BY c_int4 DESC NULLS LAST, id), array_agg(c_text ORDER BY c_text, id), string_agg(c_text, ' | ' ORDER BY id) FROM typed WHERE grp >= $1 GROUP BY grp ORDER BY grp;
-- @params [6]
SELECT array_agg(c_bytea ORDER BY c_bytea NULLS FIRST, id), string_agg(c_bytea, '\x00'::bytea ORDER BY id), array_agg(c_numeric ORDER BY id), array_agg(c_float8 ORDER BY c_float8, id) FROM typed WHERE grp = $1;
-- @params [7]
SELECT array_agg(DISTINCT c_date ORDER BY c_date DESC), string_agg(DISTINCT c_text, ',' ORDER BY c_text), avg(c_float4) FROM typed WHERE grp = $1;
-- @params [40]
SELECT array_agg(name ORDER BY name, id), array_agg(ARRAY[age::bigint, id] ORDER BY id) FROM users WHERE age > $1 AND age < 43;
-- @params ["NaN"]
SELECT count(*) FROM typed WHERE c_float8 = $1::text::float8;
-- @ordered
-- @params [25]
SELECT id, age FROM users ORDER BY age DESC NULLS LAST, id LIMIT $1;
-- @ordered
-- @params [1]
SELECT grp, stddev(c_int4), variance(c_int8), avg(c_int2) FROM typed WHERE grp >= $1 GROUP BY grp ORDER BY grp;
-- @must-refuse
-- @params [10]
SELECT id, row_number() OVER (ORDER BY id) FROM users WHERE age > $1;
-- @error
-- @params [0]
SELECT sum(qty / $1) FROM orders;
-- An untyped parameter in the select list, sorted or grouped (the merge's collation probes must
-- leave its type to Postgres).
-- @ordered
-- @must-answer
-- @params ["hello"]
SELECT $1 AS x, id FROM users ORDER BY x, id LIMIT 3;
-- @ordered
-- @params ["hello"]
SELECT $1 AS x, count(*) FROM users GROUP BY 1 ORDER BY 1;
