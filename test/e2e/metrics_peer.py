#!/usr/bin/python3
"""Peers with known behaviour, for the metrics tests: the agent's counts must match what
these did exactly.

    metrics_peer.py http-server --listen IP:PORT
    metrics_peer.py http-client --target IP:PORT --plan 200x7,500x3,404x2
    metrics_peer.py http-client --target IP:PORT --delay-ms 40 --count 30
    metrics_peer.py grpc-server --listen IP:PORT
    metrics_peer.py grpc-client --target IP:PORT --plan Ok=5,Fail=3,Missing=2 [--cancel N]

http-server  HTTP/1.1 with keep-alive. GET /status/<code> answers <code> with a short
             body; GET /delay/<ms> waits that long, then answers 200.
http-client  one keep-alive connection; GET /status/<code> for each planned status, or
             GET /delay/<ms> COUNT times. Prints "response <status> <milliseconds>" per
             request (the time from sending the request to reading the whole response),
             then "done".
grpc-server  service nodemesh.test.Metrics: Ok answers, Fail aborts with UNKNOWN, Missing
             with NOT_FOUND, Stream sends a message every 50 ms until cancelled.
grpc-client  one channel; the planned unary calls, then N Stream calls each cancelled
             after its first message (a RST_STREAM mid-way). Prints "call <method>
             <status>" per call and "done".
"""

import argparse
import http.client
import http.server
import signal
import socket
import socketserver
import sys
import threading
import time
from concurrent import futures

import grpc

SERVICE = "nodemesh.test.Metrics"


def say(line):
    print(line, flush=True)


def split(address):
    host, _, port = address.rpartition(":")
    return host, int(port)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def setup(self):
        super().setup()
        # Head and body go out in two writes: without this, Nagle and delayed ACKs hold
        # the body back ~40 ms and every latency measured here would be that.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        parts = self.path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "status":
            self.answer(int(parts[1]), f"status {parts[1]}\n")
        elif len(parts) == 2 and parts[0] == "delay":
            time.sleep(int(parts[1]) / 1000)
            self.answer(200, "delayed\n")
        else:
            self.answer(404, "no such path\n")

    def answer(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def http_server(args):
    server = Server(split(args.listen), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    say("listening")
    server.serve_forever()


def http_client(args):
    host, port = split(args.target)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    if args.plan:
        paths = []
        for item in args.plan.split(","):
            status, _, times = item.partition("x")
            paths += [f"/status/{status}"] * int(times)
    else:
        paths = [f"/delay/{args.delay_ms}"] * args.count
    for path in paths:
        started = time.monotonic()
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        say(f"response {response.status} {(time.monotonic() - started) * 1000:.3f}")
    connection.close()
    say("done")


def grpc_server(args):
    def ok(request, context):
        return request

    def fail(request, context):
        context.abort(grpc.StatusCode.UNKNOWN, "failed on purpose")

    def missing(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "nothing here")

    def stream(request, context):
        while context.is_active():
            yield b"tick"
            time.sleep(0.05)

    handlers = {
        "Ok": grpc.unary_unary_rpc_method_handler(ok),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Missing": grpc.unary_unary_rpc_method_handler(missing),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_insecure_port(args.listen)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    say("listening")
    stop.wait()
    server.stop(1).wait()


def grpc_client(args):
    options = [("grpc.enable_http_proxy", 0), ("grpc.keepalive_time_ms", 3600000)]
    with grpc.insecure_channel(args.target, options=options) as channel:
        for item in args.plan.split(","):
            method, _, times = item.partition("=")
            call = channel.unary_unary(f"/{SERVICE}/{method}")
            for _ in range(int(times)):
                try:
                    call(b"ping", timeout=10)
                    say(f"call {method} OK")
                except grpc.RpcError as error:
                    say(f"call {method} {error.code().name}")
        for _ in range(args.cancel):
            responses = channel.unary_stream(f"/{SERVICE}/Stream")(b"go", timeout=10)
            next(responses)
            responses.cancel()
            say("call Stream CANCELLED")
    say("done")


def main():
    parser = argparse.ArgumentParser()
    modes = parser.add_subparsers(dest="mode", required=True)
    for name in ("http-server", "grpc-server"):
        modes.add_parser(name).add_argument("--listen", required=True)
    client = modes.add_parser("http-client")
    client.add_argument("--target", required=True)
    client.add_argument("--plan")
    client.add_argument("--delay-ms", type=int, default=0)
    client.add_argument("--count", type=int, default=0)
    client = modes.add_parser("grpc-client")
    client.add_argument("--target", required=True)
    client.add_argument("--plan", required=True)
    client.add_argument("--cancel", type=int, default=0)
    args = parser.parse_args()
    {"http-server": http_server, "http-client": http_client, "grpc-server": grpc_server,
     "grpc-client": grpc_client}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
