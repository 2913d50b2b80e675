-- ORDER BY (columns, positions, aliases, expressions, hidden sort columns), LIMIT/OFFSET combos and
-- DISTINCT. @ordered only where the ORDER BY fixes every row's place (a unique key last).

-- @ordered
-- @must-answer
SELECT id, name FROM users ORDER BY id;
-- @ordered
-- @must-answer
SELECT id, name FROM users ORDER BY id DESC;
-- @ordered
-- @must-answer
SELECT * FROM orders ORDER BY id;
-- @ordered
-- @must-answer
SELECT * FROM events ORDER BY id DESC;
-- @ordered
SELECT id, user_id FROM orders ORDER BY user_id, id;

-- LIMIT and OFFSET.
-- @ordered
-- @must-answer
SELECT id FROM users ORDER BY id LIMIT 10;
-- @ordered
-- @must-answer
SELECT id, amount FROM orders ORDER BY id DESC LIMIT 25;
-- @ordered
SELECT id FROM users ORDER BY id LIMIT 10 OFFSET 5;
-- @ordered
SELECT id FROM users ORDER BY id OFFSET 3990;
-- @ordered
SELECT id FROM users ORDER BY id LIMIT 0;
-- @ordered
SELECT id FROM users ORDER BY id LIMIT ALL;
-- @ordered
SELECT id FROM users ORDER BY id LIMIT 5 OFFSET 100000;
-- @ordered
SELECT id FROM users ORDER BY id DESC OFFSET 10 LIMIT 3;
-- @ordered
SELECT id FROM users ORDER BY id FETCH FIRST 7 ROWS ONLY;
-- @ordered
SELECT id FROM users ORDER BY id OFFSET 2 ROWS FETCH NEXT 4 ROWS ONLY;
-- @ordered
SELECT id, name FROM users ORDER BY id LIMIT 1;
-- @ordered
SELECT id FROM users ORDER BY id LIMIT 3 OFFSET 0;
-- @ordered
SELECT id, name FROM users ORDER BY id LIMIT 10 OFFSET 10;
-- @ordered
SELECT id, value FROM events ORDER BY id LIMIT 1000 OFFSET 3000;

-- By position, alias, expression, hidden columns.
-- @ordered
SELECT name, id FROM users ORDER BY 2 DESC LIMIT 20;
-- @ordered
SELECT id AS k, name FROM users ORDER BY k LIMIT 20;
-- @ordered
SELECT id, amount * qty AS total FROM orders WHERE amount IS NOT NULL AND qty IS NOT NULL ORDER BY amount * qty DESC, id LIMIT 30;
-- @ordered
SELECT id, amount * qty AS total FROM orders ORDER BY total NULLS FIRST, id LIMIT 30;
-- @ordered
SELECT id FROM orders ORDER BY qty * 2 DESC NULLS LAST, id LIMIT 25;
-- @ordered
SELECT name FROM users ORDER BY id LIMIT 50;
-- @ordered
SELECT amount FROM orders ORDER BY user_id DESC, id DESC LIMIT 50;
-- @ordered
SELECT id, name FROM users ORDER BY lower(name) NULLS FIRST, id LIMIT 40;
-- @ordered
SELECT user_id, id, amount FROM orders ORDER BY user_id DESC, amount ASC NULLS FIRST, id DESC LIMIT 100;
-- @ordered
SELECT id, age FROM users ORDER BY age > 50, id LIMIT 40;
-- @ordered
SELECT id, abs(id) FROM users WHERE id > -9223372036854775808 ORDER BY abs(id) DESC, id LIMIT 10;

-- Each column type of the other tables.
-- @ordered
SELECT id, age FROM users ORDER BY age NULLS FIRST, id;
-- @ordered
SELECT id, age FROM users ORDER BY age DESC NULLS LAST, id DESC;
-- @ordered
SELECT id, score FROM users ORDER BY score DESC, id LIMIT 15 OFFSET 15;
-- @ordered
SELECT id, active FROM users ORDER BY active, id;
-- @ordered
SELECT id, created FROM users ORDER BY created DESC NULLS LAST, id LIMIT 33;
-- @ordered
SELECT id, at FROM events ORDER BY at, id LIMIT 50;
-- @ordered
SELECT id, value FROM events ORDER BY value DESC NULLS FIRST, id;
-- @ordered
SELECT id, created_at FROM orders ORDER BY created_at NULLS FIRST, id LIMIT 200;
-- @ordered
SELECT id, discount FROM orders ORDER BY discount, id LIMIT 100 OFFSET 50;
-- @ordered
SELECT id, name FROM users ORDER BY name, id LIMIT 100;
-- @ordered
SELECT name FROM users WHERE name IS NOT NULL ORDER BY name COLLATE "C" LIMIT 50;
-- @ordered
SELECT id, c_text FROM typed ORDER BY c_text COLLATE "C" DESC, id LIMIT 60;

-- DISTINCT.
SELECT DISTINCT country FROM users;
-- @ordered
SELECT DISTINCT country FROM users ORDER BY country;
-- @ordered
SELECT DISTINCT status FROM orders ORDER BY status NULLS FIRST;
SELECT DISTINCT kind, user_id IS NULL AS anonymous FROM events;
-- @ordered
SELECT DISTINCT age FROM users ORDER BY age DESC LIMIT 10;
-- @ordered
SELECT DISTINCT country, active FROM users ORDER BY country, active;
SELECT DISTINCT nick FROM users;
-- @ordered
SELECT DISTINCT qty % 5 AS r FROM orders ORDER BY r;
-- @ordered
SELECT DISTINCT user_id FROM orders ORDER BY user_id LIMIT 100 OFFSET 100;
-- @ordered
SELECT DISTINCT ON (country) country, id, name FROM users ORDER BY country, id;
SELECT DISTINCT 1 AS one FROM users;
-- SELECT DISTINCT * ordered by one of its columns.
-- @ordered
SELECT DISTINCT * FROM users ORDER BY id LIMIT 20;
-- @ordered
SELECT DISTINCT * FROM orders o ORDER BY o.id DESC LIMIT 20;
