#!/usr/bin/python3
"""An extension API server for tests of the test API server's aggregation layer.

    echo_extension.py --cert FILE --key FILE --client-ca FILE --group G --version V
        --ready-file FILE

Listens on 127.0.0.1 (any free port, written to the ready file once listening) over HTTPS,
and serves only clients whose certificate the --client-ca (the front proxy's CA) signed.
Standard library only.

  GET /apis              406, as an extension without aggregated discovery answers
  GET /apis/G/V          an APIResourceList with one resource, "echoes"
  GET ...?watch=true&lines=N
                         a chunked stream: N lines {"line": i}, each its own chunk, then
                         nothing until the client goes, when "stream closed" is logged
  anything else          200 {"method", "target", "headers": [[name, value]...], "client":
                         the client certificate's CN}: the request as it arrived

Every request is logged to stderr as one line: method, target, X-Remote-User and the
X-Remote-Group values.
"""

import argparse
import json
import os
import select
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def log(line):
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self, code, body):
        payload = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def client_cn(self):
        certificate = self.connection.getpeercert() or {}
        for rdn in certificate.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return value
        return ""

    def do_GET(self):
        options = self.server.options
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        log(f"{self.command} {self.path} user={self.headers.get('X-Remote-User', '')} "
            f"groups={','.join(self.headers.get_all('X-Remote-Group') or [])}")
        if url.path == "/apis":
            return self.answer(406, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotAcceptable", "code": 406})
        if url.path == f"/apis/{options.group}/{options.version}":
            return self.answer(200, {
                "kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{options.group}/{options.version}",
                "resources": [{"name": "echoes", "singularName": "echo", "namespaced": True,
                               "kind": "Echo", "verbs": ["get", "watch"]}]})
        if query.get("watch") == ["true"]:
            return self.stream(int(query.get("lines", ["1"])[0]))
        self.answer(200, {"method": self.command, "target": self.path,
                          "headers": [[k, v] for k, v in self.headers.items()],
                          "client": self.client_cn()})

    def stream(self, lines):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(lines):
            data = json.dumps({"line": i}).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        # The stream stays open until the client closes the connection.
        while True:
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1):
                        break
                except (ssl.SSLError, OSError):
                    break
        log("stream closed")
        self.close_connection = True


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name in ("--cert", "--key", "--client-ca", "--group", "--version", "--ready-file"):
        parser.add_argument(name, required=True)
    options = parser.parse_args()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(options.cert, options.key)
    context.load_verify_locations(options.client_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.options = options
    temporary = options.ready_file + ".tmp"
    with open(temporary, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.replace(temporary, options.ready_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
