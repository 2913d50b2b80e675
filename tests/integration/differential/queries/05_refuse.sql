-- Shapes shardgate cannot answer correctly by running them on each shard and merging: they must get
-- 0A000 (feature_not_supported) with a message, never a wrong answer.

-- Window functions over sharded rows.
-- @must-refuse
SELECT id, row_number() OVER (ORDER BY id) FROM users;
-- @must-refuse
SELECT id, sum(amount) OVER () FROM orders;
-- @must-refuse
SELECT id, rank() OVER (ORDER BY amount DESC) FROM orders WHERE qty > 45;
-- @must-refuse
SELECT id, lag(value) OVER (ORDER BY id) FROM events;
-- @must-refuse
SELECT country, count(*), sum(count(*)) OVER () FROM users GROUP BY country;
-- @must-refuse
SELECT id, ntile(4) OVER (ORDER BY id) FROM typed;

-- Joins of sharded tables that are not co-located.
-- @must-refuse
SELECT count(*) FROM orders o JOIN events e ON e.user_id = o.user_id;
-- @must-refuse
SELECT u.id, e.id FROM users u JOIN events e ON e.user_id = u.id WHERE u.age = 1;
-- @must-refuse
SELECT count(*) FROM users u JOIN orders o ON o.id = u.id;
-- @must-refuse
SELECT count(*) FROM users a JOIN users b ON a.name = b.name;
-- @must-refuse
SELECT count(*) FROM users u, typed t WHERE u.age = t.grp;

-- LIMIT inside a subquery.
-- @must-refuse
SELECT count(*) FROM (SELECT * FROM users ORDER BY id LIMIT 10) s;
-- @must-refuse
SELECT * FROM (SELECT id FROM orders ORDER BY amount DESC NULLS LAST, id LIMIT 5) s;
-- @must-refuse
SELECT array_agg(x) FROM (SELECT id AS x FROM users ORDER BY id LIMIT 3) s;

-- Subqueries that need other shards' rows.
-- @must-refuse
SELECT avg(n) FROM (SELECT country, count(*) AS n FROM users GROUP BY country) s;
-- @must-refuse
SELECT * FROM orders WHERE amount > (SELECT avg(amount) FROM orders);
-- @must-refuse
SELECT * FROM events WHERE user_id IN (SELECT id FROM users WHERE age = 3);
-- @must-refuse
SELECT id FROM users WHERE age = (SELECT max(age) FROM users);
-- @must-refuse
WITH t AS (SELECT country, count(*) AS c FROM users GROUP BY country) SELECT max(c) FROM t;
-- @must-refuse
SELECT count(*) FROM (SELECT DISTINCT country FROM users) s;
-- @must-refuse
SELECT u.id FROM users u WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.user_id = u.id);

-- Aggregates that cannot be merged from per-shard parts.
-- @must-refuse
SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM orders;
-- @must-refuse
SELECT mode() WITHIN GROUP (ORDER BY status) FROM orders;
