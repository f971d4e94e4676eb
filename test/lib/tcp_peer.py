#!/usr/bin/python3
"""TCP peers for the kernel and end-to-end tests of the agent: well-behaved ones, and the
faulty servers and clients a proxy must survive (resets, half-closes, slowloris, huge
headers, a reader that never reads).

    tcp_peer.py echo-server --listen IP --port PORT
    tcp_peer.py reset-server --listen IP --port PORT
    tcp_peer.py late-server --listen IP --port PORT
    tcp_peer.py digest-server --listen IP --port PORT
    tcp_peer.py dial --connect HOST:PORT [--count N] [--interval SECONDS] [--message TEXT]
    tcp_peer.py hold --connect HOST:PORT [--interval SECONDS]
    tcp_peer.py many --connect HOST:PORT --connections N --release-file PATH
    tcp_peer.py echo-all --connect HOST:PORT --connections N --release-file PATH
    tcp_peer.py half-close --connect HOST:PORT
    tcp_peer.py slowloris --connect HOST:PORT --bytes N
    tcp_peer.py big-header --connect HOST:PORT --header-bytes N
    tcp_peer.py h2-never-reads --connect HOST:PORT --path PATH

Every line of output is flushed at once, so a test can wait for it. A server prints
"listening" once it accepts. A line about a connection that a test reads once its client
has its answer is printed before that answer ("accepted", "request"); the others (what a
server did after answering) come as they happen, and a test waits for them.

echo-server  for every connection "accepted <peer ip> <peer port>", then echoes what it
             receives until the client's FIN, then closes. One thread, non-blocking, any
             number of clients.
reset-server reads a request head, answers with the status line, headers that promise
             100000 bytes of body and 10000 of them, then resets the connection (SO_LINGER
             0) and prints "reset".
late-server  reads a request head and prints "request <bytes>", waits 2 s (its client may be
             gone by then), answers with a 1 MiB body, prints "answered" and closes.
digest-server reads one request head (to its blank line, however long), answers with its
             length and SHA-256, closes, and prints "answered <bytes>".
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
echo-all     opens N connections to an echo server and sends a line on each, prints
             "sent <N>", then collects the echoes as they come ("echoed <K>"): an echoed
             connection is kept open until PATH exists, and closed at once after. Prints
             "all echoed" (exit 0), or what went wrong (exit 1). For a proxy out of
             descriptors: the connections it cannot take yet wait.
half-close   sends a request, half-closes, prints "half-closed local=<getsockname>", then
             reads nothing until killed.
slowloris    prints "connected local=<getsockname>", then sends the start of a request one
             byte a second, N bytes ("sent <i>" each), prints "done", then is silent until
             killed.
big-header   sends one request whose X-Big header value has N bytes, reads the answer of a
             digest-server, prints "sent <bytes> status <status line>", then "match" if the
             server received exactly the bytes sent (length and SHA-256), else "mismatch"
             (exit 1).
h2-never-reads  HTTP/2 with prior knowledge, by hand: the preface and SETTINGS (initial
             stream window 2^31-1, no push), the server's SETTINGS read and acknowledged,
             the connection window opened to 2^31-1, and one GET of PATH (HPACK:
             static-table :method, :scheme; literal :path and :authority); prints
             "requested local=<getsockname>", then never reads again, until killed.

The host may be an IPv6 literal (e.g. ::ffff:10.77.0.12, which is the IPv4 address
reached through an AF_INET6 socket).
"""

import argparse
import errno
import hashlib
import os
import resource
import select
import selectors
import socket
import struct
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


# --- servers ----------------------------------------------------------------------


def listening_socket(listen, port, backlog):
    server = socket.socket(socket.AF_INET6 if ":" in listen else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((listen, port))
    server.listen(backlog)
    return server


def read_head(conn):
    """The bytes of one request head, to its blank line (all that came, at EOF)."""
    data = bytearray()
    end = -1
    while end < 0:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        searched = max(0, len(data) - 3)
        data += chunk
        end = data.find(b"\r\n\r\n", searched)
    return bytes(data[:end + 4]) if end >= 0 else bytes(data)


def echo_server(listen, port):
    raise_file_limit()
    server = listening_socket(listen, port, 4096)
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


def serve_each(listen, port, handle):
    """Accepts connections one at a time and hands each to `handle`, which closes it."""
    server = listening_socket(listen, port, 16)
    say("listening")
    while True:
        conn, _ = server.accept()
        handle(conn)


def reset_server(listen, port):
    def handle(conn):
        read_head(conn)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: 100000\r\n\r\n" + b"x" * 10000)
            time.sleep(0.3)  # the partial response reaches the client before the reset
        except OSError as error:
            say("send failed %s" % error)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        say("reset")
    serve_each(listen, port, handle)


def late_server(listen, port):
    def handle(conn):
        say("request %d" % len(read_head(conn)))
        time.sleep(2)
        try:
            body = b"y" * (1 << 20)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            say("answered")
        except OSError as error:
            say("send failed %s" % error)
        conn.close()
    serve_each(listen, port, handle)


def digest_server(listen, port):
    def handle(conn):
        head = read_head(conn)
        body = b"%d %s" % (len(head), hashlib.sha256(head).hexdigest().encode())
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(body) + body)
        conn.close()
        say("answered %d" % len(head))
    serve_each(listen, port, handle)


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


def echo_all(target, connections, release_file):
    pending = {}  # socket -> [line sent, bytes echoed so far]
    for index in range(connections):
        sock = open_connection(target)
        sock.sendall(b"line %d\n" % index)
        pending[sock] = [b"line %d\n" % index, b""]
    say("sent %d" % connections)
    held, echoed, deadline = [], 0, time.time() + 60
    while pending and time.time() < deadline:
        released = os.path.exists(release_file)
        if released:
            for sock in held:
                sock.close()
            held = []
        readable, _, _ = select.select(list(pending), [], [], 0.1)
        for sock in readable:
            chunk = sock.recv(4096)
            if not chunk:
                say("a connection ended before its echo")
                return 1
            pending[sock][1] += chunk
            if pending[sock][1] == pending[sock][0]:
                del pending[sock]
                echoed += 1
                say("echoed %d" % echoed)
                if released:
                    sock.close()
                else:
                    held.append(sock)
    say("all echoed" if not pending else "%d never echoed" % len(pending))
    return 0 if not pending else 1


def half_close(target):
    sock = open_connection(target)
    sock.sendall(b"GET /half-closed HTTP/1.1\r\nHost: voting\r\n\r\n")
    sock.shutdown(socket.SHUT_WR)
    say("half-closed local=%s" % address(sock.getsockname()))
    time.sleep(120)
    return 0


def slowloris(target, count):
    sock = open_connection(target)
    say("connected local=%s" % address(sock.getsockname()))
    request = b"GET /slowloris HTTP/1.1\r\nHost: voting\r\n"
    for index in range(count):
        sock.sendall(request[index:index + 1])
        say("sent %d" % (index + 1))
        time.sleep(1)
    say("done")
    time.sleep(120)
    return 0


def big_header(target, header_bytes):
    sock = open_connection(target)
    sock.settimeout(20)
    value = (b"0123456789abcdef" * (header_bytes // 16 + 1))[:header_bytes]
    request = b"GET /big-header HTTP/1.1\r\nHost: voting\r\nX-Big: " + value + b"\r\n\r\n"
    sock.sendall(request)
    answer = recv_all(sock)
    expected = b"%d %s" % (len(request), hashlib.sha256(request).hexdigest().encode())
    status = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    say("sent %d status %s" % (len(request), status))
    if answer.endswith(b"\r\n\r\n" + expected):
        say("match")
        return 0
    say("mismatch %r" % answer[-200:])
    return 1


def h2_frame(kind, flags, stream, payload):
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) +
            struct.pack(">I", stream) + payload)


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("EOF")
        data += chunk
    return data


def h2_never_reads(target, path):
    host, port = split_target(target)
    sock = open_connection(target)
    sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" +
                 h2_frame(4, 0, 0, struct.pack(">HI", 4, 2**31 - 1) + struct.pack(">HI", 2, 0)))
    header = read_exactly(sock, 9)
    length = int.from_bytes(header[:3], "big")
    assert header[3] == 4 and header[4] == 0, "expected the server's SETTINGS, got %r" % header
    read_exactly(sock, length)
    authority = ("%s:%d" % (host, port)).encode()
    path = path.encode()
    block = (b"\x82\x86" + b"\x04" + bytes([len(path)]) + path + b"\x01" +
             bytes([len(authority)]) + authority)
    sock.sendall(h2_frame(4, 1, 0, b"") + h2_frame(8, 0, 0, struct.pack(">I", 2**31 - 1 - 65535)) +
                 h2_frame(1, 0x5, 1, block))
    say("requested local=%s" % address(sock.getsockname()))
    time.sleep(120)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    servers = {"echo-server": echo_server, "reset-server": reset_server,
               "late-server": late_server, "digest-server": digest_server}
    for mode in servers:
        server_args = sub.add_parser(mode)
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
    for mode in ("many", "echo-all"):
        many_args = sub.add_parser(mode)
        many_args.add_argument("--connect", required=True)
        many_args.add_argument("--connections", type=int, required=True)
        many_args.add_argument("--release-file", required=True)
    sub.add_parser("half-close").add_argument("--connect", required=True)
    slowloris_args = sub.add_parser("slowloris")
    slowloris_args.add_argument("--connect", required=True)
    slowloris_args.add_argument("--bytes", type=int, required=True)
    big_header_args = sub.add_parser("big-header")
    big_header_args.add_argument("--connect", required=True)
    big_header_args.add_argument("--header-bytes", type=int, required=True)
    h2_args = sub.add_parser("h2-never-reads")
    h2_args.add_argument("--connect", required=True)
    h2_args.add_argument("--path", required=True)
    args = parser.parse_args()
    if args.mode in servers:
        return servers[args.mode](args.listen, args.port)
    if args.mode == "dial":
        return dial(args.connect, args.count, args.interval, args.message)
    if args.mode == "hold":
        return hold(args.connect, args.interval)
    if args.mode == "many":
        return many(args.connect, args.connections, args.release_file)
    if args.mode == "echo-all":
        return echo_all(args.connect, args.connections, args.release_file)
    if args.mode == "half-close":
        return half_close(args.connect)
    if args.mode == "slowloris":
        return slowloris(args.connect, args.bytes)
    if args.mode == "big-header":
        return big_header(args.connect, args.header_bytes)
    return h2_never_reads(args.connect, args.path)


if __name__ == "__main__":
    sys.exit(main())
