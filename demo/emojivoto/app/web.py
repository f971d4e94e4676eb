#!/usr/bin/python3
"""web: the emojivoto front end, HTTP/1.1 (keep-alive) over the emoji and voting services.

    web.py --emoji-addr HOST:PORT --voting-addr HOST:PORT [--listen HOST:PORT]
           [--ready-file PATH] [--rpc-timeout SECONDS] [--max-connections N]
           [--idle-timeout SECONDS] [--max-requests-per-connection N]
           [--no-access-log] [--proto FILE] [--log-level LEVEL]

For the local cluster (one pod, deployment "web"), with the emoji and voting pods'
addresses (IPs, or names the pod's /etc/hosts resolves):
    /usr/bin/python3 demo/emojivoto/app/web.py --listen 0.0.0.0:8080 \\
        --emoji-addr 10.77.0.12:8080 --voting-addr 10.77.0.13:8080 \\
        --ready-file /run/<cluster>/web.ready

  --emoji-addr, --voting-addr   required (or $EMOJISVC_HOST, $VOTINGSVC_HOST, the names
                        the original emojivoto uses). Connections are made lazily: web
                        starts even if they are down, and answers 500 until they are up.
  --listen              default 0.0.0.0:8080; port 0: any free port
  --ready-file          written with the bound HOST:PORT once serving, removed at exit
  --rpc-timeout         deadline of every gRPC call (default 2 s)
  --max-requests-per-connection  after this many requests a keep-alive connection is
                        closed ("Connection: close"), default 100, so clients reconnect
                        now and then (and pick up the mesh once it is turned on)
Ready: the ready file exists, and stdout has "ready: serving HTTP on HOST:PORT".
SIGTERM or SIGINT: finishes the requests in flight, closes idle keep-alive connections,
joins every connection thread, exit code 0. Start-up errors: stderr, exit code 2.

Routes (GET only; other methods get 501):
  /                  a small HTML page to vote from a browser
  /api/list          200 [{"shortcode", "unicode"}, ...] from EmojiService.ListAll
  /api/vote?choice=:joy:
                     EmojiService.FindByShortcode, then VotingService.Vote<Name>:
                     200 {"shortcode", "unicode"}; 400 if the choice is missing or
                     unknown; 500 {"error", "service", "grpc_status"} if a call fails
                     (always for :doughnut:: voting answers UNKNOWN)
  /api/leaderboard   200 [{"shortcode", "unicode", "votes"}, ...], most votes first,
                     from VotingService.Results and EmojiService.ListAll
Every response carries Content-Length, so connections stay open between requests.
"""

import argparse
import http.server
import json
import logging
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import grpc

import common

# (status, content type, body)
Response = Tuple[int, str, bytes]
JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Emoji Vote</title>
<style>
  body { font-family: sans-serif; max-width: 40em; margin: 2em auto; }
  button { font-size: 2em; margin: 0.1em; border: none; background: none; cursor: pointer; }
  #status { min-height: 1.5em; }
</style>
</head>
<body>
<h1>Emoji Vote</h1>
<p>Pick your favourite emoji.</p>
<div id="emoji"></div>
<p id="status"></p>
<h2>Leaderboard</h2>
<ol id="leaderboard"></ol>
<script>
async function call(path) {
  const response = await fetch(path);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.status);
  return body;
}
async function showLeaderboard() {
  const list = document.getElementById("leaderboard");
  list.replaceChildren(...(await call("/api/leaderboard")).map(entry => {
    const item = document.createElement("li");
    item.textContent = `${entry.unicode} ${entry.shortcode}: ${entry.votes}`;
    return item;
  }));
}
async function vote(shortcode) {
  const status = document.getElementById("status");
  try {
    const emoji = await call("/api/vote?choice=" + shortcode);
    status.textContent = `You voted for ${emoji.unicode}`;
  } catch (error) {
    status.textContent = `Voting for ${shortcode} failed: ${error.message}`;
  }
  await showLeaderboard();
}
(async () => {
  const buttons = (await call("/api/list")).map(emoji => {
    const button = document.createElement("button");
    button.textContent = emoji.unicode;
    button.title = emoji.shortcode;
    button.onclick = () => vote(emoji.shortcode);
    return button;
  });
  document.getElementById("emoji").replaceChildren(...buttons);
  await showLeaderboard();
})();
</script>
</body>
</html>
""".encode("utf-8")


def json_response(status: int, body) -> Response:
    return status, JSON, json.dumps(body, ensure_ascii=False).encode("utf-8")


def rpc_failure(service: str, error: grpc.RpcError) -> Response:
    code = error.code()
    name = code.name if code is not None else "UNKNOWN"
    return json_response(500, {"error": f"{service}: {name}: {error.details()}",
                               "service": service, "grpc_status": name})


class WebApp:
    """The routes. Called from many connection threads at once: it holds only the two
    gRPC channels, which are thread-safe."""

    def __init__(self, api: common.Api, emoji_addr: str, voting_addr: str,
                 rpc_timeout_s: float, log: logging.Logger):
        self._log = log
        self._timeout = rpc_timeout_s
        self._emoji_channel = common.insecure_channel(emoji_addr)
        self._voting_channel = common.insecure_channel(voting_addr)
        self._emoji = api.stub(self._emoji_channel, common.EMOJI_SERVICE)
        self._voting = api.stub(self._voting_channel, common.VOTING_SERVICE)
        self._list_request = api.message("ListAllEmojiRequest")
        self._find_request = api.message("FindByShortcodeRequest")
        self._vote_request = api.message("VoteRequest")
        self._results_request = api.message("ResultsRequest")
        self.routes: Dict[str, Callable[[Dict[str, List[str]]], Response]] = {
            "/": self.index,
            "/api/list": self.list_emoji,
            "/api/vote": self.vote,
            "/api/leaderboard": self.leaderboard,
        }

    def close(self) -> None:
        self._emoji_channel.close()
        self._voting_channel.close()

    def index(self, _query) -> Response:
        return 200, HTML, INDEX_HTML

    def _all_emoji(self) -> List[Dict[str, str]]:
        reply = self._emoji.ListAll(self._list_request(), timeout=self._timeout)
        return [{"shortcode": e.shortcode, "unicode": e.unicode} for e in reply.list]

    def list_emoji(self, _query) -> Response:
        try:
            return json_response(200, self._all_emoji())
        except grpc.RpcError as error:
            self._log.warning("emoji ListAll failed: %s", error.code())
            return rpc_failure("emoji", error)

    def vote(self, query) -> Response:
        choice = (query.get("choice") or [""])[0]
        if not choice:
            return json_response(400, {"error": "emoji choice not specified"})
        try:
            found = self._emoji.FindByShortcode(self._find_request(shortcode=choice),
                                                timeout=self._timeout)
        except grpc.RpcError as error:
            self._log.warning("emoji FindByShortcode %s failed: %s", choice, error.code())
            return rpc_failure("emoji", error)
        if not found.HasField("emoji"):
            return json_response(400, {"error": f"no emoji with shortcode {choice}"})
        emoji = found.emoji
        method = common.vote_method_name(emoji.shortcode)
        if method not in self._voting.method_names:
            return json_response(400, {"error": f"cannot vote for {emoji.shortcode}"})
        try:
            getattr(self._voting, method)(self._vote_request(), timeout=self._timeout)
        except grpc.RpcError as error:
            self._log.warning("voting %s failed: %s %s", method, error.code(),
                              error.details())
            return rpc_failure("voting", error)
        return json_response(200, {"shortcode": emoji.shortcode, "unicode": emoji.unicode})

    def leaderboard(self, _query) -> Response:
        try:
            results = self._voting.Results(self._results_request(),
                                           timeout=self._timeout).results
        except grpc.RpcError as error:
            self._log.warning("voting Results failed: %s", error.code())
            return rpc_failure("voting", error)
        try:
            unicode_of = {e["shortcode"]: e["unicode"] for e in self._all_emoji()}
        except grpc.RpcError as error:
            self._log.warning("emoji ListAll failed: %s", error.code())
            return rpc_failure("emoji", error)
        return json_response(200, [
            {"shortcode": r.shortcode, "unicode": unicode_of.get(r.shortcode, ""),
             "votes": r.votes} for r in results])


class Handler(http.server.BaseHTTPRequestHandler):
    """One instance per connection; handle() loops over its keep-alive requests."""

    protocol_version = "HTTP/1.1"
    server_version = "emojivoto-web/1"
    # Headers and body go out in two writes; with Nagle's algorithm the body would wait
    # for the client's delayed ACK of the headers (40 ms on Linux).
    disable_nagle_algorithm = True
    server: "WebServer"

    def setup(self):
        # StreamRequestHandler puts this timeout on the socket: an idle keep-alive
        # connection (or a stalled client) is dropped after it.
        self.timeout = self.server.idle_timeout_s
        super().setup()
        self.requests_on_connection = 0

    def do_GET(self):  # noqa: N802 (http.server's naming)
        started = time.monotonic()
        self.requests_on_connection += 1
        url = urllib.parse.urlsplit(self.path)
        route = self.server.app.routes.get(url.path)
        if route is None:
            response = json_response(404, {"error": f"no such page: {url.path}"})
        else:
            try:
                response = route(urllib.parse.parse_qs(url.query))
            except Exception:  # a bug in a route must not take the connection thread down
                self.server.log.exception("%s %s failed", self.command, self.path)
                response = json_response(500, {"error": "internal error"})
        self._send(*response)
        if self.server.access_log:
            self.server.log.info("%s %s %d %.1fms peer=%s", self.command, self.path,
                                 response[0], (time.monotonic() - started) * 1000,
                                 common.format_hostport(*self.client_address[:2]))

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        if (self.requests_on_connection >= self.server.max_requests_per_connection
                or self.server.stopping.is_set()):
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        pass  # do_GET writes the access log, with the latency

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        # Malformed requests, unsupported methods and idle keep-alive timeouts. The
        # last are routine, so they stay at debug level.
        message = format % args
        level = logging.DEBUG if "timed out" in message else logging.WARNING
        self.server.log.log(level, "client %s: %s",
                            common.format_hostport(*self.client_address[:2]), message)


class WebServer(http.server.ThreadingHTTPServer):
    """A thread per connection, at most max_connections of them; stop() ends them all."""

    daemon_threads = False  # server_close() joins every connection thread
    request_queue_size = 128

    def __init__(self, listen: str, app: WebApp, log: logging.Logger, *,
                 max_connections: int, idle_timeout_s: float,
                 max_requests_per_connection: int, access_log: bool):
        host, port = common.parse_hostport(listen)
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.app = app
        self.log = log
        self.idle_timeout_s = idle_timeout_s
        self.max_requests_per_connection = max_requests_per_connection
        self.access_log = access_log
        self.stopping = threading.Event()
        self._max_connections = max_connections
        self._lock = threading.Lock()  # guards _open, and closing the sockets in it
        self._open = set()
        try:
            super().__init__((host, port), Handler)
        except OSError as error:
            raise common.StartupError(f"cannot listen on {listen}: {error.strerror}") from error
        self.address = common.format_hostport(host, self.server_address[1])

    def process_request(self, request, client_address):
        with self._lock:
            admitted = (len(self._open) < self._max_connections
                        and not self.stopping.is_set())
            if admitted:
                self._open.add(request)
        if not admitted:
            self.log.warning("refused a connection from %s: %d connections open",
                             common.format_hostport(*client_address[:2]),
                             self._max_connections)
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        # Under the lock, so stop() never shuts down a socket being closed here.
        with self._lock:
            self._open.discard(request)
            super().shutdown_request(request)

    def stop(self) -> None:
        """Call from a thread other than the one in serve_forever()."""
        self.stopping.set()
        self.shutdown()  # the accept loop ends
        with self._lock:
            # Connections blocked reading their next request see end of input and end;
            # a request being handled still gets its response (with Connection: close).
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
        self.server_close()  # closes the listener, joins the connection threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=common.address_arg, default="0.0.0.0:8080",
                        help="HOST:PORT to serve HTTP on (default 0.0.0.0:8080)")
    parser.add_argument("--emoji-addr", type=common.address_arg,
                        default=os.environ.get("EMOJISVC_HOST"),
                        required=not os.environ.get("EMOJISVC_HOST"),
                        help="HOST:PORT of the emoji service (default $EMOJISVC_HOST)")
    parser.add_argument("--voting-addr", type=common.address_arg,
                        default=os.environ.get("VOTINGSVC_HOST"),
                        required=not os.environ.get("VOTINGSVC_HOST"),
                        help="HOST:PORT of the voting service (default $VOTINGSVC_HOST)")
    parser.add_argument("--ready-file", metavar="PATH",
                        help="once serving, write the bound HOST:PORT here")
    parser.add_argument("--rpc-timeout", type=common.positive_float,
                        default=common.DEFAULT_RPC_TIMEOUT_S, metavar="SECONDS",
                        help="deadline of each gRPC call (default 2)")
    parser.add_argument("--max-connections", type=common.positive_int, default=256,
                        help="connections served at once; more are closed (default 256)")
    parser.add_argument("--idle-timeout", type=common.positive_float, default=60.0,
                        metavar="SECONDS",
                        help="close a connection silent this long (default 60)")
    parser.add_argument("--max-requests-per-connection", type=common.positive_int,
                        default=100, help="close keep-alive connections after this many "
                                          "requests (default 100)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="do not log a line per request")
    parser.add_argument("--proto", type=Path, default=common.DEFAULT_PROTO,
                        help="the API definition")
    common.add_logging_flag(parser)
    args = parser.parse_args()
    if args.rpc_timeout == 0 or args.idle_timeout == 0:
        parser.error("--rpc-timeout and --idle-timeout must be positive")

    log = common.setup_logging("web", args.log_level)
    stop = common.stop_on_signals()
    api = common.Api(args.proto)
    app = WebApp(api, args.emoji_addr, args.voting_addr, args.rpc_timeout, log)
    try:
        server = WebServer(args.listen, app, log, max_connections=args.max_connections,
                           idle_timeout_s=args.idle_timeout,
                           max_requests_per_connection=args.max_requests_per_connection,
                           access_log=args.access_log)
    except BaseException:
        app.close()
        raise
    accept_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                     name="http-accept")
    accept_thread.start()
    try:
        common.write_ready_file(args.ready_file, server.address)
        log.info("ready: serving HTTP on %s (emoji at %s, voting at %s)", server.address,
                 args.emoji_addr, args.voting_addr)
        common.wait_until_stopped(stop, log)
    finally:
        common.remove_ready_file(args.ready_file)
        server.stop()
        accept_thread.join()
        app.close()
    clean = common.check_threads_finished(log)
    log.info("stopped%s", "" if clean else " (with threads left)")


if __name__ == "__main__":
    common.run_main("web", main)
