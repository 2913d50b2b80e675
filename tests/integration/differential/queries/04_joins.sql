-- Joins that each shard can answer for its own rows: co-located tables joined on the shard key
-- (users.id = orders.user_id), and sharded tables joined with the reference table countries.

SELECT u.id, u.name, o.id, o.amount FROM users u JOIN orders o ON o.user_id = u.id WHERE o.qty = 50;
-- @ordered
SELECT u.country, count(*), sum(o.amount) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.country ORDER BY u.country NULLS FIRST;
SELECT u.id, count(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.id HAVING count(o.id) = 0;
-- @ordered
SELECT o.id FROM orders o LEFT JOIN users u ON u.id = o.user_id WHERE u.id IS NULL ORDER BY o.id;
-- @ordered
SELECT u.id, o.id FROM users u JOIN orders o ON u.id = o.user_id AND o.status = 'paid' WHERE u.age > 100 ORDER BY u.id, o.id;
SELECT count(*) FROM users u JOIN orders o ON o.user_id = u.id;
-- @ordered
SELECT u.name, o.amount FROM users u, orders o WHERE o.user_id = u.id AND o.amount > 49000 ORDER BY o.amount DESC, o.id;
SELECT u.id FROM users u WHERE EXISTS (SELECT 1 FROM orders o WHERE o.user_id = u.id AND o.qty > 49);
SELECT u.id, (SELECT count(*) FROM orders o WHERE o.user_id = u.id) AS n FROM users u WHERE u.age = 7;
SELECT id FROM users WHERE id IN (SELECT user_id FROM orders WHERE amount < -490);
-- @ordered
SELECT u.id, o.id FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id IN (0, 9223372036854775807) ORDER BY 1, 2;
-- @ordered
SELECT u.id, max(o.created_at), min(o.amount) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.id ORDER BY max(o.created_at) DESC NULLS LAST, u.id LIMIT 20;
SELECT u.active, avg(o.qty), count(DISTINCT o.status) FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.active;
SELECT u.id, o.id FROM users u JOIN orders o ON o.user_id = u.id WHERE u.id BETWEEN -1000 AND 1000;

-- With the reference table.
SELECT u.id, c.name FROM users u JOIN countries c ON c.code = u.country WHERE u.age = 30;
-- @ordered
SELECT c.region, count(*) FROM users u JOIN countries c ON c.code = u.country GROUP BY c.region ORDER BY c.region;
-- @ordered
SELECT c.name, count(u.id) FROM countries c LEFT JOIN users u ON u.country = c.code GROUP BY c.name ORDER BY c.name;
SELECT o.id, c.name, o.amount FROM orders o JOIN users u ON u.id = o.user_id JOIN countries c ON c.code = u.country WHERE o.qty = 0 AND o.amount > 40000;
SELECT u.id, c.population FROM users u LEFT JOIN countries c ON c.code = u.country WHERE u.age = 99;
SELECT e.id, c.code FROM events e CROSS JOIN countries c WHERE e.id < 2000;
SELECT u.country, c.name FROM users u JOIN countries c ON lower(u.country) = c.code GROUP BY 1, 2;
SELECT id, name FROM users WHERE country IN (SELECT code FROM countries WHERE region = 'Asia');
-- @ordered
SELECT c.region, sum(o.amount), count(DISTINCT u.id) FROM orders o JOIN users u ON u.id = o.user_id JOIN countries c ON c.code = u.country GROUP BY c.region ORDER BY c.region;
SELECT c.code, u.id FROM countries c LEFT JOIN users u ON u.country = c.code AND u.age = 50;

-- Alias column lists rename a table's first columns: o.user_id below is orders.id, and
-- e.id is events.user_id, so neither is the sharding key.
-- @must-answer
SELECT count(*) FROM orders o(user_id, real_user) WHERE user_id = 3;
-- @must-answer
SELECT count(*), sum(o.amount) FROM orders o(user_id, real_user) WHERE o.user_id IN (1, 2, 3);
-- @must-answer
SELECT count(*) FROM events e(user_id, id) WHERE e.id = 5;
-- @must-refuse
SELECT count(*) FROM users u JOIN orders o(user_id, real_user) ON o.user_id = u.id;
-- @must-refuse
SELECT count(*) FROM users u WHERE EXISTS (SELECT 1 FROM orders o(user_id, real_user) WHERE o.user_id = u.id);
