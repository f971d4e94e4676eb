// Everything the agent is configured with, in one struct: the workers, the kernel programs
// and the observers read their parts of it by reference, so no setting is copied by hand
// from one options struct into another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/metrics/export_format.h"
#include "common/tls/tls.h"
#include "parsers/parser.h"

namespace nodemesh::agent {

// SO_MARK values that tell the kernel programs (and the pods' routing) which sockets are
// the agent's own.
struct SocketMarks {
  uint32_t upstream = 0x6e6d0001;       // outbound upstream sockets: never redirected again
  uint32_t transparent = 0x6e6d0002;    // inbound legs carrying the caller's address
  uint32_t transparent_table = 0x6e6d;  // the pod routing table for their replies
};

// The byte relay of every connection.
struct ProxyOptions {
  size_t buffer_size = 64 * 1024;
  size_t max_buffers = 4096;  // per worker: 256 MiB at most in flight with 64 KiB buffers
  // Per worker, pipes to splice the bytes no observer reads (two descriptors each while bytes
  // are in one); 0: every byte is copied through a buffer.
  size_t max_pipes = 256;
  int64_t connect_timeout_ns = 10'000'000'000;
  int64_t idle_timeout_ns = 3600'000'000'000;
  // A connection on which nothing moved this long gives back what it keeps for its next
  // request (its parser's scratch), and takes it again when that comes: memory per idle
  // connection against an allocation per request after a quiet spell.
  int64_t quiet_after_ns = 10'000'000'000;
  // A call between two pods of this node, the server's port captured inbound, is dialled
  // straight to the server application from the client pod's address (one hop through the
  // agent); false: out of the client's listener and into the server's (two hops).
  bool same_node_direct = true;
};

// What tap shows of a request, decided on the node before an event leaves it (for the
// aggregator or a local tap). The headers tap shows are parser_config.captured_headers.
struct TapRedaction {
  // Lowercase names whose values tap shows as "[redacted]": credentials by default.
  std::vector<std::string> headers = {"authorization", "proxy-authorization", "cookie",
                                      "set-cookie",    "x-api-key",           "x-auth-token"};
  // Paths shown without their query ("/login?[redacted]"): queries often carry tokens.
  bool strip_query = false;
};

// What is made of the bytes.
struct ObserverOptions {
  // false: every connection is proxied as opaque TCP, with no protocol detection or parsing
  // (and so no request metrics): the proxy's own cost, for comparison.
  bool l7 = true;
  parsers::ParserConfig parser_config;
  TapRedaction tap_redaction;
  size_t max_routes_per_workload = 100;
  // How /metrics exports the series: their latency buckets, the labels left out.
  metrics::ExportFormat metrics_export;
  // Series with no activity for this long leave /metrics (and free their identities).
  int64_t retain_idle_ns = 600'000'000'000;
};

struct AgentOptions {
  std::string node;
  std::string inventory_path;
  std::string aggregator_address;  // empty: no aggregator
  TlsFiles aggregator_tls;         // none: plaintext, to a loopback address only
  // The pod's projected ServiceAccount token, presented on every stream to the aggregator
  // and read again for each (the kubelet rotates it); empty: none.
  std::string aggregator_token_file;
  // Where the outbound programs attach, under the cgroup v2 mount ("/" covers the node).
  std::string cgroup_root = "/";
  int workers = 0;                 // 0: one per CPU the agent may run on (its affinity mask)
  uint16_t outbound_port = 15001;  // the agent's outbound listener in every pod
  uint16_t inbound_port = 15006;   // its inbound listener in every pod
  // Pods enrolled at once: sizes the kernel maps that hold them.
  uint32_t max_pods = 4096;
  std::vector<uint16_t> excluded_ports;
  // The host's /proc: pods' processes and network namespaces (Kubernetes inventory), and
  // the network sysctls set in each pod (the agent's own /proc/sys is read-only in a
  // container; <proc_root>/sys/net is then the node's, mounted writable).
  std::string proc_root = "/proc";
  SocketMarks marks;
  ProxyOptions proxy;
  ObserverOptions observer;
};

}  // namespace nodemesh::agent
