#!/usr/bin/env python3
"""An HTTP proxy that only tunnels (CONNECT), as the tests' stand-in for a corporate proxy.

  connect_proxy.py [--user USER:PASSWORD]

Listens on a free port of 127.0.0.1 and prints "listening PORT"; then, for each tunnel,
"CONNECT host:port" once it is made (with --user, a request without that Basic
Proxy-Authorization is answered 407 and printed as "refused host:port"). Anything but CONNECT
is answered 405. Runs until killed.
"""
import argparse
import base64
import socket
import socketserver
import sys
import threading


def relay(source, destination):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            destination.sendall(data)
    except OSError:
        pass
    finally:
        try:
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.request.recv(4096)
            if not data:
                return
            head += data
        lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        method, target = lines[0].split(" ")[:2]
        if method != "CONNECT":
            self.request.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        if self.server.credentials is not None:
            wanted = "basic " + base64.b64encode(self.server.credentials.encode()).decode()
            given = [line.split(":", 1)[1].strip() for line in lines[1:]
                     if line.lower().startswith("proxy-authorization:")]
            if not given or given[0].lower() != wanted.lower():
                print(f"refused {target}", flush=True)
                self.request.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
        host, port = target.rsplit(":", 1)
        upstream = socket.create_connection((host.strip("[]"), int(port)))
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        print(f"CONNECT {target}", flush=True)
        back = threading.Thread(target=relay, args=(upstream, self.request), daemon=True)
        back.start()
        relay(self.request, upstream)
        back.join()
        upstream.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", help="USER:PASSWORD the proxy requires")
    arguments = parser.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    server.credentials = arguments.user
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
