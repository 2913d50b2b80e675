#!/usr/bin/env python3
"""Writes the seed corpora tests/fuzz/seeds/<target>/ (run again after changing this file).

Seeds are valid conversations a fuzzer would take long to find by itself: startup packets, TLS
and GSS requests, logins with each auth method, and query traffic after a trust login, which
the session fuzzer serves from its in-process fake shard (database "app"; "sharded" puts two
shards on it with users hashed on id; "down" refuses).
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

PROTOCOL_30 = 196608
SSL_REQUEST = 80877103
GSS_REQUEST = 80877104
CANCEL_REQUEST = 80877102

# Session header (tests/fuzz/fuzz_drivers.h): flags, then three split points.
TRANSACTION = 0x01
SHARD_ASKS_PASSWORD = 0x02
SHARD_REFUSES_LOGIN = 0x04
SHUTDOWN_FIRST = 0x08
SECOND_CLIENT = 0x10
SECOND_CLIENT_PIPELINES = 0x20


def cstr(s):
    return s.encode() + b"\0"


def untyped(body):
    return struct.pack("!i", len(body) + 4) + body


def typed(kind, body=b""):
    return kind.encode() + struct.pack("!i", len(body) + 4) + body


def startup(params, version=PROTOCOL_30):
    body = struct.pack("!i", version)
    for name, value in params:
        body += cstr(name) + cstr(value)
    return untyped(body + b"\0")


def ssl_request():
    return untyped(struct.pack("!i", SSL_REQUEST))


def gss_request():
    return untyped(struct.pack("!i", GSS_REQUEST))


def cancel_request(pid, secret):
    return untyped(struct.pack("!iii", CANCEL_REQUEST, pid, secret))


def query(sql):
    return typed("Q", cstr(sql))


def parse(name, sql, types=()):
    return typed("P", cstr(name) + cstr(sql) + struct.pack("!h", len(types)) +
                 b"".join(struct.pack("!i", t) for t in types))


def bind(portal, statement, params=(), formats=(), result_formats=()):
    body = cstr(portal) + cstr(statement)
    body += struct.pack("!h", len(formats)) + b"".join(struct.pack("!h", f) for f in formats)
    body += struct.pack("!h", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            body += struct.pack("!i", len(p)) + p
    body += struct.pack("!h", len(result_formats))
    body += b"".join(struct.pack("!h", f) for f in result_formats)
    return typed("B", body)


def describe(kind, name):
    return typed("D", kind.encode() + cstr(name))


def execute(portal, max_rows=0):
    return typed("E", cstr(portal) + struct.pack("!i", max_rows))


def close(kind, name):
    return typed("C", kind.encode() + cstr(name))


SYNC = typed("S")
FLUSH = typed("H")
TERMINATE = typed("X")


def copy_data(data):
    return typed("d", data)


COPY_DONE = typed("c")


def copy_fail(why):
    return typed("f", cstr(why))


def password(pw):
    return typed("p", cstr(pw))


def sasl_initial(mechanism, data):
    body = cstr(mechanism)
    body += struct.pack("!i", -1) if data is None else struct.pack("!i", len(data)) + data
    return typed("p", body)


def sasl_response(data):
    return typed("p", data)


def function_call(oid, args):
    body = struct.pack("!i", oid) + struct.pack("!h", 0) + struct.pack("!h", len(args))
    for a in args:
        body += struct.pack("!i", len(a)) + a
    return typed("F", body + struct.pack("!h", 0))


def stmt(sql):
    """Parse, Bind and Execute of the unnamed statement (no Sync)."""
    return parse("", sql) + bind("", "") + execute("")


def login(user="trusty", database="app", extra=()):
    return startup([("user", user), ("database", database)] + list(extra))


def session(flags, body, splits=(0, 0, 0)):
    return bytes([flags, *splits]) + body


def split_byte(body, position):
    """The header byte that makes the session driver cut `body` at `position`."""
    for b in range(1, 256):
        if b * len(body) // 256 == position:
            return b
    raise ValueError("no split byte cuts %d bytes at %d" % (len(body), position))


def session_split_before_last(flags, body, last):
    """`body` written in two reads, the second holding exactly the message `last`."""
    body = body + last
    return session(flags, body, (split_byte(body, len(body) - len(last)), 0, 0))


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def startup_seeds():
    s = {
        "startup_trust": login() + query("SELECT 1") + TERMINATE,
        "startup_ssl_then_startup": ssl_request() + login(),
        "startup_gss_ssl_startup": gss_request() + ssl_request() + login(),
        "startup_cancel": cancel_request(1234, 5678),
        "startup_options": login(extra=[("options", "-c search_path=a\\ b --work_mem=64MB"),
                                        ("application_name", "psql"),
                                        ("_pq_.compression", "on")]),
        "startup_protocol_3_1": startup([("user", "trusty"), ("database", "app")], 196609),
        "startup_protocol_2": startup([("user", "trusty")], 131072),
        "startup_replication": login(extra=[("replication", "database")]),
        "startup_no_user": startup([("database", "app")]),
        "startup_bad_param_name": login(extra=[("bad name;", "x")]),
        "startup_unknown_user": login(user="nobody") + password("x"),
        "startup_scram_first": login(user="scram") +
        sasl_initial("SCRAM-SHA-256", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO"),
        "startup_cleartext": login(user="clear") + password("secret") + query("SELECT 1"),
        "startup_md5": login(user="md5user") + password("md5" + "0" * 32),
        "startup_down": login(database="down") + query("SELECT 1"),
        "startup_too_long": struct.pack("!i", 20000) + b"\0" * 16,
        "startup_too_short": struct.pack("!i", 4),
        "startup_garbage": bytes(range(256)),
    }
    for name, data in s.items():
        write("fuzz_startup_packet", name, data)


def frontend_seeds():
    m = {
        "query": query("SELECT 1"),
        "parse": parse("s1", "SELECT $1::int", [23, 25]),
        "bind": bind("p1", "s1", [b"\x00\x00\x00\x01", None], [1, 0], [1]),
        "describe": describe("S", "s1") + describe("P", ""),
        "execute": execute("p1", 10),
        "close": close("S", "s1") + close("P", "p1"),
        "sync_flush_terminate": SYNC + FLUSH + TERMINATE,
        "copy": copy_data(b"1\t2\n") + COPY_DONE + copy_fail("because"),
        "password": password("secret"),
        "sasl_initial": sasl_initial("SCRAM-SHA-256", b"n,,n=,r=abc"),
        "sasl_initial_null": sasl_initial("SCRAM-SHA-256", None),
        "sasl_response": sasl_response(b"c=biws,r=abc,p=AAAA"),
        "function_call": function_call(1598, [b"x"]),
        "pipeline": parse("", "SELECT 1") + bind("", "") + describe("P", "") + execute("") +
        SYNC,
        "backend_like": typed("R", struct.pack("!i", 10) + cstr("SCRAM-SHA-256") + b"\0") +
        typed("Z", b"I") + typed("T", struct.pack("!h", 1) + cstr("a") +
                                  struct.pack("!ihihih", 0, 0, 23, 4, -1, 0)) +
        typed("E", b"SERROR\0C42000\0Mboom\0\0"),
    }
    for name, data in m.items():
        write("fuzz_frontend_messages", name, data)


def session_seeds():
    T = TRANSACTION
    s = {
        "trust_select": session(0, login() + query("SELECT 1")),
        "trust_select_terminate": session(0, login() + query("SELECT 1") + TERMINATE),
        "trust_select_split": session(0, login() + query("SELECT 1") + query("SELECT 2"),
                                      (0x30, 0x70, 0xb0)),
        "ssl_then_login": session(0, ssl_request() + login() + query("SHOW x")),
        "txn_pooling_block": session(T, login() + query("BEGIN") + query("SELECT 1") +
                                     query("COMMIT") + query("SELECT 2")),
        "txn_pooling_prepared": session(
            T, login() + parse("s1", "SELECT $1", [23]) + bind("", "s1", [b"1"]) +
            describe("S", "s1") + execute("") + SYNC + bind("", "s1", [b"2"]) + execute("") +
            SYNC + close("S", "s1") + SYNC + TERMINATE, (0x80, 0, 0)),
        "txn_pooling_duplicate_prepare": session(
            T, login() + parse("a", "SELECT 1") + SYNC + parse("a", "SELECT 2") + SYNC +
            describe("S", "a") + SYNC),
        "session_extended": session(
            0, login() + parse("", "SELECT 1") + bind("", "") + describe("P", "") +
            execute("", 1) + execute("") + FLUSH + SYNC + TERMINATE),
        "extended_error_skip": session(
            0, login() + parse("", "SELECT parsefail") + bind("", "") + execute("") + SYNC +
            query("SELECT 1")),
        "extended_error_no_sync_then_leave": session(
            0, login() + parse("", "SELECT parsefail") + bind("", "") + execute("")),
        "simple_error_in_block": session(
            T, login() + query("BEGIN") + query("SELECT fail") + query("SELECT 1") +
            query("ROLLBACK") + TERMINATE),
        "copy_in": session(0, login() + query("COPY t FROM STDIN") + copy_data(b"1\n") +
                           copy_data(b"2\n") + COPY_DONE + query("SELECT 1")),
        "copy_in_fail": session(T, login() + query("COPY t FROM STDIN") + copy_data(b"1\n") +
                                copy_fail("no") + query("SELECT 1")),
        "copy_out": session(0, login() + query("COPY t TO STDOUT") + TERMINATE),
        "copy_extended": session(
            T, login() + parse("", "COPY t FROM STDIN") + bind("", "") + execute("") + SYNC +
            copy_data(b"1\n") + COPY_DONE + SYNC),
        "session_features": session(
            T, login() + query("LISTEN ch") + query("SET search_path = a") +
            query("NOTIFY ch") + query("SELECT notice") + query("DISCARD ALL") +
            query("DEALLOCATE ALL") + query("RESET ALL") + TERMINATE),
        "startup_settings_sync": session(
            T, login(extra=[("options", "-c statement_timeout=5s"),
                            ("application_name", "fuzz")]) + query("SET work_mem = '8MB'") +
            query("SELECT 1") + query("SELECT 2")),
        "function_call": session(0, login() + function_call(1598, [b"x"]) + TERMINATE),
        "scram_first": session(0, login(user="scram") +
                               sasl_initial("SCRAM-SHA-256", b"n,,n=,r=rOprNGfwEbeRWgbNEkqO") +
                               sasl_response(b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=AAAA")),
        "cleartext_login": session(T, login(user="clear") + password("secret") +
                                   query("SELECT 1") + TERMINATE),
        "cleartext_wrong": session(0, login(user="clear") + password("wrong")),
        "md5_login": session(0, login(user="md5user") + password("md5" + "1" * 32)),
        "database_down": session(0, login(database="down") + query("SELECT 1")),
        "unknown_database": session(0, login(database="nope")),
        "shard_asks_password": session(SHARD_ASKS_PASSWORD, login() + query("SELECT 1")),
        "shard_refuses_login": session(SHARD_REFUSES_LOGIN, login() + query("SELECT 1")),
        "shutdown_in_transaction": session(SHUTDOWN_FIRST | T, login() + query("BEGIN") +
                                           query("SELECT 1")),
        "shutdown_idle": session(SHUTDOWN_FIRST, login() + query("SELECT 1")),
        "bad_type_after_login": session(0, login() + typed("p", b"x\0") + query("SELECT 1")),
        "terminate_in_auth": session(0, login(user="clear") + TERMINATE),
        "query_in_auth": session(0, login(user="clear") + query("SELECT 1")),
        "too_large_message": session(T, login() + b"Q" + struct.pack("!i", 100000)),
        "bad_length_after_login": session(0, login() + b"Q\x00\x00\x00\x02"),
        # The Sync comes in a later read than the Execute the shard dies on.
        "txn_pooling_shard_terminated_mid_batch": session_split_before_last(
            T, login() + parse("", "SELECT terminate") + bind("", "") + execute(""), SYNC),
        "txn_pooling_shard_crash_mid_batch": session_split_before_last(
            T, login() + parse("", "SELECT crash") + bind("", "") + execute(""), SYNC),
        "session_shard_crash_in_query": session(0, login() + query("SELECT crash")),
        # A second client logs in after the first one left and runs SELECT 1.
        "second_client_after_prepared": session(
            T | SECOND_CLIENT, login() + parse("s1", "SELECT 1") + bind("", "s1") + execute("") +
            SYNC + TERMINATE),
        "second_client_after_open_transaction": session(
            T | SECOND_CLIENT, login() + query("BEGIN") + query("SELECT 1")),
        "second_client_after_unsynced_error": session(
            T | SECOND_CLIENT, login() + parse("", "SELECT parsefail") + bind("", "") +
            execute("")),
        "second_client_session_pooling": session(
            SECOND_CLIENT, login() + query("SET work_mem = '1MB'") + query("SELECT 1")),
        "second_client_pipelines_startup_and_query": session(
            SECOND_CLIENT | SECOND_CLIENT_PIPELINES, login() + query("SELECT 1")),
        # The sharded database: ids 1 and 3 hash to shards 0 and 1 (shard_probe bigint 2); a count is
        # multi-shard.
        "sharded_keyed_and_multi": session(
            T, login(database="sharded") + query("SELECT * FROM users WHERE id = 1") +
            query("SELECT count(*) FROM users") + query("SELECT id FROM users ORDER BY id LIMIT 1")),
        "sharded_batch_begin_spread": session(
            T, login(database="sharded") + stmt("BEGIN") +
            stmt("INSERT INTO users (id) VALUES (1)") + stmt("INSERT INTO users (id) VALUES (3)") +
            SYNC + query("ROLLBACK")),
        "sharded_batch_begin_multi": session(
            T, login(database="sharded") + stmt("BEGIN") + stmt("SELECT count(*) FROM users") +
            SYNC + query("COMMIT")),
        "sharded_batch_keyed_then_multi": session(
            0, login(database="sharded") + stmt("SELECT * FROM users WHERE id = 1") +
            stmt("SELECT count(*) FROM users") + SYNC),
        "sharded_extended_set": session(
            T, login(database="sharded") + stmt("SET statement_timeout = '5s'") + SYNC +
            stmt("SELECT * FROM users WHERE id = 3") + SYNC),
        # Savepoints in a transaction over both shards; a multi-shard write opening a batch.
        "sharded_savepoints": session(
            T, login(database="sharded") + query("BEGIN") +
            query("INSERT INTO users (id) VALUES (1)") + query("SAVEPOINT a") +
            query("INSERT INTO users (id) VALUES (3)") + query("ROLLBACK TO SAVEPOINT a") +
            query("RELEASE a") + query("COMMIT")),
        # Settings in a transaction over both shards: SET LOCAL before the second shard joins,
        # SET once it runs on both.
        "sharded_settings": session(
            T, login(database="sharded") + query("BEGIN") +
            query("INSERT INTO users (id) VALUES (1)") + query("SET LOCAL work_mem = '7MB'") +
            query("INSERT INTO users (id) VALUES (3)") + query("SET statement_timeout = '9s'") +
            query("COMMIT")),
        "sharded_batch_savepoint": session(
            T, login(database="sharded") + stmt("BEGIN") + stmt("INSERT INTO users (id) VALUES (1)") +
            stmt("SAVEPOINT a") + stmt("INSERT INTO users (id) VALUES (3)") +
            stmt("ROLLBACK TO a") + SYNC + query("COMMIT")),
        "sharded_batch_multi_write_first": session(
            T, login(database="sharded") + stmt("UPDATE users SET name = 'x'") +
            stmt("INSERT INTO users (id) VALUES (1)") + stmt("COMMIT") + SYNC),
        "garbage": session(0x0f, bytes(range(256)), (0x10, 0x20, 0x30)),
    }
    for name, data in s.items():
        write("fuzz_session", name, data)


def main():
    seeds = os.path.join(HERE, "seeds")
    if os.path.isdir(seeds):
        shutil.rmtree(seeds)
    startup_seeds()
    frontend_seeds()
    session_seeds()


if __name__ == "__main__":
    main()
