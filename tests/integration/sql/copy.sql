-- COPY through psql: \copy from a file and from inline data, COPY FROM STDIN in the script,
-- \copy and COPY to stdout and to a file, and errors in the middle of a COPY.
SET client_min_messages = warning;
DROP TABLE IF EXISTS psqlt_copy;
RESET client_min_messages;
CREATE TABLE psqlt_copy (id int, name text, amount numeric, note text);
\copy psqlt_copy FROM 'copy_in.csv' WITH (FORMAT csv, HEADER true)
\copy psqlt_copy (id, name) FROM stdin
100000	from stdin
100001	tab\there
100002	\N
\.
COPY psqlt_copy (id, name, amount) FROM STDIN WITH (FORMAT csv);
200000,"quoted, comma",2.5
200001,"multi
line",3
\.
SELECT count(*), sum(amount), count(note), max(length(name)) FROM psqlt_copy;
\copy (SELECT * FROM psqlt_copy ORDER BY id) TO 'copy_out.csv' WITH (FORMAT csv, HEADER true)
\copy (SELECT id, name FROM psqlt_copy WHERE id < 5 OR id >= 100000 ORDER BY id) TO stdout
COPY (SELECT id, amount FROM psqlt_copy WHERE id % 1000 = 0 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true);
-- A bad row fails the whole COPY; the data up to \. is consumed and the session goes on.
\copy psqlt_copy (id) FROM stdin
1
not-a-number
3
\.
COPY psqlt_copy (id) FROM STDIN;
4
5x
\.
-- psql skips the inline data of a COPY that fails before it starts.
COPY psqlt_copy_nonexistent FROM STDIN;
1
\.
\echo SQLSTATE=:SQLSTATE
SELECT count(*) FROM psqlt_copy;
BEGIN;
\copy psqlt_copy (id, name) FROM stdin
300000	in a transaction
\.
ROLLBACK;
SELECT count(*) FROM psqlt_copy WHERE id = 300000;
DROP TABLE psqlt_copy;
