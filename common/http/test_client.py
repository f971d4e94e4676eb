#!/usr/bin/env python3
"""Misbehaving clients for http_test.cc: each mode does one thing a well-behaved client
would not, and prints what it saw on stdout, one line per event, flushed.

  test_client.py MODE PORT CA [CERT KEY]

CA is the file of the CA that signed the server's certificate, or "plain" for plain HTTP
(no TLS) on 127.0.0.1.

Modes:
  leave   GET /stream, read the head and the first piece of the body, print "read", close.
  slow    GET /stream, print "sent", then read nothing until killed.
  stall   send half a request head, print "sent", then wait for the server to close the
          connection and print "closed after S s".
  hold    GET /whoami, print "connected" once answered (or "refused: REASON" if the server
          closed the connection), then keep the connection until killed.
"""
import socket
import ssl
import sys
import time


def connect(port, ca, cert=None, key=None):
    raw = socket.create_connection(("127.0.0.1", port))
    if ca == "plain":
        return raw
    context = ssl.create_default_context(cafile=ca)
    if cert:
        context.load_cert_chain(cert, key)
    return context.wrap_socket(raw, server_hostname="localhost")


def say(text):
    print(text, flush=True)


def main():
    mode, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    cert, key = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    request = b"GET /stream HTTP/1.1\r\nHost: localhost\r\n\r\n"
    if mode == "hold":
        # Connected means answered: a connection the server has not accepted yet is as
        # connected to the client as one it has, until the server closes it.
        try:
            connection = connect(port, ca, cert, key)
            connection.settimeout(10)
            connection.sendall(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\n\r\n")
            if connection.recv(4096) == b"":
                raise ConnectionError("closed")
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
