#!/usr/bin/python3
"""End-to-end test of the emojivoto demo app on loopback, without any mesh.

    /usr/bin/python3 demo/emojivoto/test_app.py [--keep-logs DIR]

Starts emoji, voting and web as plain processes on 127.0.0.1 with free ports (port 0,
the bound address read back from --ready-file), runs vote-bot for a fixed number of votes
with a fixed seed, and checks what the demo relies on:
  - /, /api/list and the error answers of web; keep-alive on HTTP/1.1
  - every doughnut vote answers HTTP 500 (voting's gRPC UNKNOWN), every other one 200,
    no request needed a retry, and the choices are the seed's sequence with ~15% doughnut
  - the leaderboard counts exactly the successful votes
  - called directly, VotingService.VoteDoughnut fails with UNKNOWN "ERROR" and other votes
    succeed; EmojiService answers an unknown shortcode without an emoji
  - on SIGTERM every service exits with code 0, leaves no thread behind and removes its
    ready file
The gRPC servers run with a 1 s maximum connection age and the bot reconnects every few
requests, so connection turnover (GOAWAY, Connection: close) is part of what passes.

Prints one line per check; exit code 0 if all pass, 1 otherwise (with the services'
logs). Every process it starts is stopped whatever happens, and dies with the test.
"""

import argparse
import collections
import ctypes
import http.client
import json
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP = HERE / "app"
PYTHON = "/usr/bin/python3"
SEED = 42
VOTES = 100
STARTUP_TIMEOUT_S = 20
BOT_TIMEOUT_S = 90
STOP_TIMEOUT_S = 15

sys.path.insert(0, str(APP))
import common  # noqa: E402  (the app's catalogue and API loader)
import grpc  # noqa: E402  (after common, which configures its resolver)
import vote_bot  # noqa: E402  (its choice function, to predict the bot's sequence)

VOTE_LINE = re.compile(r"^\S+ vote-bot INFO vote n=(\d+) choice=(\S+) status=(\d+) "
                       r"ms=[\d.]+(?: error=\"(.*)\")?$")
DONE_LINE = re.compile(r"^\S+ vote-bot INFO done votes=(\d+) ok=(\d+) failed=(\d+) "
                       r"errors=(\d+)$")


class TestFailure(Exception):
    """A check failed that later checks depend on."""


class Checks:
    def __init__(self):
        self.failed = 0
        self.passed = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}", flush=True)
        else:
            self.failed += 1
            print(f"  FAIL  {what}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def require(self, ok: bool, what: str, detail: str = "") -> None:
        if not self.check(ok, what, detail):
            raise TestFailure(what)


def _die_with_parent():
    # Runs in the child before exec: SIGKILL it if the test dies (e.g. a CTest timeout),
    # so no service outlives the test.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Service:
    """One of the app's processes, its stdout and stderr in <workdir>/<name>.log."""

    def __init__(self, name: str, script: str, args, workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.ready_file = workdir / f"{name}.ready"
        self.address = None
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [PYTHON, str(APP / script), *args], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=workdir, preexec_fn=_die_with_parent)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                self.address = self.ready_file.read_text().strip()
                return self.address
            if self.process.poll() is not None:
                raise TestFailure(f"{self.name} exited with {self.process.returncode} "
                                  "before it was ready")
            time.sleep(0.05)
        raise TestFailure(f"{self.name} not ready after {timeout_s} s")

    def wait(self, timeout_s: float):
        """The exit code, or None if it still runs after timeout_s."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout_s: float = STOP_TIMEOUT_S):
        """SIGTERM; the exit code, or None if it had to be killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.wait(timeout_s)
        if code is None:
            self.kill()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def http_get(address: str, path: str, connection=None):
    """(status, content type, body); reuses `connection` if given."""
    host, port = common.parse_hostport(address)
    own = connection is None
    if own:
        connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        if own:
            connection.close()


def check_web(checks: Checks, web: str) -> None:
    print("web, before any vote:", flush=True)
    status, content_type, body = http_get(web, "/")
    checks.check(status == 200 and content_type.startswith("text/html")
                 and b"Emoji Vote" in body, "GET / answers the HTML page",
                 f"{status} {content_type}")

    status, content_type, body = http_get(web, "/api/list")
    checks.require(status == 200 and content_type.startswith("application/json"),
                   "GET /api/list answers 200 JSON", f"{status} {content_type}")
    listing = json.loads(body)
    expected = [{"shortcode": e.shortcode, "unicode": e.unicode} for e in common.CATALOG]
    checks.check(listing == expected,
                 f"/api/list is the catalogue: {len(expected)} emoji in order",
                 f"got {listing!r}")
    checks.check({"shortcode": ":doughnut:", "unicode": "\U0001F369"} in listing,
                 "/api/list includes :doughnut: \U0001F369")

    host, port = common.parse_hostport(web)
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        http_get(web, "/api/list", connection)
        first_socket = connection.sock
        status, _, _ = http_get(web, "/api/leaderboard", connection)
        checks.check(first_socket is not None and connection.sock is first_socket
                     and status == 200, "two requests share one keep-alive connection")
    finally:
        connection.close()

    for path, expected_status, what in (
            ("/api/vote", 400, "a vote without a choice"),
            ("/api/vote?choice=:no_such_emoji:", 400, "a vote for an unknown emoji"),
            ("/no/such/page", 404, "an unknown page")):
        status, _, body = http_get(web, path)
        checks.check(status == expected_status and "error" in json.loads(body),
                     f"{what} answers {expected_status} with an error", f"{status} {body!r}")

    status, _, body = http_get(web, "/api/leaderboard")
    checks.check(status == 200 and json.loads(body) == [], "the leaderboard starts empty",
                 f"{status} {body!r}")


def check_bot(checks: Checks, bot: Service):
    """Returns the successful votes per shortcode."""
    print(f"vote-bot, {VOTES} votes with seed {SEED}:", flush=True)
    code = bot.wait(BOT_TIMEOUT_S)
    checks.require(code == 0, f"vote-bot exits 0 after --count {VOTES}", f"exit {code}")
    output = bot.log().splitlines()
    votes = [VOTE_LINE.match(line) for line in output]
    votes = [(int(m[1]), m[2], int(m[3]), m[4]) for m in votes if m]
    checks.require(len(votes) == VOTES and [v[0] for v in votes] == list(range(1, VOTES + 1)),
                   f"one log line for each of the {VOTES} votes",
                   f"{len(votes)} vote lines")
    done = [DONE_LINE.match(line) for line in output]
    done = [tuple(map(int, m.groups())) for m in done if m]
    checks.check(len(done) == 1 and done[0][0] == VOTES and done[0][3] == 0,
                 "a summary line, and no request needed a retry", f"{done}")

    doughnuts = [v for v in votes if v[1] == common.DOUGHNUT]
    others = [v for v in votes if v[1] != common.DOUGHNUT]
    checks.check(all(v[2] == 500 and "UNKNOWN" in (v[3] or "") for v in doughnuts),
                 f"all {len(doughnuts)} doughnut votes answer HTTP 500 with voting's UNKNOWN",
                 f"{[v for v in doughnuts if v[2] != 500][:3]}")
    checks.check(all(v[2] == 200 for v in others),
                 f"all {len(others)} other votes answer HTTP 200",
                 f"{[v for v in others if v[2] != 200][:3]}")
    checks.check(5 <= len(doughnuts) <= 30,
                 f"about 15% of the votes are for the doughnut ({len(doughnuts)}%)")

    rng = random.Random(SEED)
    shortcodes = [e.shortcode for e in common.CATALOG]
    predicted = [vote_bot.pick(rng, shortcodes, 0.15) for _ in range(VOTES)]
    checks.check([v[1] for v in votes] == predicted,
                 "the choices are the sequence seed 42 predicts")
    return collections.Counter(v[1] for v in others)


def check_leaderboard(checks: Checks, web: str, successful) -> None:
    print("leaderboard:", flush=True)
    status, _, body = http_get(web, "/api/leaderboard")
    checks.require(status == 200, "GET /api/leaderboard answers 200", f"{status}")
    board = json.loads(body)
    counts = {entry["shortcode"]: entry["votes"] for entry in board}
    checks.check(counts == dict(successful),
                 f"its counts are the {sum(successful.values())} successful votes",
                 f"leaderboard {counts}, successful votes {dict(successful)}")
    checks.check(common.DOUGHNUT not in counts, "the doughnut has no votes")
    checks.check([entry["votes"] for entry in board]
                 == sorted((entry["votes"] for entry in board), reverse=True),
                 "most votes first")
    checks.check(all(entry["unicode"] == common.CATALOG_BY_SHORTCODE[entry["shortcode"]].unicode
                     for entry in board), "each entry carries its emoji")


def check_grpc(checks: Checks, emoji: str, voting: str) -> None:
    print("gRPC, called directly:", flush=True)
    api = common.Api()
    emoji_channel = common.insecure_channel(emoji)
    voting_channel = common.insecure_channel(voting)
    try:
        emoji_stub = api.stub(emoji_channel, common.EMOJI_SERVICE)
        voting_stub = api.stub(voting_channel, common.VOTING_SERVICE)
        declared = {name for name in voting_stub.method_names if name.startswith("Vote")}
        checks.check(declared == {common.vote_method_name(e.shortcode) for e in common.CATALOG},
                     f"VotingService has one Vote<Name> per emoji ({len(declared)})")

        found = emoji_stub.FindByShortcode(
            api.message("FindByShortcodeRequest")(shortcode=":joy:"), timeout=2)
        checks.check(found.emoji.unicode == "\U0001F602", "FindByShortcode :joy: finds it")
        missing = emoji_stub.FindByShortcode(
            api.message("FindByShortcodeRequest")(shortcode=":nope:"), timeout=2)
        checks.check(not missing.HasField("emoji"),
                     "FindByShortcode of an unknown shortcode answers OK without an emoji")

        try:
            voting_stub.VoteDoughnut(api.message("VoteRequest")(), timeout=2)
            code, details = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
        checks.check(code == grpc.StatusCode.UNKNOWN and details == "ERROR",
                     "VoteDoughnut fails with status UNKNOWN, message ERROR",
                     f"{code} {details!r}")

        def joy_votes():
            results = voting_stub.Results(api.message("ResultsRequest")(), timeout=2).results
            return {r.shortcode: r.votes for r in results}.get(":joy:", 0)

        before = joy_votes()
        voting_stub.VoteJoy(api.message("VoteRequest")(), timeout=2)
        checks.check(joy_votes() == before + 1, "VoteJoy succeeds and counts one vote")
    finally:
        emoji_channel.close()
        voting_channel.close()


def check_turnover(checks: Checks, emoji: Service, voting: Service, web: Service) -> None:
    """Connections are replaced while the app runs: what lets a mesh turned on later see
    the traffic of processes that were already running."""
    print("connection turnover:", flush=True)
    peer = re.compile(r" from (ipv[46]:\S+)")
    for service, client in ((emoji, "web"), (voting, "web")):
        peers = {m[1] for m in map(peer.search, service.log().splitlines()) if m}
        checks.check(len(peers) >= 2, f"{service.name} was called over several connections "
                     f"from {client} ({len(peers)}; max connection age 1 s)")
    access = re.compile(r" peer=(\S+)$")
    bot_peers = {m[1] for m in map(access.search, web.log().splitlines()) if m}
    checks.check(len(bot_peers) >= 2 * VOTES // 5,
                 f"web was called over many connections ({len(bot_peers)}; vote-bot "
                 "reconnects every 5 requests)")


def check_stop(checks: Checks, services) -> None:
    print("shutdown:", flush=True)
    for service in services:  # web first: it holds connections to the other two
        code = service.terminate()
        log = service.log()
        last = log.rstrip().splitlines()[-1] if log.strip() else ""
        checks.check(code == 0 and last.endswith(" INFO stopped"),
                     f"{service.name} stops on SIGTERM with exit code 0",
                     f"exit {code}, last line {last!r}")
        checks.check("threads still running" not in log and "Traceback" not in log,
                     f"{service.name} leaves no thread behind and logged no traceback")
        checks.check(not service.ready_file.exists(), f"{service.name} removed its ready file")


def run(workdir: Path, checks: Checks, services) -> None:
    emoji = Service("emoji", "emoji.py", [
        "--listen", "127.0.0.1:0", "--ready-file", "emoji.ready",
        "--max-connection-age", "1", "--log-level", "debug"], workdir)
    services.append(emoji)
    voting = Service("voting", "voting.py", [
        "--listen", "127.0.0.1:0", "--ready-file", "voting.ready",
        "--max-connection-age", "1", "--log-level", "debug"], workdir)
    services.append(voting)
    print("starting:", flush=True)
    checks.require(bool(emoji.wait_ready()), f"emoji serves on {emoji.address}")
    checks.require(bool(voting.wait_ready()), f"voting serves on {voting.address}")
    web = Service("web", "web.py", [
        "--listen", "127.0.0.1:0", "--ready-file", "web.ready",
        "--emoji-addr", emoji.address, "--voting-addr", voting.address,
        "--max-requests-per-connection", "7"], workdir)
    services.insert(0, web)
    checks.require(bool(web.wait_ready()), f"web serves on {web.address}")
    for service in (emoji, voting, web):
        checks.check("ready: serving" in service.log(), f"{service.name} logs its ready line")

    check_web(checks, web.address)
    bot = Service("vote-bot", "vote_bot.py", [
        "--web-addr", web.address, "--count", str(VOTES), "--seed", str(SEED),
        "--rate", "40", "--requests-per-connection", "5"], workdir)
    services.append(bot)
    successful = check_bot(checks, bot)
    check_leaderboard(checks, web.address, successful)
    check_grpc(checks, emoji.address, voting.address)
    checks.check(" 500 " in web.log() and "voting VoteDoughnut failed" in web.log(),
                 "web logs the failed doughnut votes")
    check_turnover(checks, emoji, voting, web)
    check_stop(checks, [web, voting, emoji])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep-logs", metavar="DIR",
                        help="copy the services' logs to DIR at the end")
    args = parser.parse_args()
    checks = Checks()
    services = []
    with tempfile.TemporaryDirectory(prefix="emojivoto-test-") as scratch:
        workdir = Path(scratch)
        try:
            run(workdir, checks, services)
        except TestFailure as failure:
            print(f"stopped early: {failure}", flush=True)
            checks.failed = max(checks.failed, 1)
        except Exception:  # report, clean up, fail
            checks.failed += 1
            traceback.print_exc()
        finally:
            for service in services:
                service.kill()
        if checks.failed:
            for service in services:
                lines = service.log().splitlines()
                print(f"--- {service.name} log, last {min(40, len(lines))} of {len(lines)} "
                      "lines ---")
                print("\n".join(lines[-40:]))
        if args.keep_logs:
            Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
            for service in services:
                shutil.copy(service.log_path, args.keep_logs)
    print(f"{checks.passed} checks passed, {checks.failed} failed", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
