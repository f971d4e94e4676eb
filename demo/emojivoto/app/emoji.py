#!/usr/bin/python3
"""emoji: the emojivoto emoji catalogue, gRPC service emojivoto.v1.EmojiService.

    emoji.py [--listen HOST:PORT] [--ready-file PATH] [--max-connection-age SECONDS]
             [--workers N] [--proto FILE] [--log-level LEVEL]

For the local cluster (one pod, deployment "emoji"):
    /usr/bin/python3 demo/emojivoto/app/emoji.py --listen 0.0.0.0:8080 \\
        --ready-file /run/<cluster>/emoji.ready

  --listen              where to serve (default 0.0.0.0:8080; port 0: any free port)
  --ready-file          written with the bound HOST:PORT once serving, removed at exit
  --max-connection-age  clients are sent GOAWAY after this many seconds and reconnect
                        (default 10), so connections opened before the mesh was turned
                        on are replaced by meshed ones; 0 disables
Ready: the ready file exists, and stdout has "ready: serving emojivoto.v1.EmojiService on
HOST:PORT". SIGTERM or SIGINT: stops within a few seconds, exit code 0. Start-up errors
(port in use, protoc missing): one line on stderr, exit code 2.

ListAll answers the catalogue in order; FindByShortcode answers the emoji, or a response
without one if the shortcode is unknown (not an error, as in the original emojivoto).
This service never fails a call on purpose: in the demo it is the healthy one.
"""

import argparse

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_grpc_server_flags(parser)
    args = parser.parse_args()
    log = common.setup_logging("emoji", args.log_level)
    stop = common.stop_on_signals()
    api = common.Api(args.proto)

    Emoji = api.message("Emoji")
    ListAllEmojiResponse = api.message("ListAllEmojiResponse")
    FindByShortcodeResponse = api.message("FindByShortcodeResponse")
    catalog = [Emoji(shortcode=e.shortcode, unicode=e.unicode) for e in common.CATALOG]
    by_shortcode = {emoji.shortcode: emoji for emoji in catalog}

    # At debug level every call is logged with the caller's address, e.g.
    # "ipv4:10.77.0.14:40312": new ports show clients reconnecting.
    def list_all(_request, context):
        log.debug("ListAll from %s", context.peer())
        return ListAllEmojiResponse(list=catalog)

    def find_by_shortcode(request, context):
        found = by_shortcode.get(request.shortcode)
        log.debug("FindByShortcode %s from %s: %s", request.shortcode, context.peer(),
                  "found" if found is not None else "no such emoji")
        if found is None:
            return FindByShortcodeResponse()
        return FindByShortcodeResponse(emoji=found)

    handler = api.generic_handler(common.EMOJI_SERVICE, {
        "ListAll": list_all,
        "FindByShortcode": find_by_shortcode,
    })
    server = common.GrpcServer(args.listen, (handler,), workers=args.workers,
                               max_concurrent_rpcs=args.workers * 16,
                               max_connection_age_s=args.max_connection_age)
    try:
        common.write_ready_file(args.ready_file, server.address)
        log.info("ready: serving %s on %s (%d emoji)", common.EMOJI_SERVICE,
                 server.address, len(catalog))
        common.wait_until_stopped(stop, log)
    finally:
        common.remove_ready_file(args.ready_file)
        server.stop()
    clean = common.check_threads_finished(log)
    log.info("stopped%s", "" if clean else " (with threads left)")


if __name__ == "__main__":
    common.run_main("emoji", main)
