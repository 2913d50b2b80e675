-- Errors, notices and odd values through psql (ON_ERROR_STOP off): each error is reported and the
-- script goes on.
SELECT 1/0;
SELEKT 1;
SELECT * FROM psqlt_nonexistent;
SELECT nonexistent_column FROM pg_class;
\echo SQLSTATE=:SQLSTATE
SELECT 'after errors' AS ok;
SELECT 1 AS a \; SELECT 1/0 \; SELECT 3 AS c;
SELECT 'still going' AS ok;
DO $$ BEGIN RAISE NOTICE 'notice from DO %', 1 + 1; END $$;
DO $$ BEGIN RAISE WARNING 'a warning'; END $$;
DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING DETAIL = 'detail text', HINT = 'hint text'; END $$;
\echo SQLSTATE=:SQLSTATE
\set VERBOSITY verbose
SELECT 1/0;
SELECT 'x'::int;
\set VERBOSITY default
SELECT repeat('x', 10) AS s, NULL::int AS n, '' AS empty, E'\\xff'::bytea AS b, 'unicode: ü € 漢字' AS u;
SELECT generate_series(1, 3) AS g;
VALUES (1, 'one'), (2, 'two');
SELECT 1 AS a, 2 AS a;
SELECT pg_sleep(0.1);
SELECT 'a' || NULL IS NULL AS null_concat, 0.1 + 0.2 AS sum, 1e300 * 10 AS big;
SELECT 9223372036854775807::int8 + 1;
SELECT '2024-02-30'::date;
SELECT array_agg(x ORDER BY x) FROM (VALUES (3), (1), (2)) v(x);
SET datestyle = 'German';
SELECT '2024-02-29'::date;
RESET datestyle;
SET no_such_setting = 1;
SHOW no_such_setting;
PREPARE psqlt_q(int) AS SELECT $1 * 10;
EXECUTE psqlt_q(4);
EXECUTE psqlt_q('four');
DEALLOCATE psqlt_q;
EXECUTE psqlt_q(4);
SELECT 'done' AS ok;
