#!/usr/bin/env python3
"""Misbehaving TLS clients for http_test.cc: each mode does one thing a well-behaved client
would not, and prints what it saw on stdout, one line per event, flushed.

  test_client.py MODE PORT CA [CERT KEY]

Modes:
  leave   GET /stream, read the head and the first piece of the body, print "read", close.
  slow    GET /stream, print "sent", then read nothing until killed.
  stall   send half a request head, print "sent", then wait for the server to close the
          connection and print "closed after S s".
  hold    finish the handshake, print "connected" (or "refused: REASON" if the server closed
          it), then keep the connection until killed.
"""
import socket
import ssl
import sys
import time


def connect(port, ca, cert=None, key=None):
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    raw = socket.create_connection(("127.0.0.1", port))
    return context.wrap_socket(raw, server_hostname="localhost")


def say(text):
    print(text, flush=True)


def main():
    mode, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cert, key = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    request = b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n"
    if mode == "hold":
        try:
            connection = connect(port, ca, cert, key)
            # TLS 1.3 completes the client's handshake before the server has looked at it; a
            # server that closed at once shows up on the first read.
            connection.settimeout(0.5)
            try:
                if connection.recv(1) == b"":
                    raise ConnectionError("closed")
            except socket.timeout:
                pass
            say("connected")
        except (OSError, ConnectionError) as error:
            say(f"refused: {error}")
            return
        while True:
            time.sleep(60)
    connection = connect(port, ca, cert, key)
    if mode == "leave":
        connection.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) == 0:
            data = connection.recv(4096)
            if not data:
                break
            received += data
        say("read")
        connection.close()
        say("closed")
    elif mode == "slow":
        connection.sendall(request)
        say("sent")
        while True:
            time.sleep(60)
    elif mode == "stall":
        connection.sendall(b"GET /stream HTTP/1.1\r\nHost: local")
        say("sent")
        start = time.monotonic()
        connection.settimeout(60)
        try:
            while connection.recv(4096):
                pass
        except (OSError, ssl.SSLError):
            pass
        say(f"closed after {time.monotonic() - start:.1f} s")
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
