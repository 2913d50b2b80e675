-- Aggregates: every one the issue lists, DISTINCT aggregates, string_agg/array_agg with and without
-- their own ORDER BY, GROUP BY columns and expressions, HAVING, ORDER BY aggregates, empty inputs
-- and NULL-only groups.

-- @must-answer
SELECT count(*) FROM users;
-- @must-answer
SELECT count(*) FROM orders;
-- @must-answer
SELECT count(*) FROM events;
-- @must-answer
SELECT sum(amount) FROM orders;
-- @must-answer
SELECT sum(qty) FROM orders;
-- @must-answer
SELECT count(*), sum(age) FROM users;
SELECT count(age), count(DISTINCT age), count(*) FROM users;
SELECT sum(id) FROM users;
SELECT avg(id) FROM users;
SELECT min(id), max(id) FROM users;
SELECT avg(amount), avg(qty), avg(discount) FROM orders;
SELECT sum(discount), count(discount) FROM orders;
SELECT sum(value), avg(value), min(value), max(value) FROM events;
SELECT min(amount), max(amount), min(created_at), max(created_at) FROM orders;
SELECT min(name), max(name), min(created), max(created) FROM users;
SELECT bool_and(active), bool_or(active), every(active) FROM users;
SELECT stddev(amount), stddev_samp(amount), stddev_pop(amount), variance(amount), var_samp(amount), var_pop(amount) FROM orders;
SELECT stddev(qty), variance(qty), stddev_pop(qty), var_pop(qty) FROM orders;
SELECT stddev(age), var_samp(age), stddev(score), var_pop(score) FROM users;
SELECT count(DISTINCT country), count(DISTINCT nick) FROM users;
SELECT count(DISTINCT user_id) FROM orders;
SELECT sum(DISTINCT qty), avg(DISTINCT qty), count(DISTINCT qty) FROM orders;
SELECT count(DISTINCT status), min(status), max(status) FROM orders;
SELECT count(DISTINCT (status, qty)) FROM orders;
SELECT sum(amount * qty), avg(qty::numeric / 3), max(length(status)) FROM orders;
SELECT count(*) + 1 AS n, sum(qty) * 2 AS q, max(amount) - min(amount) AS spread FROM orders;
SELECT round(avg(amount), 2), coalesce(sum(discount), 0) FROM orders;
SELECT count(*) FROM users WHERE age IS NULL;
SELECT count(*) FILTER (WHERE active), count(*) FILTER (WHERE NOT active), sum(age) FILTER (WHERE country = 'de') FROM users;

-- string_agg / array_agg: without their own ORDER BY any order is right (compared sorted) ...
-- @unordered-list 0
SELECT string_agg(name, '|') FROM users WHERE age > 105;
-- @unordered-list 1
SELECT country, string_agg(name, '|') FROM users WHERE age > 100 GROUP BY country;
-- @unordered-array 0
SELECT array_agg(id) FROM users WHERE age = 42;
-- @unordered-array 1
SELECT status, array_agg(qty) FROM orders WHERE qty > 48 GROUP BY status;
-- @unordered-array 0
SELECT array_agg(nick) FROM users WHERE age < 3;
-- @unordered-array 0
-- @unordered-list 1
SELECT array_agg(c_numeric), string_agg(c_text, '|') FROM typed WHERE grp = 3 AND c_int2 > 20000;
-- ... with it, the order is Postgres's.
SELECT string_agg(name, ', ' ORDER BY name, id) FROM users WHERE age = 42;
SELECT array_agg(id ORDER BY id DESC) FROM users WHERE country = 'fr';
-- @ordered
SELECT country, array_agg(age ORDER BY age NULLS FIRST, id) FROM users GROUP BY country ORDER BY country NULLS FIRST;
SELECT string_agg(DISTINCT kind, '|' ORDER BY kind) FROM events;
SELECT array_agg(DISTINCT status ORDER BY status DESC) FROM orders;
SELECT string_agg(c_text, '|' ORDER BY c_float8 NULLS FIRST, id) FROM typed WHERE grp = 7;
-- Texts that array_out must quote (commas, quotes, backslashes, braces, spaces, "NULL", ''), NULL
-- elements, several keys with DESC and NULLS placement, FILTER, DISTINCT with ORDER BY.
-- @ordered
SELECT country, array_agg(name ORDER BY name NULLS FIRST, id) FROM users WHERE age < 12 GROUP BY country ORDER BY country NULLS FIRST;
SELECT array_agg(nick ORDER BY id DESC), array_agg(name ORDER BY age DESC NULLS FIRST, id) FROM users WHERE age > 100;
SELECT string_agg(name, ' ; ' ORDER BY age DESC NULLS LAST, id), string_agg(nick, ',' ORDER BY nick DESC, id) FROM users WHERE country = 'de';
SELECT array_agg(c_text ORDER BY c_int4 NULLS FIRST, id), array_agg(c_bytea ORDER BY id), string_agg(c_bytea, '\x2c'::bytea ORDER BY id DESC) FROM typed WHERE grp = 5;
-- @ordered
SELECT grp, array_agg(c_float4 ORDER BY c_float4, id), array_agg(c_numeric ORDER BY c_numeric DESC, id) FROM typed GROUP BY grp ORDER BY grp NULLS FIRST;
SELECT array_agg(c_interval ORDER BY c_interval, id), array_agg(c_timestamptz ORDER BY c_date DESC, c_time, id), array_agg(c_uuid ORDER BY c_uuid NULLS FIRST, id) FROM typed WHERE grp = 2;
SELECT array_agg(id ORDER BY id) FILTER (WHERE active), string_agg(name, '|' ORDER BY name DESC, id) FILTER (WHERE NOT active), count(*) FROM users WHERE age = 30;
-- @ordered
SELECT status, array_agg(ARRAY[qty::bigint, user_id] ORDER BY id, user_id) FROM orders WHERE qty > 48 GROUP BY status ORDER BY status;
SELECT array_agg(DISTINCT name ORDER BY name) FROM users WHERE age > 95;
SELECT string_agg(DISTINCT country, ',' ORDER BY country DESC), array_agg(DISTINCT country ORDER BY country NULLS FIRST) FROM users;
-- @ordered
SELECT active, array_agg(DISTINCT age ORDER BY age DESC), string_agg(DISTINCT country, '|') FROM users WHERE age < 30 GROUP BY active ORDER BY active NULLS FIRST;
SELECT bool_and(DISTINCT active), bool_or(DISTINCT active), every(DISTINCT active) FROM users;
SELECT count(name ORDER BY name), min(age ORDER BY id), max(name ORDER BY age) FROM users;
SELECT avg(c_float4), sum(c_float4), avg(c_float8) FROM typed WHERE grp = 3;
-- @ordered
SELECT grp, avg(c_float4), avg(c_float4) FILTER (WHERE c_int2 > 0) FROM typed GROUP BY grp ORDER BY grp NULLS FIRST;

-- GROUP BY columns and expressions.
SELECT country, count(*) FROM users GROUP BY country;
-- @ordered
SELECT country, count(*), sum(score), avg(score), min(age), max(age) FROM users GROUP BY country ORDER BY country NULLS FIRST;
-- @ordered
SELECT status, count(*), sum(amount), avg(amount) FROM orders GROUP BY status ORDER BY status;
-- @ordered
SELECT kind, count(*), sum(value), avg(value), min(at), max(at) FROM events GROUP BY kind ORDER BY kind NULLS LAST;
-- @ordered
SELECT age / 10 AS decade, count(*) FROM users GROUP BY age / 10 ORDER BY decade NULLS FIRST;
-- @ordered
SELECT date_trunc('year', created_at) AS y, count(*), sum(qty) FROM orders GROUP BY 1 ORDER BY 1;
-- @ordered
SELECT extract(dow FROM at) AS dow, count(*) FROM events GROUP BY dow ORDER BY dow;
SELECT lower(country), count(*) FROM users GROUP BY lower(country);
SELECT active, country IS NULL, count(*) FROM users GROUP BY active, country IS NULL;
SELECT qty % 3, status, count(*), max(amount) FROM orders GROUP BY 1, 2;
SELECT user_id, count(*), sum(amount) FROM orders GROUP BY user_id;
-- @ordered
SELECT user_id, count(*) FROM orders GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 10;
-- @ordered
SELECT id % 10 AS bucket, count(*) FROM users GROUP BY bucket ORDER BY bucket;
-- @ordered
SELECT grp, count(DISTINCT c_bool), count(DISTINCT c_text), sum(DISTINCT c_int2) FROM typed GROUP BY grp ORDER BY grp;
-- @ordered
SELECT country, active, count(*), bool_and(age > 18) FROM users GROUP BY country, active ORDER BY country NULLS FIRST, active NULLS FIRST;

-- HAVING.
SELECT country, count(*) FROM users GROUP BY country HAVING count(*) > 150;
-- @ordered
SELECT status, sum(amount) FROM orders GROUP BY status HAVING sum(amount) > 1000000 ORDER BY status;
-- @ordered
SELECT country, avg(age) FROM users GROUP BY country HAVING avg(age) < 55 AND count(*) >= 100 ORDER BY 2, 1;
SELECT kind, count(*) FROM events GROUP BY kind HAVING min(value) < 0 OR kind IS NULL;
SELECT user_id FROM orders GROUP BY user_id HAVING count(*) > 9;
SELECT country FROM users GROUP BY country HAVING bool_or(active) AND NOT bool_and(active);
SELECT country, max(age) - min(age) AS span FROM users GROUP BY country HAVING max(age) - min(age) >= 110;
SELECT 1 AS yes FROM users HAVING count(*) > 0;
SELECT count(*) FROM users HAVING count(*) > 1000000;

-- ORDER BY aggregates.
-- @ordered
SELECT country, count(*) AS n FROM users GROUP BY country ORDER BY n DESC, country LIMIT 10;
-- @ordered
SELECT status, sum(amount) FROM orders GROUP BY status ORDER BY sum(amount) DESC NULLS LAST, status;
-- @ordered
SELECT country, max(score) FROM users GROUP BY country ORDER BY max(score) NULLS FIRST, country;
-- @ordered
SELECT kind, avg(value) AS a FROM events GROUP BY kind ORDER BY a DESC, kind;
-- @ordered
SELECT country, count(*) FROM users GROUP BY country ORDER BY 2, 1 OFFSET 3 LIMIT 5;
-- @ordered
SELECT country FROM users GROUP BY country ORDER BY count(*) DESC, country LIMIT 5;

-- Empty inputs and NULL-only groups.
SELECT count(*), count(age), sum(age), avg(age), min(age), max(age), bool_and(active), bool_or(active), stddev(age), variance(age), string_agg(name, '|'), array_agg(id) FROM users WHERE false;
SELECT country, count(*) FROM users WHERE false GROUP BY country;
SELECT count(DISTINCT age) FROM users WHERE age > 1000;
SELECT sum(amount) FROM orders WHERE amount IS NULL;
SELECT max(amount), count(amount), count(*), avg(amount) FROM orders WHERE amount IS NULL;
SELECT grp, count(c_int4), sum(c_int4), avg(c_numeric), min(c_text), max(c_date), bool_or(c_bool), string_agg(c_text, '|') FROM typed WHERE grp = 12 GROUP BY grp;
SELECT country IS NULL AS no_country, sum(age), count(*) FROM users GROUP BY 1;
SELECT status, count(amount), sum(amount) FROM orders WHERE amount IS NULL GROUP BY status;
-- @ordered
SELECT grp, count(*) FILTER (WHERE c_bool), sum(c_int2) FILTER (WHERE c_int2 > 0) FROM typed GROUP BY grp ORDER BY grp NULLS LAST;
-- @ordered
SELECT grp, sum(c_float8), avg(c_float4), min(c_interval), max(c_uuid::text) FROM typed GROUP BY grp ORDER BY grp NULLS FIRST;

-- A GROUP BY name that is both an input column and another output column's name: Postgres groups
-- by the input column (shardgate reads the tables' columns from the catalog to tell).
-- @must-answer
SELECT age / 10 AS age, count(*) FROM users GROUP BY age;
-- @must-answer
SELECT upper(country) AS country, count(*) FROM users GROUP BY country;
-- @must-answer
SELECT count(*) AS age FROM users GROUP BY age;
-- @must-answer
SELECT date_trunc('month', created_at) AS created_at, count(*), sum(amount) FROM orders GROUP BY created_at;
-- @must-answer
SELECT lower(name) AS lname, count(*) FROM users GROUP BY lname;
-- @must-answer
SELECT u.age / 10 AS age, count(*) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY age;

-- stddev/variance over floats: Postgres computes them in double precision (Youngs-Cramer);
-- exact sums cannot give its digits, so shardgate refuses (whatever the rows: the float sums of
-- the suite's own partitioned check depend on the row order, so these read none).
-- @must-refuse
SELECT stddev(discount), variance(discount) FROM orders WHERE qty < 0;
-- @must-refuse
SELECT grp, var_pop(c_float4) FROM typed WHERE grp < 0 GROUP BY grp;

-- HAVING arithmetic overflows at the operands' width: int4 + int4 past 2^31 fails, as in Postgres.
-- @error
SELECT grp, count(*) FROM typed GROUP BY grp HAVING max(c_int4) + 1 > 0;
-- @error
SELECT grp, count(*) FROM typed GROUP BY grp HAVING max(c_int2) * max(c_int2) > 0;
-- @ordered
SELECT grp, count(*) FROM typed GROUP BY grp HAVING max(c_int2)::int4 * 2 > 0 ORDER BY grp;
