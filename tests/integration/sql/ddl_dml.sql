-- DDL and DML through psql: tables, constraints, indexes, views, INSERT/UPDATE/DELETE ... RETURNING,
-- constraint violations and psql's catalog queries (\d). Compared with the same script run directly.
SET client_min_messages = warning;
DROP TABLE IF EXISTS psqlt_items CASCADE;
DROP TABLE IF EXISTS psqlt_owners CASCADE;
RESET client_min_messages;
CREATE TABLE psqlt_owners (id int PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE psqlt_items (
  id serial PRIMARY KEY,
  owner_id int REFERENCES psqlt_owners (id),
  label text NOT NULL,
  price numeric(10, 2) CHECK (price >= 0),
  tags text[] DEFAULT '{}',
  created date DEFAULT '2024-01-01'
);
CREATE INDEX psqlt_items_owner_idx ON psqlt_items (owner_id);
INSERT INTO psqlt_owners VALUES (1, 'ann'), (2, 'bob'), (3, 'cy');
INSERT INTO psqlt_items (owner_id, label, price, tags) VALUES
  (1, 'apple', 1.25, '{fruit,red}'), (1, 'pear', 2.50, '{fruit}'),
  (2, 'hammer', 19.99, '{tool}'), (3, 'saw', 24.00, '{tool,sharp}')
  RETURNING id, label;
\echo ROW_COUNT=:ROW_COUNT
UPDATE psqlt_items SET price = price * 2 WHERE owner_id = 1 RETURNING label, price;
DELETE FROM psqlt_items WHERE label = 'saw' RETURNING *;
SELECT o.name, count(i.id) AS items, sum(i.price) AS total
  FROM psqlt_owners o LEFT JOIN psqlt_items i ON i.owner_id = o.id
  GROUP BY o.name ORDER BY o.name;
ALTER TABLE psqlt_items ADD COLUMN note text;
UPDATE psqlt_items SET note = 'n/' || id;
CREATE VIEW psqlt_expensive AS SELECT label, price FROM psqlt_items WHERE price > 3;
SELECT * FROM psqlt_expensive ORDER BY label;
\d psqlt_items
\d psqlt_expensive
INSERT INTO psqlt_items (owner_id, label, price) VALUES (1, 'negative', -1);
\echo SQLSTATE=:SQLSTATE ERROR=:ERROR
INSERT INTO psqlt_items (owner_id, label, price) VALUES (99, 'orphan', 1);
\echo SQLSTATE=:SQLSTATE
INSERT INTO psqlt_owners VALUES (1, 'duplicate');
\echo SQLSTATE=:SQLSTATE
INSERT INTO psqlt_items (owner_id, label) VALUES (2, NULL);
\echo SQLSTATE=:SQLSTATE
\x on
SELECT * FROM psqlt_items WHERE label = 'apple';
\x off
SELECT label, tags, array_length(tags, 1) AS ntags, created + 1 AS next_day FROM psqlt_items ORDER BY id;
UPDATE psqlt_items SET tags = array_append(tags, 'x') WHERE 'fruit' = ANY (tags);
SELECT id, tags FROM psqlt_items ORDER BY id;
TRUNCATE psqlt_items;
SELECT count(*) FROM psqlt_items;
DROP VIEW psqlt_expensive;
DROP TABLE psqlt_items;
DROP TABLE psqlt_owners;
SELECT to_regclass('psqlt_items') IS NULL AS dropped;
