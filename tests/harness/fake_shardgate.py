#!/usr/bin/python3
"""A stand-in for the shardgate binary's process interface, to test the harness and demo without it.

Same command line (--config FILE / --check-config FILE), listens on the config's port (and serves
/metrics on metrics_port), logs to stderr, reloads on SIGHUP and stops on SIGTERM. Every client
gets a FATAL ErrorResponse: it proxies nothing.
"""

from __future__ import annotations

import selectors
import signal
import socket
import struct
import sys
import time
import tomllib


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} fake-shardgate: {msg}", file=sys.stderr, flush=True)


def load(path: str) -> dict:
    with open(path, "rb") as f:
        cfg = tomllib.load(f)
    if not cfg.get("databases") or not all(db.get("shards") for db in cfg["databases"]):
        raise ValueError("at least one [[databases]] with [[databases.shards]] is required")
    return cfg


def error_response(message: str) -> bytes:
    fields = b"SFATAL\0VFATAL\0C0A000\0M" + message.encode() + b"\0\0"
    return b"E" + struct.pack("!i", len(fields) + 4) + fields


def answer_client(conn: socket.socket) -> None:
    conn.settimeout(2)
    try:
        while True:
            header = conn.recv(8)
            if len(header) < 8:
                return
            length, code = struct.unpack("!ii", header)
            if length > 8:
                conn.recv(length - 8)
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not supported
                conn.sendall(b"N")
                continue
            conn.sendall(error_response("fake shardgate: no queries here"))
            return
    except OSError:
        return
    finally:
        conn.close()


def answer_metrics(conn: socket.socket) -> None:
    conn.settimeout(2)
    try:
        conn.recv(4096)
        body = b"# fake shardgate\nshardgate_up 1\n"
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
    except OSError:
        pass
    finally:
        conn.close()


def listener(addr: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    s.setblocking(False)
    return s


def serve(path: str) -> int:
    try:
        cfg = load(path)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        log(f"{path}: {e}")
        return 2
    general = cfg.get("general", {})
    addr = general.get("listen_addr", "127.0.0.1")
    sel = selectors.DefaultSelector()
    sel.register(listener(addr, int(general.get("port", 6432))), selectors.EVENT_READ, answer_client)
    if general.get("metrics_port"):
        sel.register(listener(addr, int(general["metrics_port"])), selectors.EVENT_READ, answer_metrics)
    events = {"hup": False, "term": False}
    signal.signal(signal.SIGHUP, lambda *_: events.update(hup=True))
    signal.signal(signal.SIGTERM, lambda *_: events.update(term=True))
    signal.signal(signal.SIGINT, lambda *_: events.update(term=True))
    log(f"listening on {addr}:{general.get('port', 6432)}")
    while not events["term"]:
        for key, _ in sel.select(timeout=0.1):
            conn, _ = key.fileobj.accept()
            key.data(conn)
        if events["hup"]:
            events["hup"] = False
            try:
                load(path)
                log("reloaded config")
            except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
                log(f"reload failed, keeping the old config: {e}")
    log("shutting down")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--check-config":
        try:
            load(argv[1])
        except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
            print(f"{argv[1]}: {e}", file=sys.stderr)
            return 2
        return 0
    if len(argv) == 2 and argv[0] == "--config":
        return serve(argv[1])
    print("usage: fake_shardgate.py --config FILE | --check-config FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
