#!/usr/bin/python3
"""A TCP relay that records every byte it carries, for tests that check what crosses a wire.

    wire_recorder.py --listen PORT --connect HOST:PORT --record PATH

Listens on 127.0.0.1:PORT; each connection is relayed to HOST:PORT, and every byte in either
direction is appended to PATH as it passes (flushed at once, so the test may read it any
time). Prints "listening" once ready. Runs until killed.
"""
import argparse
import socket
import sys
import threading


def pump(source, sink, record, lock):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            with lock:
                record.write(data)
                record.flush()
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--connect", required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    host, port = args.connect.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.listen))
    listener.listen(16)
    record = open(args.record, "ab")
    lock = threading.Lock()
    print("listening", flush=True)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
            upstream.settimeout(None)
        except OSError as error:
            print(f"connect {args.connect}: {error}", flush=True)
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b, record, lock), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
