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

-- Columns and expressions in a collation that is not the database's (typed.c_text_c is COLLATE
-- "C", c_text_en COLLATE "en_US", both holding c_text's values): the merge orders them as the
-- shards did, in the collation each shard query's probe names.
-- @ordered
-- @must-answer
SELECT id, c_text_c FROM typed ORDER BY c_text_c, id;
-- @ordered
-- @must-answer
SELECT id, c_text_en FROM typed ORDER BY c_text_en DESC, id LIMIT 300;
-- @ordered
SELECT c_text_c, c_text_en, id FROM typed ORDER BY 2 NULLS FIRST, 1, 3;
-- @ordered
SELECT id, lower(c_text_c) AS l FROM typed ORDER BY l, id LIMIT 500;
-- @ordered
SELECT id, c_text_c || '~' AS s FROM typed ORDER BY s DESC, id LIMIT 400;
-- @ordered
SELECT * FROM typed ORDER BY c_text_c, id LIMIT 200;
-- @ordered
SELECT DISTINCT c_text_c FROM typed ORDER BY c_text_c;
-- @must-answer
SELECT min(c_text_c), max(c_text_c), min(c_text_en), max(c_text_en) FROM typed;
-- @ordered
SELECT grp, min(c_text_c), max(c_text_en), max(c_text) FROM typed GROUP BY grp ORDER BY grp;
-- @ordered
SELECT c_text_c, count(*) FROM typed GROUP BY c_text_c ORDER BY c_text_c DESC LIMIT 300;
-- @ordered
SELECT grp, max(c_text_c) FROM typed GROUP BY grp HAVING max(c_text_c) > 'Z' ORDER BY grp;
-- @ordered
SELECT grp, string_agg(c_text_c, '|' ORDER BY c_text_c, id) FROM typed GROUP BY grp ORDER BY grp;
-- @ordered
SELECT grp, array_agg(DISTINCT c_text_en ORDER BY c_text_en) FROM typed GROUP BY grp ORDER BY grp;
-- @ordered
SELECT grp, min(DISTINCT c_text_c) FROM typed GROUP BY grp ORDER BY grp;
-- Explicit COLLATE.
-- @ordered
SELECT id, c_text FROM typed ORDER BY c_text COLLATE "C", id;
-- @ordered
SELECT id, c_text_c FROM typed ORDER BY c_text_c COLLATE "en_US" DESC, id LIMIT 250;
-- @ordered
SELECT id, c_text COLLATE "POSIX" AS t FROM typed ORDER BY t NULLS FIRST, id;
-- @must-answer
SELECT max(c_text COLLATE "C"), min(c_text_c COLLATE "default") FROM typed;
-- @ordered
SELECT grp, string_agg(c_text, '|' ORDER BY c_text COLLATE "C", id) FROM typed GROUP BY grp ORDER BY grp;
-- A position in SELECT * names a column shardgate cannot probe; an ICU collation it cannot
-- order in.
-- @must-refuse
SELECT * FROM typed ORDER BY 18, id;
-- @must-refuse
SELECT id, c_text FROM typed ORDER BY c_text COLLATE "en-x-icu", id;
-- A nondeterministic collation calls 'a' and 'A' equal: groups and DISTINCT rows of several
-- shards cannot be matched byte for byte.
-- @must-refuse
SELECT c_text COLLATE ci AS t, count(*) FROM typed GROUP BY 1;
-- @must-refuse
SELECT DISTINCT c_text COLLATE ci FROM typed;
-- name is collatable: a name column is "C", text::name keeps the text's collation.
-- @ordered
SELECT id, c_text::name AS n FROM typed ORDER BY n, id LIMIT 300;
-- @ordered
SELECT c_text::name AS n, count(*) FROM typed GROUP BY 1 ORDER BY 1 DESC LIMIT 200;
-- @ordered
SELECT id, c_text_c::name AS n FROM typed ORDER BY n DESC, id LIMIT 300;
-- @must-answer
SELECT min(c_text::name), max(c_text::name) FROM typed;
