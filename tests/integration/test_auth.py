"""Startup and authentication through shardgate: SSL/GSS requests, protocol negotiation, startup
parameters, auth methods, auth failures, ParameterStatus and BackendKeyData at login."""

import re

import psycopg
import pytest

import pgwire
from pgwire import PgWire

HOST = "127.0.0.1"
DIRECT = pgwire.target_is_direct()

# The default users of tests/harness/pgcluster.py: (user, password, authentication requests expected).
USERS = [
    ("postgres", "postgres", [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE, pgwire.AUTH_SASL_FINAL, pgwire.AUTH_OK]),
    ("md5user", "md5pass", [pgwire.AUTH_MD5, pgwire.AUTH_OK]),
    ("clearuser", "clearpass", [pgwire.AUTH_CLEARTEXT, pgwire.AUTH_OK]),
    ("trustuser", None, [pgwire.AUTH_OK]),
    ("verifieruser", "verifierpass", [pgwire.AUTH_SASL, pgwire.AUTH_SASL_CONTINUE, pgwire.AUTH_SASL_FINAL, pgwire.AUTH_OK]),
]


@pytest.fixture(autouse=True)
def _deadline():
    with pgwire.deadline(60):
        yield


def wire(cluster) -> PgWire:
    return PgWire(HOST, cluster.shardgate.port)


def connect(cluster, **kw) -> psycopg.Connection:
    user = kw.pop("user", "postgres")
    password = kw.pop("password", "postgres")
    dbname = kw.pop("dbname", "app")
    return psycopg.connect(cluster.shardgate.dsn(dbname=dbname, user=user, password=password), connect_timeout=10, autocommit=True, **kw)


def assert_usable(c: PgWire) -> None:
    assert c.scalar("SELECT 40 + 2") == "42"


# --------------------------------------------------------------------------------------------
# Encryption requests and protocol versions
# --------------------------------------------------------------------------------------------


def test_ssl_request_is_refused_with_N_and_startup_continues(cluster):
    with wire(cluster) as c:
        c.send(pgwire.ssl_request())
        assert c.read_byte() == b"N"
        c.login()
        assert_usable(c)


# Plain Postgres built with GSSAPI answers 'G', so these two only run against shardgate.
def test_gssenc_request_is_refused_with_N_and_startup_continues(cluster, requires_shardgate):
    with wire(cluster) as c:
        c.send(pgwire.gssenc_request())
        assert c.read_byte() == b"N"
        c.login()
        assert_usable(c)


def test_gssenc_then_ssl_request_then_startup(cluster, requires_shardgate):
    # libpq with gssencmode=prefer and sslmode=prefer tries GSS first, then SSL, on one socket.
    with wire(cluster) as c:
        c.send(pgwire.gssenc_request())
        assert c.read_byte() == b"N"
        c.send(pgwire.ssl_request())
        assert c.read_byte() == b"N"
        c.login()
        assert_usable(c)


def test_protocol_2_is_rejected(cluster):
    with wire(cluster) as c:
        c.send(pgwire.startup_message({"user": "postgres", "database": "app"}, pgwire.protocol_version(2, 0)))
        # Postgres answers a 2.0 client in the 2.0 format ('E' + text); a v3 ErrorResponse is fine too.
        reply = c.read_raw_until_closed()
        assert reply.startswith(b"E"), reply
        assert b"protocol" in reply, reply


def test_protocol_4_is_rejected(cluster):
    with wire(cluster) as c:
        c.send(pgwire.startup_message({"user": "postgres", "database": "app"}, pgwire.protocol_version(4, 0)))
        msgs = c.wait_closed()
        errs = pgwire.errors(msgs)
        assert errs, f"expected an ErrorResponse, got {pgwire.types(msgs)!r}"
        assert errs[0].severity == "FATAL"
        assert errs[0].code in ("0A000", "08P01"), errs[0]


def test_newer_minor_version_gets_negotiate_protocol_version(cluster):
    with wire(cluster) as c:
        c.send(pgwire.startup_message({"user": "postgres", "database": "app"}, pgwire.protocol_version(3, 2)))
        res = c.finish_login("postgres", "postgres")
        assert res.messages[0].type == b"v", f"NegotiateProtocolVersion must come first: {pgwire.types(res.messages)}"
        version, options = res.negotiate
        assert version & 0xFFFF == 0, "the newest minor version supported is 0"
        assert version >> 16 in (0, 3)
        assert options == []
        assert_usable(c)


def test_unrecognized_pq_options_are_listed_in_negotiate_protocol_version(cluster):
    params = {"user": "postgres", "database": "app", "_pq_.sg_test_a": "1", "_pq_.sg_test_b": "on"}
    with wire(cluster) as c:
        c.send(pgwire.startup_message(params, pgwire.protocol_version(3, 1)))
        res = c.finish_login("postgres", "postgres")
        assert res.negotiate is not None, pgwire.types(res.messages)
        version, options = res.negotiate
        assert version & 0xFFFF == 0
        assert sorted(options) == ["_pq_.sg_test_a", "_pq_.sg_test_b"]
        assert_usable(c)


def test_pq_option_with_protocol_3_0_is_listed(cluster):
    with wire(cluster) as c:
        c.send(pgwire.startup_message({"user": "postgres", "database": "app", "_pq_.sg_x": "y"}))
        res = c.finish_login("postgres", "postgres")
        assert res.negotiate is not None
        assert res.negotiate[1] == ["_pq_.sg_x"]
        assert_usable(c)


def test_plain_3_0_startup_gets_no_negotiation(cluster):
    with wire(cluster) as c:
        res = c.login()
        assert res.negotiate is None
        assert b"v" not in [m.type for m in res.messages]


# --------------------------------------------------------------------------------------------
# Startup parameters
# --------------------------------------------------------------------------------------------


def test_startup_parameters_reach_the_session(cluster):
    with connect(cluster, application_name="sg_itest_app", options="-c search_path=sg_itest_schema -c statement_timeout=4321") as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), current_setting('application_name'),"
            " current_setting('search_path'), current_setting('statement_timeout')"
        ).fetchone()
        assert row == ("postgres", "app", "sg_itest_app", "sg_itest_schema", "4321ms")
        app = conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()").fetchone()
        assert app == ("sg_itest_app",)
        assert conn.execute("SHOW search_path").fetchone() == ("sg_itest_schema",)


def test_startup_parameters_do_not_leak_between_clients(cluster):
    with connect(cluster, application_name="sg_itest_first", options="-c search_path=sg_first") as a:
        with connect(cluster, application_name="sg_itest_second") as b:
            assert a.execute("SHOW search_path").fetchone() == ("sg_first",)
            assert b.execute("SHOW search_path").fetchone() == ('"$user", public',)
            assert b.execute("SHOW application_name").fetchone() == ("sg_itest_second",)


def test_guc_in_startup_packet_is_applied(cluster):
    # asyncpg sends server_settings as plain startup parameters, not via `options`.
    params = {"search_path": "sg_itest_raw", "statement_timeout": "1234", "application_name": "sg_raw_app"}
    with wire(cluster) as c:
        res = c.login(params=params)
        assert res.params.get("application_name") == "sg_raw_app"
        assert c.scalar("SHOW search_path") == "sg_itest_raw"
        assert c.scalar("SHOW statement_timeout") == "1234ms"


def test_set_reports_parameter_status(cluster):
    with wire(cluster) as c:
        c.login()
        msgs = c.simple("SET application_name = 'sg_changed'")
        statuses = dict(pgwire.parse_parameter_status(m) for m in msgs if m.type == b"S")
        assert statuses.get("application_name") == "sg_changed", pgwire.types(msgs)
        assert c.scalar("SELECT current_setting('application_name')") == "sg_changed"


@pytest.mark.parametrize("value", ["true", "database"])
def test_replication_connection_is_refused(cluster, requires_shardgate, value):
    with wire(cluster) as c:
        with pytest.raises(pgwire.LoginError) as ei:
            c.login(params={"replication": value})
        err = ei.value.error
        assert err.severity == "FATAL"
        assert err.code in ("08P01", "28000"), err
        assert "replication" in err.message.lower(), err
        assert c.is_closed(5)


def test_replication_connection_is_refused_for_libpq(cluster, requires_shardgate):
    with pytest.raises(psycopg.OperationalError, match="(?i)replication"):
        psycopg.connect(cluster.shardgate.dsn() + " replication=database", connect_timeout=10)


# --------------------------------------------------------------------------------------------
# Authentication
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("user,password,expected_codes", USERS, ids=[u[0] for u in USERS])
def test_auth_method_per_user(cluster, user, password, expected_codes):
    with wire(cluster) as c:
        # login() verifies the SCRAM server signature, i.e. that the proxy really holds the secret.
        res = c.login(user=user, password=password)
        assert res.auth_codes == expected_codes
        # shardgate logs in to the shards as the config's shard user (postgres), like PgBouncer's
        # forced user; only plain Postgres shows the client's own role.
        assert c.scalar("SELECT current_user") == (user if DIRECT else "postgres")


@pytest.mark.parametrize("user,password", [(u, p) for u, p, _ in USERS], ids=[u[0] for u in USERS])
def test_psycopg_login_per_user(cluster, user, password):
    with connect(cluster, user=user, password=password or "unused") as conn:
        assert conn.execute("SELECT current_user, 1 + 1").fetchone() == (user if DIRECT else "postgres", 2)
        assert conn.info.user == user


def wrong_password_error(cluster, user: str) -> tuple[pgwire.ServerError, list[pgwire.Message]]:
    with wire(cluster) as c:
        with pytest.raises(pgwire.LoginError) as ei:
            c.login(user=user, password="definitely-wrong")
        assert c.is_closed(5), "the connection must be closed after a failed login"
        return ei.value.error, ei.value.received


@pytest.mark.parametrize("user", ["postgres", "md5user", "clearuser", "verifieruser"])
def test_wrong_password_is_28P01(cluster, user):
    err, _ = wrong_password_error(cluster, user)
    assert err.severity == "FATAL"
    assert err.code == "28P01"
    assert err.message == f'password authentication failed for user "{user}"'


def test_unknown_user_error_is_indistinguishable_from_wrong_password(cluster):
    known, known_msgs = wrong_password_error(cluster, "postgres")
    unknown, unknown_msgs = wrong_password_error(cluster, "sg_no_such_user")
    assert unknown.code == known.code == "28P01"
    assert unknown.severity == known.severity == "FATAL"
    assert unknown.message == 'password authentication failed for user "sg_no_such_user"'
    assert unknown.message.replace("sg_no_such_user", "postgres") == known.message
    assert {k: v for k, v in unknown.fields.items() if k in "SVCDH"} == {k: v for k, v in known.fields.items() if k in "SVCDH"}
    # The same challenge sequence too: an unknown user must not fail earlier than a known one.
    assert pgwire.types(unknown_msgs) == pgwire.types(known_msgs)
    assert [pgwire.parse_auth(m)[0] for m in unknown_msgs if m.type == b"R"] == [
        pgwire.parse_auth(m)[0] for m in known_msgs if m.type == b"R"
    ]


def test_wrong_password_with_psycopg(cluster):
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "md5user"'):
        connect(cluster, user="md5user", password="nope")
    with pytest.raises(psycopg.OperationalError, match='password authentication failed for user "sg_ghost"'):
        connect(cluster, user="sg_ghost", password="nope")


def test_unknown_database_is_3D000(cluster):
    with wire(cluster) as c:
        with pytest.raises(pgwire.LoginError) as ei:
            c.login(database="sg_no_such_db")
        assert ei.value.error.code == "3D000"
        assert ei.value.error.severity == "FATAL"
        assert "sg_no_such_db" in ei.value.error.message
        assert c.is_closed(5)


def test_failed_logins_leave_the_proxy_working(cluster):
    for _ in range(5):
        wrong_password_error(cluster, "md5user")
        wrong_password_error(cluster, "sg_no_such_user")
    with connect(cluster) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# --------------------------------------------------------------------------------------------
# ParameterStatus and BackendKeyData
# --------------------------------------------------------------------------------------------


def test_parameter_status_at_login(cluster):
    with wire(cluster) as c:
        res = c.login(params={"client_encoding": "UTF8", "application_name": "sg_ps"})
        for name in ("server_version", "client_encoding", "DateStyle", "TimeZone", "integer_datetimes", "standard_conforming_strings"):
            assert name in res.params, f"ParameterStatus {name} missing: {sorted(res.params)}"
        assert res.params["client_encoding"] == "UTF8"
        assert res.params["integer_datetimes"] == "on"
        assert res.params["standard_conforming_strings"] == "on"
        assert res.params.get("application_name") == "sg_ps"
        assert re.match(r"^\d+(\.\d+)?", res.params["server_version"]), res.params["server_version"]
        # Clients pick features by server_version; it must name the shards' major version.
        num = int(c.scalar("SHOW server_version_num"))
        assert int(res.params["server_version"].split(".")[0]) == num // 10000
        assert c.scalar("SHOW TimeZone") == res.params["TimeZone"]
        assert c.scalar("SHOW DateStyle") == res.params["DateStyle"]


def test_backend_key_data_is_sent_and_unique(cluster):
    with wire(cluster) as a, wire(cluster) as b:
        ra, rb = a.login(), b.login()
        assert ra.pid is not None and ra.key is not None, "no BackendKeyData"
        assert rb.pid is not None
        assert (ra.pid, ra.key) != (rb.pid, rb.key)
        kinds = pgwire.types(ra.messages)
        assert kinds.index("K") < kinds.index("Z")


def test_backend_key_data_is_issued_by_shardgate(cluster, requires_shardgate):
    with wire(cluster) as c:
        res = c.login()
        backend_pid = int(c.scalar("SELECT pg_backend_pid()"))
        assert res.pid != backend_pid, "shardgate must not hand out the shard backend's key"


def test_terminate_closes_the_connection(cluster):
    with wire(cluster) as c:
        c.login()
        c.send(pgwire.terminate())
        assert c.wait_closed(5) == []
