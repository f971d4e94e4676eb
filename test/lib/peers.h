// Test peers started inside pods by the kernel and end-to-end tiers: the TCP peers of
// tcp_peer.py (an echo server and faulty servers, a dialer, long-lived, many-connection and
// faulty clients: see its modes), nginx, and small helpers to read what they print.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "test/lib/files.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"

namespace nodemesh::testing {

// Debian's interpreter, which has python3-grpcio (the first python3 on PATH may not).
inline constexpr const char* kPython = "/usr/bin/python3";

// Absolute path of a file in the source tree, e.g. SourcePath("test/lib/tcp_peer.py").
std::string SourcePath(const std::string& relative);

// "ip:port".
std::string Target(const Pod& pod, uint16_t port);

// nginx in `pod`, configured by `conf` (a whole nginx.conf, usually with NginxTempPaths) and
// kept in `root` (its conf, pid and error log); `wrap` goes before the command (e.g.
// {"taskset", "-c", "1"}). Returns once `prober` gets an answer from `probe_url`; throws
// with nginx's output and error log if it does not start.
Process StartNginx(const Pod& pod, const Pod& prober, const std::string& root,
                   const std::string& conf, const std::string& probe_url,
                   std::vector<std::string> wrap = {});
// The *_temp_path directives that keep nginx's temporary files under `root`.
std::string NginxTempPaths(const std::string& root);

// The command line of test/lib/tcp_peer.py in `mode` with `arguments`, for Pod::Run and
// Pod::RunCommand: TcpPeer("hold", {"--connect", target}).
std::vector<std::string> TcpPeer(const std::string& mode, std::vector<std::string> arguments = {});

// A server mode of tcp_peer.py (echo-server, reset-server, ...) on the pod's address (or on
// `address`, e.g. its pod.ip6); returns once it listens. Throws std::runtime_error with its
// output if it does not start.
Process StartTcpServer(const Pod& pod, const std::string& mode, uint16_t port,
                       const std::string& address = "");
// StartTcpServer of tcp_peer.py echo-server.
Process StartEchoServer(const Pod& pod, uint16_t port, const std::string& address = "");

// tcp_peer.py dial from `client` to `target`, `count` connections one after the other.
CommandResult Dial(const Pod& client, const std::string& target, int count = 1,
                   std::chrono::milliseconds timeout = std::chrono::seconds(60));

// The value of `key=` in the first line of `output` that starts with `line_prefix`, or
// "" if there is none: FieldOf("dial 0 ok peer=1.2.3.4:80 local=...", "dial 0 ok", "peer").
std::string FieldOf(const std::string& output, const std::string& line_prefix,
                    const std::string& key);

// How many lines of `output` start with `prefix`.
int CountLines(const std::string& output, const std::string& prefix);

// The peer addresses an echo server logged ("accepted <ip> <port>"), in order.
std::vector<std::string> AcceptedFrom(const Process& echo_server);

}  // namespace nodemesh::testing
