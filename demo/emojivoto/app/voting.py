#!/usr/bin/python3
"""voting: counts the emojivoto votes in memory, gRPC service emojivoto.v1.VotingService.

    voting.py [--listen HOST:PORT] [--ready-file PATH] [--max-connection-age SECONDS]
              [--workers N] [--proto FILE] [--log-level LEVEL]

For the local cluster (one pod, deployment "voting"):
    /usr/bin/python3 demo/emojivoto/app/voting.py --listen 0.0.0.0:8080 \\
        --ready-file /run/<cluster>/voting.ready

  --listen              where to serve (default 0.0.0.0:8080; port 0: any free port)
  --ready-file          written with the bound HOST:PORT once serving, removed at exit
  --max-connection-age  clients are sent GOAWAY after this many seconds and reconnect
                        (default 10), so connections opened before the mesh was turned
                        on are replaced by meshed ones; 0 disables
Ready: the ready file exists, and stdout has "ready: serving emojivoto.v1.VotingService
on HOST:PORT". SIGTERM or SIGINT: stops within a few seconds, exit code 0. Start-up
errors: one line on stderr, exit code 2.

One Vote<Name> method per emoji of the catalogue; each adds one vote. The bug the demo
hunts: VoteDoughnut always fails with status UNKNOWN and message "ERROR", without
counting, exactly as in the original emojivoto. Results answers the counts, most votes
first (ties in catalogue order), leaving out emoji nobody voted for.
"""

import argparse
import threading

import grpc

import common

# Votes for these always fail (the demo's planted bug).
FAILING_SHORTCODES = frozenset({common.DOUGHNUT})
INT32_MAX = 2**31 - 1


class Tally:
    """Vote counts, safe to use from the server's worker threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._votes = {emoji.shortcode: 0 for emoji in common.CATALOG}

    def add(self, shortcode: str) -> int:
        with self._lock:
            self._votes[shortcode] += 1
            return self._votes[shortcode]

    def ranking(self):
        """[(shortcode, votes)] with votes > 0, most first, ties in catalogue order."""
        with self._lock:
            counted = [(shortcode, votes) for shortcode, votes in self._votes.items()
                       if votes > 0]
        order = {emoji.shortcode: index for index, emoji in enumerate(common.CATALOG)}
        return sorted(counted, key=lambda item: (-item[1], order[item[0]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_grpc_server_flags(parser)
    args = parser.parse_args()
    log = common.setup_logging("voting", args.log_level)
    stop = common.stop_on_signals()
    api = common.Api(args.proto)

    VoteResponse = api.message("VoteResponse")
    VotingResult = api.message("VotingResult")
    ResultsResponse = api.message("ResultsResponse")
    tally = Tally()

    # At debug level every call is logged with the caller's address, e.g.
    # "ipv4:10.77.0.14:40312": new ports show clients reconnecting.
    def vote_handler(shortcode):
        def vote(_request, context):
            if shortcode in FAILING_SHORTCODES:
                log.debug("vote for %s from %s: failing on purpose", shortcode,
                          context.peer())
                context.abort(grpc.StatusCode.UNKNOWN, "ERROR")
            total = tally.add(shortcode)
            log.debug("vote for %s from %s: %d so far", shortcode, context.peer(), total)
            return VoteResponse()
        return vote

    def results(_request, context):
        log.debug("Results from %s", context.peer())
        return ResultsResponse(results=[
            VotingResult(shortcode=shortcode, votes=min(votes, INT32_MAX))
            for shortcode, votes in tally.ranking()])

    # The handler table is built from the catalogue; generic_handler() refuses to start
    # if it and the .proto's methods differ in any name.
    implementations = {common.vote_method_name(emoji.shortcode): vote_handler(emoji.shortcode)
                       for emoji in common.CATALOG}
    implementations["Results"] = results
    handler = api.generic_handler(common.VOTING_SERVICE, implementations)
    server = common.GrpcServer(args.listen, (handler,), workers=args.workers,
                               max_concurrent_rpcs=args.workers * 16,
                               max_connection_age_s=args.max_connection_age)
    try:
        common.write_ready_file(args.ready_file, server.address)
        log.info("ready: serving %s on %s (%d vote methods)", common.VOTING_SERVICE,
                 server.address, len(implementations) - 1)
        common.wait_until_stopped(stop, log)
    finally:
        common.remove_ready_file(args.ready_file)
        server.stop()
    clean = common.check_threads_finished(log)
    log.info("stopped%s", "" if clean else " (with threads left)")


if __name__ == "__main__":
    common.run_main("voting", main)
