"""psql through shardgate: the scripts in sql/ (DDL, DML, transactions, \\copy, errors with ON_ERROR_STOP
off) must print exactly what they print when run directly against shard 0's primary (the golden run),
plus a few one-liners."""

import os
import subprocess
from pathlib import Path

import pytest

import pgcluster
import pgwire

SQL_DIR = Path(__file__).resolve().parent / "sql"
SCRIPTS = sorted(p.name for p in SQL_DIR.glob("*.sql"))
PSQL = str(pgcluster.pg_bindir() / "psql")

# Something from the real output of each script, so two equally broken runs cannot pass.
EXPECTED = {
    "ddl_dml.sql": ["INSERT 0 4", "ROW_COUNT=4", 'Table "public.psqlt_items"', "SQLSTATE=23514", "SQLSTATE=23503",
                    "SQLSTATE=23505", "SQLSTATE=23502", "TRUNCATE TABLE", "hammer"],
    "transactions.sql": ["SQLSTATE=23514", "SQLSTATE=25P02", "repeatable read", "SQLSTATE=25006",
                         "ERROR:  division by zero", "SAVEPOINT can only be used in transaction blocks"],
    "copy.sql": ["COPY 1000", "COPY 3", "COPY 2", "multi", "invalid input syntax for type integer: \"5x\"", "SQLSTATE=42P01", "1\tname 1"],
    "errors.sql": ["ERROR:  division by zero", 'syntax error at or near "SELEKT"', "LOCATION:", "notice from DO 2",
                   "WARNING:  a warning", "DETAIL:  detail text", "HINT:  hint text", "SQLSTATE=P0001", "still going",
                   "bigint out of range", "29.02.2024", 'prepared statement "psqlt_q" does not exist', "done"],
}
FAILURE_SIGNS = ["server closed the connection", "connection to server", "could not connect", "FATAL:",
                 "terminating connection", "lost synchronization", "unexpected response"]


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(300):
        yield


def psql_env(home: Path) -> dict:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LC_ALL": "C.UTF-8",
            "PGCLIENTENCODING": "UTF8", "PGCONNECT_TIMEOUT": "10", "PGTZ": "UTC"}


def write_copy_input(workdir: Path) -> None:
    lines = ["id,name,amount,note"] + [f"{i},name {i},{i / 4},{'' if i % 7 else 'seventh'}" for i in range(1, 1001)]
    (workdir / "copy_in.csv").write_text("\n".join(lines) + "\n")


def run_script(dsn: str, script: str, workdir: Path) -> tuple[int, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    write_copy_input(workdir)
    r = subprocess.run(
        [PSQL, dsn, "-X", "-a", "-v", "ON_ERROR_STOP=0", "-f", str(SQL_DIR / script)],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env=psql_env(workdir), text=True, timeout=120,
    )
    return r.returncode, r.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_matches_direct_run(cluster, tmp_path, script):
    # Through shardgate first, then the golden run directly on shard 0 (each script cleans up after itself).
    rc, out = run_script(cluster.shardgate.dsn(), script, tmp_path / "shardgate")
    golden_rc, golden = run_script(cluster.shards[0].primary.dsn(), script, tmp_path / "direct")

    for sign in FAILURE_SIGNS:
        assert sign not in golden, f"the direct run itself failed ({sign!r}):\n{golden}"
    for marker in EXPECTED[script]:
        assert marker in golden, f"golden output of {script} lacks {marker!r}:\n{golden}"
    assert golden_rc == 0

    assert out == golden, f"{script}: output through shardgate differs from the direct run"
    assert rc == golden_rc
    shardgate_files = sorted(p.name for p in (tmp_path / "shardgate").iterdir())
    for name in shardgate_files:
        assert (tmp_path / "shardgate" / name).read_bytes() == (tmp_path / "direct" / name).read_bytes(), name


def test_copy_out_file_contents(cluster, tmp_path):
    run_script(cluster.shardgate.dsn(), "copy.sql", tmp_path)
    lines = (tmp_path / "copy_out.csv").read_text().splitlines()
    assert lines[0] == "id,name,amount,note"
    assert lines[1] == "1,name 1,0.25,"
    assert lines[7] == "7,name 7,1.75,seventh"
    # 1000 file rows + 3 from \copy stdin + 2 from COPY FROM STDIN (one of them two lines long).
    assert len(lines) == 1 + 1000 + 3 + 2 + 1


def test_psql_one_liners(cluster):
    sg = cluster.shardgate
    r = sg.psql(None, extra_args=["-c", "SELECT 1", "-c", "SELECT 'two'", "-c", "SELECT 3; SELECT 4"])
    assert r.stdout.split() == ["1", "two", "3", "4"]
    r = sg.psql("SELECT string_agg(g::text, ',') FROM generate_series(1, 5) g")
    assert r.stdout == "1,2,3,4,5\n"


def test_psql_single_transaction_rolls_back_on_error(cluster):
    sg = cluster.shardgate
    sg.psql("DROP TABLE IF EXISTS psqlt_single; CREATE TABLE psqlt_single (x int)")
    r = sg.psql(None, check=False,
                extra_args=["-1", "-c", "INSERT INTO psqlt_single VALUES (1)", "-c", "SELECT 1/0"])
    assert r.returncode != 0
    assert "division by zero" in r.stderr
    assert sg.psql("SELECT count(*) FROM psqlt_single").stdout == "0\n"
    sg.psql("DROP TABLE psqlt_single")


def test_psql_error_stops_with_on_error_stop(cluster):
    r = cluster.shardgate.psql(None, check=False, extra_args=["-c", "SELECT 1/0", "-c", "SELECT 'not reached'"])
    assert r.returncode == 1
    assert "not reached" not in r.stdout
    assert "ERROR:  division by zero" in r.stderr


def test_psql_describe_commands(cluster):
    sg = cluster.shardgate
    out = sg.psql(None, extra_args=["-c", "\\dn", "-c", "\\l"]).stdout
    assert "public" in out
    assert "app" in out
