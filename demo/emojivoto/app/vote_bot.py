#!/usr/bin/python3
"""vote-bot: keeps voting through web, like the emojivoto load generator.

    vote_bot.py --web-addr HOST:PORT [--rate VOTES_PER_S] [--count N] [--seed N]
                [--doughnut-share FRACTION] [--timeout SECONDS] [--retry-delay SECONDS]
                [--requests-per-connection N] [--log-level LEVEL]

For the local cluster (one pod, deployment "vote-bot"), once web is ready:
    /usr/bin/python3 demo/emojivoto/app/vote_bot.py --web-addr 10.77.0.14:8080 --rate 5

  --web-addr     required (or $WEB_HOST, the name the original emojivoto uses)
  --rate         votes per second (default 5); 0 votes as fast as web answers
  --count        stop after this many answered votes, exit code 0 (default 0: until
                 SIGTERM/SIGINT, then exit code 0)
  --seed         the random choices are a function of the seed and the emoji list
                 (default 1): two runs with the same seed vote the same sequence
  --requests-per-connection  HTTP/1.1 keep-alive connections are closed after this many
                 requests (default 20) so the bot reconnects now and then, as a fleet of
                 browsers would (and a mesh turned on later sees its new connections)

Each vote: GET /api/list, then GET /api/vote?choice=<shortcode>, with a doughnut-share
(default 15%) chance of the doughnut and the rest spread evenly over the other emoji.
A vote is "answered" once web returns any HTTP status to the vote request; a failure to
get an answer (connection refused or reset, timeout, a non-200 list, bad JSON) is
logged and retried after --retry-delay with the same choice, for as long as it takes:
the bot never gives up. Output, one line per event:
    <time> vote-bot INFO vote n=7 choice=:joy: status=200 ms=3.1
    <time> vote-bot INFO vote n=8 choice=:doughnut: status=500 ms=2.7 error="voting: UNKNOWN: ERROR"
    <time> vote-bot WARNING retry n=9 step=list attempt=1 error="ConnectionRefusedError(..)"
        retry_in=1.0s          (one line)
    <time> vote-bot INFO done votes=100 ok=85 failed=15 errors=0
"""

import argparse
import http.client
import json
import os
import random
import time
import urllib.parse
from typing import List, Optional, Tuple

import common

MAX_BODY_BYTES = 1 << 20  # web's answers are a few KiB; anything larger is a fault


class BotError(Exception):
    """An answer from web the bot cannot use (retried like a connection error)."""


class WebClient:
    """A keep-alive HTTP/1.1 client of web. One connection at a time, reopened when web
    closes it, after an error, or after requests_per_connection requests."""

    def __init__(self, address: str, timeout_s: float, requests_per_connection: int):
        self._host, self._port = common.parse_hostport(address)
        self._timeout = timeout_s
        self._requests_per_connection = requests_per_connection
        self._connection: Optional[http.client.HTTPConnection] = None
        self._requests_on_connection = 0

    def get(self, path: str) -> Tuple[int, bytes]:
        if self._connection is None:
            # http.client ignores proxy settings, as it should between pods.
            self._connection = http.client.HTTPConnection(self._host, self._port,
                                                          timeout=self._timeout)
            self._requests_on_connection = 0
        try:
            self._connection.request("GET", path, headers={
                "Accept": "application/json", "User-Agent": "emojivoto-vote-bot/1"})
            response = self._connection.getresponse()
            body = response.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                raise BotError(f"{path}: response larger than {MAX_BODY_BYTES} bytes")
        except BaseException:
            self.close()  # the connection's state is unknown: never reuse it
            raise
        self._requests_on_connection += 1
        if response.will_close or self._requests_on_connection >= self._requests_per_connection:
            self.close()
        return response.status, body

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def pick(rng: random.Random, shortcodes: List[str], doughnut_share: float) -> str:
    """The doughnut with probability doughnut_share, else one of the others, uniformly.
    Draws from rng in the same pattern whatever the outcome, so a seed gives one
    sequence of choices for one emoji list."""
    roll = rng.random()
    others = [shortcode for shortcode in shortcodes if shortcode != common.DOUGHNUT]
    if common.DOUGHNUT in shortcodes and (roll < doughnut_share or not others):
        return common.DOUGHNUT
    if not others:
        raise BotError("web listed no emoji")
    return rng.choice(others)


def shortcodes_of(status: int, body: bytes) -> List[str]:
    if status != 200:
        raise BotError(f"/api/list answered {status}")
    listing = json.loads(body)
    if not isinstance(listing, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("shortcode"), str)
            for entry in listing):
        raise BotError("/api/list: not a list of emoji")
    return [entry["shortcode"] for entry in listing]


def error_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--web-addr", type=common.address_arg,
                        default=os.environ.get("WEB_HOST"),
                        required=not os.environ.get("WEB_HOST"),
                        help="HOST:PORT of web (default $WEB_HOST)")
    parser.add_argument("--rate", type=common.positive_float, default=5.0,
                        help="votes per second; 0: no pause (default 5)")
    parser.add_argument("--count", type=int, default=0,
                        help="exit after this many answered votes; 0: never (default)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--doughnut-share", type=float, default=0.15,
                        help="fraction of votes for :doughnut: (default 0.15)")
    parser.add_argument("--timeout", type=common.positive_float, default=5.0,
                        metavar="SECONDS", help="per request (default 5)")
    parser.add_argument("--retry-delay", type=common.positive_float, default=1.0,
                        metavar="SECONDS", help="pause before a retry (default 1)")
    parser.add_argument("--requests-per-connection", type=common.positive_int, default=20,
                        help="reconnect after this many requests (default 20)")
    common.add_logging_flag(parser)
    args = parser.parse_args()
    if args.count < 0 or not 0 <= args.doughnut_share <= 1 or args.timeout == 0:
        parser.error("--count must be >= 0, --doughnut-share in [0, 1], --timeout > 0")

    log = common.setup_logging("vote-bot", args.log_level)
    stop = common.stop_on_signals()
    client = WebClient(args.web_addr, args.timeout, args.requests_per_connection)
    rng = random.Random(args.seed)
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    answered = ok = failed = errors = 0
    log.info("voting through web at %s: rate %s/s, count %s, seed %d", args.web_addr,
             args.rate or "unlimited", args.count or "unlimited", args.seed)

    next_vote_at = time.monotonic()
    number = 0
    try:
        while not stop.is_set() and (args.count == 0 or answered < args.count):
            if stop.wait(max(0.0, next_vote_at - time.monotonic())):
                break
            number += 1
            choice = None  # kept across retries, so errors do not change the sequence
            attempt = 0
            while not stop.is_set():
                attempt += 1
                step = "list"
                try:
                    shortcodes = shortcodes_of(*client.get("/api/list"))
                    if choice is None:
                        choice = pick(rng, shortcodes, args.doughnut_share)
                    step = "vote"
                    started = time.monotonic()
                    status, body = client.get(
                        "/api/vote?choice=" + urllib.parse.quote(choice, safe=":"))
                except (OSError, http.client.HTTPException, ValueError, BotError) as error:
                    errors += 1
                    log.warning('retry n=%d step=%s attempt=%d error="%r" retry_in=%.1fs',
                                number, step, attempt, error, args.retry_delay)
                    stop.wait(args.retry_delay)
                    continue
                elapsed_ms = (time.monotonic() - started) * 1000
                answered += 1
                if status == 200:
                    ok += 1
                    log.info("vote n=%d choice=%s status=%d ms=%.1f", number, choice,
                             status, elapsed_ms)
                else:
                    failed += 1
                    log.info('vote n=%d choice=%s status=%d ms=%.1f error="%s"', number,
                             choice, status, elapsed_ms, error_of(body))
                break
            # The next vote one interval after this one was due; after a slow or retried
            # vote, no burst to catch up.
            next_vote_at = max(next_vote_at + interval, time.monotonic())
    finally:
        client.close()
    if stop.signal_name:
        log.info("received %s, stopping", stop.signal_name)
    log.info("done votes=%d ok=%d failed=%d errors=%d", answered, ok, failed, errors)
    common.check_threads_finished(log, timeout_s=0)


if __name__ == "__main__":
    common.run_main("vote-bot", main)
