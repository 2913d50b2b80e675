"""A tiny raw-socket Postgres v3 wire client, so tests can send exact (and deliberately broken) bytes.

Drivers such as psycopg never send malformed messages, never stop half-way through one and hide
BackendKeyData, NegotiateProtocolVersion and PortalSuspended; this module exposes all of it.
Python 3.11 stdlib only. Every read has a timeout, so a silent peer fails a test instead of hanging it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

PROTOCOL_3_0 = 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

# Authentication request codes (payload of an 'R' message).
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

DEFAULT_TIMEOUT = 10.0


def protocol_version(major: int, minor: int) -> int:
    return (major << 16) | minor


# ---------------------------------------------------------------------------------------------
# Frontend messages
# ---------------------------------------------------------------------------------------------


def cstr(s: str | bytes) -> bytes:
    if isinstance(s, str):
        s = s.encode()
    return s + b"\0"


def message(type_: bytes, payload: bytes = b"") -> bytes:
    """A typed frontend message: type byte, int32 length (self-inclusive), payload."""
    return type_ + struct.pack("!i", len(payload) + 4) + payload


def raw_message(type_: bytes, length: int, payload: bytes = b"") -> bytes:
    """A typed message with an arbitrary (possibly lying) length field, for bad-input tests."""
    return type_ + struct.pack("!i", length) + payload


def startup_message(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = struct.pack("!i", version)
    for k, v in params.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def gssenc_request() -> bytes:
    return struct.pack("!ii", 8, GSSENC_REQUEST_CODE)


def cancel_request(pid: int, key: int) -> bytes:
    return struct.pack("!iiII", 16, CANCEL_REQUEST_CODE, pid & 0xFFFFFFFF, key & 0xFFFFFFFF)


def query(sql: str) -> bytes:
    return message(b"Q", cstr(sql))


def parse(stmt: str, sql: str, param_oids: tuple[int, ...] = ()) -> bytes:
    body = cstr(stmt) + cstr(sql) + struct.pack("!h", len(param_oids))
    body += b"".join(struct.pack("!I", o) for o in param_oids)
    return message(b"P", body)


def bind(
    portal: str,
    stmt: str,
    params: tuple[bytes | str | None, ...] = (),
    param_formats: tuple[int, ...] = (),
    result_formats: tuple[int, ...] = (),
) -> bytes:
    body = cstr(portal) + cstr(stmt)
    body += struct.pack("!h", len(param_formats)) + b"".join(struct.pack("!h", f) for f in param_formats)
    body += struct.pack("!h", len(params))
    for p in params:
        if p is None:
            body += struct.pack("!i", -1)
        else:
            b = p.encode() if isinstance(p, str) else p
            body += struct.pack("!i", len(b)) + b
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return message(b"B", body)


def describe(kind: str, name: str = "") -> bytes:
    """kind 'S' (statement) or 'P' (portal)."""
    return message(b"D", kind.encode() + cstr(name))


def execute(portal: str = "", max_rows: int = 0) -> bytes:
    return message(b"E", cstr(portal) + struct.pack("!i", max_rows))


def close(kind: str, name: str = "") -> bytes:
    return message(b"C", kind.encode() + cstr(name))


def sync() -> bytes:
    return message(b"S")


def flush() -> bytes:
    return message(b"H")


def terminate() -> bytes:
    return message(b"X")


def copy_data(data: bytes) -> bytes:
    return message(b"d", data)


def copy_done() -> bytes:
    return message(b"c")


def copy_fail(reason: str) -> bytes:
    return message(b"f", cstr(reason))


def password_message(password: str) -> bytes:
    return message(b"p", cstr(password))


def md5_password(user: str, password: str, salt: bytes) -> str:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


# ---------------------------------------------------------------------------------------------
# Backend messages
# ---------------------------------------------------------------------------------------------


@dataclass
class Message:
    type: bytes  # one byte, e.g. b"E"
    payload: bytes

    def __repr__(self) -> str:
        p = self.payload if len(self.payload) <= 60 else self.payload[:60] + b"..."
        return f"Message({self.type!r}, {p!r})"


def split_cstrings(data: bytes) -> list[str]:
    return [s.decode(errors="replace") for s in data.split(b"\0")]


def parse_error_fields(payload: bytes) -> dict[str, str]:
    """ErrorResponse / NoticeResponse: {field code: value}, e.g. {'S': 'FATAL', 'C': '08P01', 'M': ...}."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(payload) and payload[i] != 0:
        code = chr(payload[i])
        end = payload.index(b"\0", i + 1)
        fields[code] = payload[i + 1 : end].decode(errors="replace")
        i = end + 1
    return fields


@dataclass
class ServerError:
    """A parsed ErrorResponse/NoticeResponse."""

    fields: dict[str, str]

    @property
    def severity(self) -> str:
        # 'V' is the non-localized severity (protocol 3.0, Postgres >= 9.6); 'S' may be translated.
        return self.fields.get("V", self.fields.get("S", ""))

    @property
    def code(self) -> str:
        return self.fields.get("C", "")

    @property
    def message(self) -> str:
        return self.fields.get("M", "")

    def __str__(self) -> str:
        return f"{self.severity} {self.code}: {self.message}"


def parse_error(msg: Message) -> ServerError:
    assert msg.type in (b"E", b"N"), msg
    return ServerError(parse_error_fields(msg.payload))


def parse_parameter_status(msg: Message) -> tuple[str, str]:
    name, value = split_cstrings(msg.payload)[:2]
    return name, value


def parse_backend_key_data(msg: Message) -> tuple[int, int]:
    pid, key = struct.unpack("!iI", msg.payload[:8])
    return pid, key


def parse_auth(msg: Message) -> tuple[int, bytes]:
    (code,) = struct.unpack("!i", msg.payload[:4])
    return code, msg.payload[4:]


def parse_row_description(msg: Message) -> list[dict]:
    (n,) = struct.unpack("!h", msg.payload[:2])
    cols, i = [], 2
    for _ in range(n):
        end = msg.payload.index(b"\0", i)
        name = msg.payload[i:end].decode()
        table_oid, attnum, type_oid, typlen, typmod, fmt = struct.unpack("!IhIhih", msg.payload[end + 1 : end + 19])
        cols.append(dict(name=name, table_oid=table_oid, attnum=attnum, type_oid=type_oid, typlen=typlen, typmod=typmod, format=fmt))
        i = end + 19
    return cols


def parse_data_row(msg: Message) -> list[bytes | None]:
    (n,) = struct.unpack("!h", msg.payload[:2])
    vals: list[bytes | None] = []
    i = 2
    for _ in range(n):
        (ln,) = struct.unpack("!i", msg.payload[i : i + 4])
        i += 4
        if ln < 0:
            vals.append(None)
        else:
            vals.append(msg.payload[i : i + ln])
            i += ln
    return vals


def parse_command_complete(msg: Message) -> str:
    return split_cstrings(msg.payload)[0]


def parse_negotiate_protocol_version(msg: Message) -> tuple[int, list[str]]:
    """NegotiateProtocolVersion: (newest version supported, unrecognized option names).

    The protocol docs call the first field the newest *minor* version; Postgres 15 sends the whole
    version (3 << 16 | minor). Callers compare `version & 0xFFFF`."""
    version, n = struct.unpack("!ii", msg.payload[:8])
    names = split_cstrings(msg.payload[8:])[:n]
    return version, names


def parse_notification(msg: Message) -> tuple[int, str, str]:
    (pid,) = struct.unpack("!i", msg.payload[:4])
    channel, payload = split_cstrings(msg.payload[4:])[:2]
    return pid, channel, payload


def parse_copy_response(msg: Message) -> tuple[int, list[int]]:
    """CopyInResponse / CopyOutResponse: (overall format, per-column formats)."""
    fmt, n = struct.unpack("!bh", msg.payload[:3])
    return fmt, list(struct.unpack(f"!{n}h", msg.payload[3 : 3 + 2 * n]))


def types(msgs: list[Message]) -> str:
    """The message types of a reply as one string, e.g. 'TDDCZ' — handy in assertions."""
    return "".join(m.type.decode() for m in msgs)


def data_rows(msgs: list[Message]) -> list[list[str | None]]:
    """The text-format DataRows of a reply, decoded."""
    return [[None if v is None else v.decode() for v in parse_data_row(m)] for m in msgs if m.type == b"D"]


def errors(msgs: list[Message]) -> list[ServerError]:
    return [parse_error(m) for m in msgs if m.type == b"E"]


# ---------------------------------------------------------------------------------------------
# The connection
# ---------------------------------------------------------------------------------------------


class ConnectionClosed(Exception):
    """The peer closed the connection (EOF or reset) while a message was expected."""

    def __init__(self, received: list[Message], partial: bytes = b""):
        super().__init__(f"connection closed by peer after {types(received)!r} (+{len(partial)} stray bytes)")
        self.received = received
        self.partial = partial


class LoginError(Exception):
    """The server answered the startup/authentication with an ErrorResponse."""

    def __init__(self, error: ServerError, received: list[Message]):
        super().__init__(str(error))
        self.error = error
        self.received = received


@dataclass
class LoginResult:
    params: dict[str, str] = field(default_factory=dict)  # ParameterStatus at login
    pid: int | None = None  # BackendKeyData
    key: int | None = None
    auth_codes: list[int] = field(default_factory=list)  # the Authentication requests seen, in order
    negotiate: tuple[int, list[str]] | None = None  # NegotiateProtocolVersion, if any
    notices: list[ServerError] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)


class PgWire:
    """One client socket. Messages are read with explicit timeouts; nothing blocks forever."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.received: list[Message] = []  # everything read so far, for failure messages

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> "PgWire":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def abort(self) -> None:
        """Close with SO_LINGER 0, so the peer sees a TCP reset instead of an orderly FIN."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    # -- low level ------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating a peer that has already closed (it may legitimately hang up mid-way)."""
        try:
            self.send(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline: float) -> bool:
        """Read more bytes into the buffer. False on EOF/reset; TimeoutError past the deadline."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply within the timeout; received so far: {types(self.received)!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(f"no reply within the timeout; received so far: {types(self.received)!r}") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_byte(self, timeout: float | None = None) -> bytes:
        """One raw byte (the answer to SSLRequest/GSSENCRequest)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.buf:
            if not self._fill(deadline):
                raise ConnectionClosed(self.received)
        b = bytes(self.buf[:1])
        del self.buf[:1]
        return b

    def recv(self, timeout: float | None = None) -> Message:
        """The next backend message. ConnectionClosed on EOF, TimeoutError if none arrives in time."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            if len(self.buf) >= 5:
                (ln,) = struct.unpack("!i", self.buf[1:5])
                if ln < 4:
                    raise AssertionError(f"server sent a message with invalid length {ln}: {bytes(self.buf[:16])!r}")
                if len(self.buf) >= 1 + ln:
                    m = Message(bytes(self.buf[:1]), bytes(self.buf[5 : 1 + ln]))
                    del self.buf[: 1 + ln]
                    self.received.append(m)
                    return m
            if not self._fill(deadline):
                raise ConnectionClosed(self.received, bytes(self.buf))

    def recv_until(self, types_: bytes | str = b"Z", timeout: float | None = None) -> list[Message]:
        """Messages up to and including the first one whose type is in types_ (default ReadyForQuery)."""
        if isinstance(types_, str):
            types_ = types_.encode()
        deadline = time.monotonic() + (timeout or self.timeout)
        out: list[Message] = []
        while True:
            m = self.recv(max(0.001, deadline - time.monotonic()))
            out.append(m)
            if m.type in [bytes([t]) for t in types_]:
                return out

    def wait_closed(self, timeout: float | None = None) -> list[Message]:
        """Read until the server closes the connection; the messages read meanwhile. TimeoutError if it stays open."""
        deadline = time.monotonic() + (timeout or self.timeout)
        out: list[Message] = []
        while True:
            try:
                out.append(self.recv(max(0.001, deadline - time.monotonic())))
            except ConnectionClosed:
                return out

    def read_raw_until_closed(self, timeout: float | None = None) -> bytes:
        """All bytes until the server closes the connection, unparsed (for replies that are not v3 messages)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def is_closed(self, timeout: float = 1.0) -> bool:
        """True if the server closes the connection within timeout (any messages are discarded)."""
        try:
            self.wait_closed(timeout)
            return True
        except TimeoutError:
            return False

    # -- high level -----------------------------------------------------------------------------
    def login(
        self,
        user: str = "postgres",
        password: str | None = "postgres",
        database: str = "app",
        params: dict[str, str] | None = None,
        version: int = PROTOCOL_3_0,
        timeout: float | None = None,
    ) -> LoginResult:
        """Startup + authentication (trust, cleartext, md5, SCRAM-SHA-256) up to the first ReadyForQuery.

        Raises LoginError on an ErrorResponse. SCRAM's server signature is verified.
        """
        p = {"user": user, "database": database}
        p.update(params or {})
        self.send(startup_message(p, version))
        return self.finish_login(user, password, timeout)

    def finish_login(self, user: str, password: str | None, timeout: float | None = None) -> LoginResult:
        deadline = time.monotonic() + (timeout or self.timeout)
        res = LoginResult()
        scram: _Scram | None = None
        while True:
            m = self.recv(max(0.001, deadline - time.monotonic()))
            res.messages.append(m)
            if m.type == b"E":
                raise LoginError(parse_error(m), res.messages)
            if m.type == b"N":
                res.notices.append(parse_error(m))
            elif m.type == b"v":
                res.negotiate = parse_negotiate_protocol_version(m)
            elif m.type == b"S":
                k, v = parse_parameter_status(m)
                res.params[k] = v
            elif m.type == b"K":
                res.pid, res.key = parse_backend_key_data(m)
            elif m.type == b"Z":
                return res
            elif m.type == b"R":
                code, data = parse_auth(m)
                res.auth_codes.append(code)
                if code == AUTH_OK:
                    continue
                if password is None:
                    raise AssertionError(f"server asked for authentication {code} but the test gave no password")
                if code == AUTH_CLEARTEXT:
                    self.send(password_message(password))
                elif code == AUTH_MD5:
                    self.send(password_message(md5_password(user, password, data[:4])))
                elif code == AUTH_SASL:
                    mechs = split_cstrings(data)
                    if "SCRAM-SHA-256" not in mechs:
                        raise AssertionError(f"SASL without SCRAM-SHA-256: {mechs}")
                    scram = _Scram(password)
                    first = scram.client_first().encode()
                    self.send(message(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", len(first)) + first))
                elif code == AUTH_SASL_CONTINUE:
                    assert scram is not None, "SASLContinue before SASL"
                    self.send(message(b"p", scram.client_final(data.decode()).encode()))
                elif code == AUTH_SASL_FINAL:
                    assert scram is not None, "SASLFinal before SASL"
                    scram.verify_server_final(data.decode())
                else:
                    raise AssertionError(f"unsupported authentication request {code}")
            else:
                raise AssertionError(f"unexpected message during login: {m!r}")

    def simple(self, sql: str, timeout: float | None = None) -> list[Message]:
        """Send one Query message and read the reply up to ReadyForQuery."""
        self.send(query(sql))
        return self.recv_until(b"Z", timeout)

    def scalar(self, sql: str, timeout: float | None = None) -> str | None:
        """The first column of the first row of a simple query; fails on an ErrorResponse."""
        msgs = self.simple(sql, timeout)
        errs = errors(msgs)
        assert not errs, f"{sql!r} failed: {errs[0]}"
        rows = data_rows(msgs)
        assert rows, f"{sql!r} returned no rows: {types(msgs)}"
        return rows[0][0]


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) without channel binding, as libpq does over plain TCP."""

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"
        self.auth_message = ""
        self.salted = b""

    def client_first(self) -> str:
        return "n,," + self.first_bare

    def client_final(self, server_first: str) -> str:
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise AssertionError("SCRAM server nonce does not extend the client nonce")
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        self.salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.digest(self.salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}"
        signature = hmac.digest(stored_key, self.auth_message.encode(), "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def verify_server_final(self, server_final: str) -> None:
        attrs = dict(kv.split("=", 1) for kv in server_final.split(","))
        if "e" in attrs:
            raise AssertionError(f"SCRAM server-final error: {attrs['e']}")
        server_key = hmac.digest(self.salted, b"Server Key", "sha256")
        expected = hmac.digest(server_key, self.auth_message.encode(), "sha256")
        if base64.b64decode(attrs["v"]) != expected:
            raise AssertionError("SCRAM server signature mismatch: the server does not know the password")


# ---------------------------------------------------------------------------------------------
# Test helpers
# ---------------------------------------------------------------------------------------------


def target_is_direct() -> bool:
    """True when the suite runs against plain Postgres (SHARDGATE_TARGET=direct) to validate the tests."""
    return os.environ.get("SHARDGATE_TARGET", "") == "direct"


@contextlib.contextmanager
def deadline(seconds: int, what: str = "test"):
    """Fail (TimeoutError) whatever blocks in the main thread past `seconds` — a backstop for driver calls
    (psycopg, subprocess) that have no timeout of their own. SIGALRM, so main thread only."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"{what} exceeded its {seconds}s deadline")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
