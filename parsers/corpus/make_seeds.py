#!/usr/bin/python3
"""Writes fuzz seeds from the recorded captures (test/fixtures/parsers/*.capture) in the
input format of parsers/fuzz_harness.h, so the connection-parser fuzz targets start from
real conversations:

    /usr/bin/python3 parsers/corpus/make_seeds.py

http1-*.capture seeds corpus/http1/; h2-* and grpc-* seed corpus/http2/. Segments are cut
to 4 KiB records so that seeds stay small enough for the fuzzer to mutate.

The other seeds in corpus/http2/ (continuation, padded, goaway, push, reset, ...) were
framed once from the conversations that http2/parser_test.cc builds; nothing regenerates
them, so they stay as committed."""
import glob
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURES = os.path.join(HERE, "..", "..", "test", "fixtures", "parsers")
RECORD = 4096
MAX_SEED = 64 * 1024


def segments(path):
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos)
        who, size = data[pos:end].split(b" ")
        pos = end + 1
        if size == b"eof":
            yield who == b"s", None
            continue
        n = int(size)
        yield who == b"s", data[pos:pos + n]
        pos += n + 1


def seed(path):
    out = bytearray()
    for server, payload in segments(path):
        flags = 1 if server else 0
        if payload is None:
            out += struct.pack("<BH", flags | 2, 0)
            continue
        for i in range(0, len(payload), RECORD):
            chunk = payload[i:i + RECORD]
            out += struct.pack("<BH", flags, len(chunk)) + chunk
        if len(out) > MAX_SEED:
            break
    return bytes(out)


def main():
    for prefix, corpus in (("http1-", "http1"), ("h2-", "http2"), ("grpc-", "http2")):
        os.makedirs(os.path.join(HERE, corpus), exist_ok=True)
        for path in sorted(glob.glob(os.path.join(CAPTURES, prefix + "*.capture"))):
            name = os.path.basename(path)[: -len(".capture")]
            target = os.path.join(HERE, corpus, "capture-" + name)
            with open(target, "wb") as f:
                f.write(seed(path))
            print(f"{target}: {os.path.getsize(target)} bytes")


if __name__ == "__main__":
    main()
