-- Text ordering under the database's collation. Run in app (en_US.UTF-8) and in app_c (C): the
-- same queries, different answers, and shardgate must match Postgres in each.

-- @ordered
SELECT id, name FROM users ORDER BY name, id;
-- @ordered
SELECT id, name FROM users ORDER BY name DESC NULLS LAST, id LIMIT 200;
-- @ordered
SELECT id, c_text FROM typed ORDER BY c_text NULLS FIRST, id;
-- @ordered
SELECT id, c_text FROM typed ORDER BY c_text DESC, id DESC LIMIT 100 OFFSET 10;
-- @ordered
SELECT DISTINCT nick FROM users ORDER BY nick;
-- @ordered
SELECT DISTINCT c_text FROM typed ORDER BY c_text DESC NULLS LAST LIMIT 300;
SELECT min(name), max(name), min(nick), max(nick) FROM users;
SELECT min(c_text), max(c_text) FROM typed;
-- @ordered
SELECT country, min(name), max(name) FROM users GROUP BY country ORDER BY country;
-- @ordered
SELECT nick, count(*) FROM users GROUP BY nick ORDER BY nick NULLS FIRST;
-- @ordered
SELECT grp, max(c_text), min(c_text) FROM typed GROUP BY grp ORDER BY 2, 1;
-- @single-shard
-- @ordered
SELECT code, name FROM countries ORDER BY name;
-- @ordered
SELECT u.id, u.name, c.name FROM users u JOIN countries c ON c.code = u.country ORDER BY c.name, u.name, u.id LIMIT 100;
-- @ordered
SELECT tag, count(*) FROM events GROUP BY tag ORDER BY tag DESC NULLS FIRST LIMIT 50;
-- @ordered
SELECT id, upper(name) AS u FROM users ORDER BY u, id LIMIT 100;
SELECT string_agg(name, '|' ORDER BY name) FROM users WHERE age < 10;
-- @ordered
SELECT id, name FROM users WHERE name > 'M' ORDER BY name LIMIT 50;
-- @ordered
SELECT id, name FROM users ORDER BY name COLLATE "C", id LIMIT 100;
-- @ordered
SELECT id, status FROM orders ORDER BY status, id LIMIT 300;
-- @ordered
SELECT id, name, nick FROM users ORDER BY nick DESC, name, id LIMIT 150;
-- @ordered
SELECT id, kind, tag FROM events ORDER BY kind NULLS FIRST, tag DESC NULLS LAST, id LIMIT 250;
