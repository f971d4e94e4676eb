#!/usr/bin/python3
"""Plain TCP peers for the kernel and end-to-end tests of the agent.

    tcp_peer.py echo-server --listen IP --port PORT
    tcp_peer.py dial --connect HOST:PORT [--count N] [--interval SECONDS] [--message TEXT]
    tcp_peer.py hold --connect HOST:PORT [--interval SECONDS]
    tcp_peer.py many --connect HOST:PORT --connections N --release-file PATH

Every line of output is flushed at once, so a test can wait for it.

echo-server  prints "listening" once it accepts, then for every connection
             "accepted <peer ip> <peer port>" and echoes what it receives until the
             client's FIN, then closes. One thread, non-blocking, any number of clients.
dial         connects N times (0: until killed), one after the other. Each attempt sends
             a line (or TEXT, which may be empty), half-closes, reads the echo to EOF and
             prints
               dial <i> ok peer=<getpeername> local=<getsockname>
             or dial <i> <connect-error|io-error|short-echo|timeout> <detail>.
             Exits 0 if every attempt was ok, else 1.
hold         one long-lived connection: a line every interval, its echo read back;
             prints "connected peer=... local=..." then "ping <i> ok" per round trip, or
             "hold error <detail>" and exits 1. Runs until killed.
many         opens N connections at once (raising RLIMIT_NOFILE), then round-trips a
             line on each, prints "holding <N>", keeps them all open until PATH exists,
             then closes them and prints "closed <N>". Exits 1 on any failure.

The host may be an IPv6 literal (e.g. ::ffff:10.77.0.12, which is the IPv4 address
reached through an AF_INET6 socket).
"""

import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time

TIMEOUT_SECONDS = 10


def say(line):
    print(line, flush=True)


def split_target(target):
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port)


def open_connection(target):
    host, port = split_target(target)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT_SECONDS)
    sock.connect((host, port))
    return sock


def address(pair):
    return "%s:%d" % (pair[0], pair[1])


def error_name(error):
    if isinstance(error, socket.timeout):
        return "timeout"
    if error.errno is not None:
        return errno.errorcode.get(error.errno, str(error.errno))
    return str(error)


def recv_all(sock):
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


# --- echo server ------------------------------------------------------------------


def echo_server(listen, port):
    raise_file_limit()
    server = socket.socket(socket.AF_INET6 if ":" in listen else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((listen, port))
    server.listen(4096)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, None)
    pending = {}  # socket -> bytes to echo back
    say("listening")
    while True:
        for key, events in selector.select():
            if key.data is None:
                while True:
                    try:
                        conn, peer = server.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    pending[conn] = bytearray()
                    selector.register(conn, selectors.EVENT_READ, "conn")
                    say("accepted %s %d" % (peer[0], peer[1]))
                continue
            conn = key.fileobj
            try:
                if events & selectors.EVENT_READ:
                    data = conn.recv(65536)
                    if not data:
                        # The client is done: send what is left and close.
                        conn.setblocking(True)
                        conn.sendall(pending.pop(conn))
                        selector.unregister(conn)
                        conn.close()
                        continue
                    pending[conn] += data
                if pending[conn]:
                    sent = conn.send(pending[conn])
                    del pending[conn][:sent]
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if pending[conn] else 0)
                selector.modify(conn, want, "conn")
            except OSError:
                pending.pop(conn, None)
                selector.unregister(conn)
                conn.close()


# --- clients ----------------------------------------------------------------------


def dial(target, count, interval, text):
    all_ok = True
    attempt = 0
    while count == 0 or attempt < count:
        if text is None:
            message = b"dial %d from pid %d\n" % (attempt, os.getpid())
        else:
            message = text.encode()
        try:
            sock = open_connection(target)
        except OSError as error:
            say("dial %d connect-error %s" % (attempt, error_name(error)))
            all_ok = False
        else:
            with sock:
                try:
                    peer = address(sock.getpeername())
                    local = address(sock.getsockname())
                    sock.sendall(message)
                    sock.shutdown(socket.SHUT_WR)
                    echoed = recv_all(sock)
                except OSError as error:
                    say("dial %d io-error %s" % (attempt, error_name(error)))
                    all_ok = False
                else:
                    if echoed == message:
                        say("dial %d ok peer=%s local=%s" % (attempt, peer, local))
                    else:
                        say("dial %d short-echo %r" % (attempt, echoed))
                        all_ok = False
        attempt += 1
        if count == 0 or attempt < count:
            time.sleep(interval)
    return 0 if all_ok else 1


def hold(target, interval):
    try:
        sock = open_connection(target)
        say("connected peer=%s local=%s" % (address(sock.getpeername()),
                                             address(sock.getsockname())))
        round_trip = 0
        while True:
            message = b"ping %d\n" % round_trip
            sock.sendall(message)
            echoed = b""
            while len(echoed) < len(message):
                chunk = sock.recv(len(message) - len(echoed))
                if not chunk:
                    raise OSError("EOF after %d of %d bytes" % (len(echoed), len(message)))
                echoed += chunk
            if echoed != message:
                raise OSError("echo %r" % echoed)
            say("ping %d ok" % round_trip)
            round_trip += 1
            time.sleep(interval)
    except OSError as error:
        say("hold error %s" % error_name(error))
        return 1


def raise_file_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def many(target, connections, release_file):
    raise_file_limit()
    socks = []
    try:
        for index in range(connections):
            socks.append(open_connection(target))
        say("opened %d" % len(socks))
        for index, sock in enumerate(socks):
            sock.sendall(b"connection %d\n" % index)
        for index, sock in enumerate(socks):
            expected = b"connection %d\n" % index
            echoed = b""
            while len(echoed) < len(expected):
                chunk = sock.recv(len(expected) - len(echoed))
                if not chunk:
                    raise OSError("connection %d: EOF" % index)
                echoed += chunk
            if echoed != expected:
                raise OSError("connection %d: echo %r" % (index, echoed))
        say("holding %d" % len(socks))
        deadline = time.monotonic() + 120
        while not os.path.exists(release_file):
            if time.monotonic() > deadline:
                raise OSError("nobody created %s" % release_file)
            time.sleep(0.05)
    except OSError as error:
        say("many error after %d connections: %s" % (len(socks), error_name(error)))
        return 1
    finally:
        for sock in socks:
            sock.close()
    say("closed %d" % len(socks))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    server_args = sub.add_parser("echo-server")
    server_args.add_argument("--listen", required=True)
    server_args.add_argument("--port", type=int, required=True)
    dial_args = sub.add_parser("dial")
    dial_args.add_argument("--connect", required=True)
    dial_args.add_argument("--count", type=int, default=1)
    dial_args.add_argument("--interval", type=float, default=0.1)
    dial_args.add_argument("--message")
    hold_args = sub.add_parser("hold")
    hold_args.add_argument("--connect", required=True)
    hold_args.add_argument("--interval", type=float, default=0.05)
    many_args = sub.add_parser("many")
    many_args.add_argument("--connect", required=True)
    many_args.add_argument("--connections", type=int, required=True)
    many_args.add_argument("--release-file", required=True)
    args = parser.parse_args()
    if args.mode == "echo-server":
        return echo_server(args.listen, args.port)
    if args.mode == "dial":
        return dial(args.connect, args.count, args.interval, args.message)
    if args.mode == "hold":
        return hold(args.connect, args.interval)
    return many(args.connect, args.connections, args.release_file)


if __name__ == "__main__":
    sys.exit(main())
