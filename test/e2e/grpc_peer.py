#!/usr/bin/python3
"""gRPC peers for the end-to-end tests of the agent.

    grpc_peer.py server --listen IP:PORT
    grpc_peer.py client --target IP:PORT

Service nodemesh.e2e.Echo, without generated code (identity serializers: messages are
raw bytes):

  Unary         replies with the request unchanged
  Fail          aborts with UNKNOWN and FAIL_MESSAGE
  ServerStream  request b"count=N size=S": N replies of S bytes each
  ClientStream  replies b"received <n> messages, <bytes> bytes, sha256 <hex>"
  Bidi          replies to each request with the same bytes
  (Missing      not registered: UNIMPLEMENTED)

The server prints "ready" once it serves, then "call <method> from <peer>" per call
(the peer as gRPC reports it, e.g. ipv4:10.77.0.11:40000). The client makes every call
on one channel and prints one line per result with everything it checked; the lines
depend only on the payloads, so a run through the agent must print exactly what a
direct run printed. It exits 1 if any result is not the expected one.

Runs on Debian's /usr/bin/python3 (python3-grpcio).
"""

import argparse
import hashlib
import random
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "nodemesh.e2e.Echo"
FAIL_MESSAGE = "echo failed on purpose: caf\u00e9 100%"
# 20000 spans two HTTP/2 DATA frames; 4 MiB is far beyond the initial flow-control
# windows, so WINDOW_UPDATEs must make it through the proxy both ways.
UNARY_SIZES = (0, 1, 1000, 20000, 4 * 1024 * 1024 - 64)
SERVER_STREAM = (50, 3000)  # messages, bytes each
CLIENT_STREAM_SIZES = tuple(100 * i for i in range(1, 41))
BIDI_SIZES = (7, 70, 700, 7000, 70000)
MAX_MESSAGE = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.enable_retries", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
]


def payload(size, seed):
    return random.Random(seed).randbytes(size)


def identity(data):
    return data


def digest(data):
    return hashlib.sha256(data).hexdigest()[:16]


# --- server -----------------------------------------------------------------------


def serve(listen):
    def logged(name, behaviour):
        def handler(request, context):
            print("call %s from %s" % (name, context.peer()), flush=True)
            return behaviour(request, context)
        return handler

    def unary(request, context):
        return request

    def fail(request, context):
        context.abort(grpc.StatusCode.UNKNOWN, FAIL_MESSAGE)

    def server_stream(request, context):
        fields = dict(item.split(b"=") for item in request.split())
        for index in range(int(fields[b"count"])):
            yield payload(int(fields[b"size"]), 1000 + index)

    def client_stream(requests, context):
        count, total, hasher = 0, 0, hashlib.sha256()
        for request in requests:
            count += 1
            total += len(request)
            hasher.update(request)
        return b"received %d messages, %d bytes, sha256 %s" % (
            count, total, hasher.hexdigest()[:16].encode())

    def bidi(requests, context):
        for request in requests:
            yield request

    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            logged("Unary", unary), request_deserializer=identity,
            response_serializer=identity),
        "Fail": grpc.unary_unary_rpc_method_handler(
            logged("Fail", fail), request_deserializer=identity,
            response_serializer=identity),
        "ServerStream": grpc.unary_stream_rpc_method_handler(
            logged("ServerStream", server_stream), request_deserializer=identity,
            response_serializer=identity),
        "ClientStream": grpc.stream_unary_rpc_method_handler(
            logged("ClientStream", client_stream), request_deserializer=identity,
            response_serializer=identity),
        "Bidi": grpc.stream_stream_rpc_method_handler(
            logged("Bidi", bidi), request_deserializer=identity,
            response_serializer=identity),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=OPTIONS + [("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, handlers),))
    if server.add_insecure_port(listen) == 0:
        sys.exit("grpc_peer: cannot listen on %s" % listen)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(timeout=1):
        pass
    server.stop(grace=None).wait(timeout=5)


# --- client -----------------------------------------------------------------------


failures = 0


def report(line, ok):
    global failures
    if not ok:
        failures += 1
    print("%s: %s" % (line, "OK" if ok else "UNEXPECTED"), flush=True)


def method(channel, kind, name):
    factory = getattr(channel, kind)
    return factory("/%s/%s" % (SERVICE, name), request_serializer=identity,
                   response_deserializer=identity)


def status_of(call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except grpc.RpcError as error:
        return error.code(), error.details()
    return grpc.StatusCode.OK, ""


def client(target):
    channel = grpc.insecure_channel(target, options=OPTIONS)
    try:
        grpc.channel_ready_future(channel).result(timeout=20)
        echo = method(channel, "unary_unary", "Unary")
        for index, size in enumerate(UNARY_SIZES):
            request = payload(size, index)
            reply = echo(request, timeout=30)
            report("Unary %d bytes -> %d bytes sha256 %s" % (size, len(reply), digest(reply)),
                   reply == request)

        code, details = status_of(method(channel, "unary_unary", "Fail"), b"x", timeout=30)
        report("Fail -> %s %r" % (code.name, details),
               code == grpc.StatusCode.UNKNOWN and details == FAIL_MESSAGE)
        code, details = status_of(method(channel, "unary_unary", "Missing"), b"x", timeout=30)
        report("Missing -> %s" % code.name, code == grpc.StatusCode.UNIMPLEMENTED)

        count, size = SERVER_STREAM
        replies = list(method(channel, "unary_stream", "ServerStream")(
            b"count=%d size=%d" % (count, size), timeout=30))
        joined = b"".join(replies)
        expected = b"".join(payload(size, 1000 + i) for i in range(count))
        report("ServerStream -> %d messages, %d bytes, sha256 %s"
               % (len(replies), len(joined), digest(joined)), joined == expected)

        requests = [payload(s, 2000 + i) for i, s in enumerate(CLIENT_STREAM_SIZES)]
        summary = method(channel, "stream_unary", "ClientStream")(iter(requests), timeout=30)
        report("ClientStream -> %s" % summary.decode(),
               summary.startswith(b"received %d messages, %d bytes, sha256 %s" % (
                   len(requests), sum(CLIENT_STREAM_SIZES),
                   digest(b"".join(requests)).encode())))

        requests = [payload(s, 3000 + i) for i, s in enumerate(BIDI_SIZES)]
        replies = list(method(channel, "stream_stream", "Bidi")(iter(requests), timeout=30))
        report("Bidi -> %d replies, sizes %s" % (len(replies), [len(r) for r in replies]),
               replies == requests)
    finally:
        channel.close()
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("server").add_argument("--listen", required=True)
    sub.add_parser("client").add_argument("--target", required=True)
    args = parser.parse_args()
    if args.mode == "server":
        serve(args.listen)
        return 0
    return client(args.target)


if __name__ == "__main__":
    sys.exit(main())
