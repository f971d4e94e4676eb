// Kernel tier for the agent under faulty peers: an upstream that resets mid-response, a
// client that half-closes and vanishes, a slowloris client, a 1 MiB header block, and an
// HTTP/2 client that never reads. In every case, while the fault is in progress, an ordinary
// request from the same meshed pod through the same agent succeeds (the agent keeps serving
// every other connection); afterwards the agent is healthy, its resident memory has grown by
// less than a generous bound (memory stays bounded), and the faulty connection is counted.
#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "test/kernel/kernel_cluster.h"
#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/proc_stats.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr uint16_t kHttpPort = 8000;   // python http.server: the "every other connection"
constexpr uint16_t kFaultPort = 8001;  // each case's own faulty (or watching) server
constexpr uint16_t kEchoPort = 7000;   // tcp_peer.py echo-server: what a connection carries
// How much the agent's resident memory may grow over one case. Its relay holds at most two
// 64 KiB buffers per connection; a case that made it hold a faulty peer's bytes instead would
// grow it by tens or hundreds of MiB.
constexpr uint64_t kMemoryBoundKiB = 64 * 1024;

// The first entry of `list` (an array of /connections) whose `key` is `value`.
std::optional<Json> FindEntry(const Json& list, const std::string& key, const std::string& value) {
  for (const Json& entry : list) {
    if (entry.value(key, std::string()) == value) return entry;
  }
  return std::nullopt;
}

// The port of "ip:port".
std::string PortOf(const std::string& address) { return address.substr(address.rfind(':') + 1); }

// The entry of `list` for the connection the application opened from `local` ("ip:port", as
// it printed its getsockname). The agent lists the client as it accepted it: the pod's
// connect was redirected to its listener over loopback, so by the port alone.
std::optional<Json> FindByClient(const Json& list, const std::string& local) {
  for (const Json& entry : list) {
    if (PortOf(entry.value("client", std::string())) == PortOf(local)) return entry;
  }
  return std::nullopt;
}

// ---- the fixture ----

// web-1 on node-a (meshed, under the agent) calls voting-1 on node-b: a python http.server
// for the ordinary requests, an echo server, and each case's own server on kFaultPort.
// The agent runs one worker: every other connection then shares the faulty one's event
// loop and buffer pool, the hardest place to keep serving them (with two, an ordinary
// request may land on the other worker and prove nothing).
struct Faults {
  KernelCluster cluster;
  const Pod& client = cluster.client;
  const Pod& remote = cluster.remote;
  Process http = StartHttpServer();
  Process echo = StartEchoServer(remote, kEchoPort);
  AgentProcess agent{cluster.node_a,
                     {.binary = NODEMESH_AGENT_BINARY, .log_level = "debug", .workers = 1}};
  uint64_t baseline_kib = 0;
  uint64_t peak_kib = 0;

  Faults() {
    // One ordinary request first, so that what the agent allocates for its first connections
    // is in the baseline.
    OrdinaryRequestSucceeds();
    baseline_kib = StatusKiB(agent.process().pid(), "VmRSS");
    peak_kib = baseline_kib;
  }

  Process StartHttpServer() {
    Process server = remote.Run(
        {kPython, "-u", "-m", "http.server", std::to_string(kHttpPort), "--bind", remote.ip});
    if (!server.WaitForOutput("Serving HTTP", 10s)) {
      throw std::runtime_error("http.server did not start:\n" + server.output());
    }
    return server;
  }

  // A server mode of tcp_peer.py in voting-1 on kFaultPort; returns once it listens.
  Process StartFaultServer(const std::string& mode) {
    return StartTcpServer(remote, mode, kFaultPort);
  }

  std::string FaultTarget() const { return Target(remote, kFaultPort); }

  // Samples the agent's memory: the peak of the case so far.
  void SampleMemory() { peak_kib = std::max(peak_kib, StatusKiB(agent.process().pid(), "VmRSS")); }

  // "Keeps serving every other connection": a plain GET from web-1 through the agent, 200.
  void OrdinaryRequestSucceeds() {
    const CommandResult curl =
        client.RunCommand({"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time",
                           "5", fmt::format("http://{}:{}/", remote.ip, kHttpPort)},
                          15s);
    INFO("ordinary request: " << Describe(curl));
    const bool ok = curl.exit_code == 0 && curl.output == "200";
    INFO((ok ? std::string()
             : "agent:\n" + agent.output() + "\nconnections:\n" + Connections().dump(2)));
    CHECK(curl.exit_code == 0);
    CHECK(curl.output == "200");
    SampleMemory();
  }

  // A new connection through the agent carries its own bytes and nothing else: a line to the
  // echo server comes back exactly (tcp_peer.py says "short-echo" with what it got instead).
  void NextConnectionCarriesOnlyItsOwnBytes() {
    const CommandResult dialled = Dial(client, Target(remote, kEchoPort), 1, 20s);
    INFO("echo through the agent: " << Describe(dialled).substr(0, 400));
    CHECK(dialled.exit_code == 0);
    CHECK(dialled.output.find("dial 0 ok") != std::string::npos);
  }

  // After the case: the agent answers /healthz and /stats, and its memory stayed bounded.
  void HealthyAndBounded() {
    NextConnectionCarriesOnlyItsOwnBytes();
    SampleMemory();
    INFO("agent:\n" << agent.output());
    CHECK(agent.process().IsRunning());
    const std::optional<HttpReply> health = agent.GetMetricsPort("/healthz");
    REQUIRE(health);
    CHECK(health->status == 200);
    CHECK(agent.TryGet("/stats").has_value());
    INFO("VmRSS baseline " << baseline_kib << " KiB, peak " << peak_kib << " KiB");
    CHECK(baseline_kib > 0);
    CHECK(peak_kib - baseline_kib < kMemoryBoundKiB);
  }

  Json Connections() const { return agent.Get("/connections"); }

  // Polls until the live connection from `client_address` has `predicate`; that entry.
  std::optional<Json> WaitForLive(const std::string& client_address,
                                  const std::function<bool(const Json&)>& predicate,
                                  std::chrono::milliseconds timeout = 10s) {
    std::optional<Json> found;
    PollUntil(
        [&] {
          found = FindByClient(Connections()["connections"], client_address);
          return found && predicate(*found);
        },
        timeout, 100ms);
    return found && predicate(*found) ? found : std::nullopt;
  }

  // Polls until the connection from `client_address` is no longer live and is among the
  // recently closed; that entry.
  std::optional<Json> WaitForClosed(const std::string& client_address,
                                    std::chrono::milliseconds timeout = 10s) {
    std::optional<Json> closed;
    PollUntil(
        [&] {
          const Json connections = Connections();
          if (FindByClient(connections["connections"], client_address)) return false;
          closed = FindByClient(connections["recently_closed"], client_address);
          return closed.has_value();
        },
        timeout, 100ms);
    return closed;
  }
};

// "local=10.77.0.11:40312" in a peer's output.
std::string LocalOf(const Process& peer, const std::string& line_prefix) {
  return FieldOf(peer.output(), line_prefix, "local");
}

TEST_CASE(
    "fault: an upstream reset mid-response resets the client and is counted as a reset "
    "and a failed request while other requests are served") {
  Faults faults;
  Process server = faults.StartFaultServer("reset-server");
  const uint64_t resets_before = faults.agent.ProxyCounter("resets");

  // curl in the background, so that the ordinary request goes while the response is cut.
  Process curl =
      faults.client.Run({"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                         fmt::format("http://{}/reset-mid-response", faults.FaultTarget())});
  REQUIRE(server.WaitForOutput("reset", 10s));
  faults.OrdinaryRequestSucceeds();
  const std::optional<ExitStatus> ended = curl.Wait(15s);
  INFO("curl: " << curl.output() << "\nserver:\n" << server.output());
  REQUIRE(ended);
  // Not a success and not a hang: the status line and headers came through, then the reset
  // (curl: 56 "Connection reset by peer", or 18 for a transfer cut short).
  CHECK(ended->code != 0);
  CHECK(ended->code != 28);  // --max-time: the client was left hanging
  CHECK((ended->code == 56 || ended->code == 18));
  CHECK(curl.output().find("200") != std::string::npos);  // -w: the status it saw

  // Counted: a reset in /stats, the connection among the recently closed as "reset" with the
  // partial response's bytes, and its request as a failure of its route.
  CHECK(PollUntil([&] { return faults.agent.ProxyCounter("resets") == resets_before + 1; }, 5s));
  std::optional<Json> closed;
  PollUntil(
      [&] {
        closed =
            FindEntry(faults.Connections()["recently_closed"], "destination", faults.FaultTarget());
        return closed.has_value();
      },
      5s);
  REQUIRE(closed);
  INFO(closed->dump(2));
  CHECK((*closed)["end"] == "reset");
  CHECK((*closed)["protocol"] == "http1");
  CHECK((*closed)["requests"] == 1);
  CHECK((*closed)["bytes_to_client"].get<uint64_t>() > 10000);
  CHECK((*closed)["bytes_to_client"].get<uint64_t>() < 100000);
  Json routes;
  const bool failed_route = PollUntil(
      [&] {
        routes = faults.agent.Get("/routes")["routes"];
        for (const Json& route : routes) {
          // voting-1 is on a node this agent does not know: its destination is External.
          if (route["route"] == "GET /reset-mid-response" && route["responses"] == 1 &&
              route["failures"] == 1) {
            return true;
          }
        }
        return false;
      },
      5s, 200ms);
  INFO(routes.dump(2));
  CHECK(failed_route);
  faults.HealthyAndBounded();
}

TEST_CASE(
    "fault: a client that half-closes and vanishes has its connection ended and counted "
    "while other requests are served") {
  Faults faults;
  Process server = faults.StartFaultServer("late-server");
  const uint64_t closed_before = faults.agent.ProxyCounter("closed");
  const uint64_t resets_before = faults.agent.ProxyCounter("resets");

  Process half = faults.client.Run(TcpPeer("half-close", {"--connect", faults.FaultTarget()}));
  REQUIRE(half.WaitForOutput("half-closed", 10s));
  const std::string local = LocalOf(half, "half-closed");
  INFO("half-closing client: " << local << "\n" << half.output());
  // The request and the client's FIN passed through: the connection is live and half-closed.
  const std::optional<Json> live = faults.WaitForLive(local, [](const Json& connection) {
    return connection["bytes_to_upstream"] > 0 && connection["state"] == "proxying";
  });
  REQUIRE(live);
  CHECK((*live)["requests"] == 1);
  REQUIRE(server.WaitForOutput("request", 10s));

  // The client vanishes before its answer comes.
  REQUIRE(half.Kill(0ms).has_value());
  faults.OrdinaryRequestSucceeds();

  // The server answers into a socket nobody holds: the agent must end the connection, not
  // keep it (and its upstream) open.
  const std::optional<Json> closed = faults.WaitForClosed(local, 10s);
  INFO("server:\n" << server.output() << "\nconnections:\n" << faults.Connections().dump(2));
  REQUIRE(closed);
  INFO(closed->dump(2));
  CHECK((*closed)["requests"] == 1);
  // Its answer could not be delivered: the client's kernel resets it, and so the agent ends it.
  CHECK((*closed)["end"] == "reset");
  const Json stats = faults.agent.Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["closed"].get<uint64_t>() >= closed_before + 2);  // it and the curl
  CHECK(stats["proxy"]["resets"] == resets_before + 1);
  // The relay ended with the answer's bytes still in its buffer: the next connection to
  // take that buffer from the worker's pool must not send them on as its own.
  faults.NextConnectionCarriesOnlyItsOwnBytes();
  faults.OrdinaryRequestSucceeds();
  faults.HealthyAndBounded();
}

TEST_CASE(
    "fault: a slowloris client is one live connection with its bytes counted and is "
    "closed when it leaves while other requests are served") {
  Faults faults;
  constexpr int kBytes = 6;
  Process slow =
      faults.client.Run(TcpPeer("slowloris", {"--connect", Target(faults.remote, kHttpPort),
                                              "--bytes", std::to_string(kBytes)}));
  REQUIRE(slow.WaitForOutput("sent 2", 10s));
  const std::string local = LocalOf(slow, "connected");
  INFO("slowloris client: " << local << "\n" << slow.output());

  // Requests go on while it dribbles: one at each byte.
  for (int sent = 3; sent <= kBytes; ++sent) {
    REQUIRE(slow.WaitForOutput(fmt::format("sent {}", sent), 5s));
    faults.OrdinaryRequestSucceeds();
  }
  REQUIRE(slow.WaitForOutput("done", 5s));
  // Live, with every byte it sent passed on, and no request (its head never ended).
  const std::optional<Json> live = faults.WaitForLive(
      local, [&](const Json& connection) { return connection["bytes_to_upstream"] == kBytes; }, 5s);
  INFO(faults.Connections().dump(2));
  REQUIRE(live);
  CHECK((*live)["state"] == "proxying");
  CHECK((*live)["requests"] == 0);
  CHECK((*live)["bytes_to_client"] == 0);
  // No header timeout: the agent holds it as long as it sends something within the idle
  // timeout (1 h by default); a request-head deadline would have closed it here.
  // (Observed behaviour, not asserted.)
  INFO("slowloris connection after " << kBytes << " s: " << live->dump());

  const uint64_t closed_before = faults.agent.ProxyCounter("closed");
  REQUIRE(slow.Kill(0ms).has_value());
  const std::optional<Json> closed = faults.WaitForClosed(local, 10s);
  INFO(faults.Connections().dump(2));
  REQUIRE(closed);
  INFO(closed->dump(2));
  // Its FIN went on to http.server, which closes a request that ends unfinished (or answers
  // it, into a socket that is gone: then a reset).
  CHECK(((*closed)["end"] == "closed" || (*closed)["end"] == "reset"));
  CHECK((*closed)["bytes_to_upstream"] == kBytes);
  CHECK((*closed)["requests"] == 0);
  CHECK(faults.agent.ProxyCounter("closed") >= closed_before + 1);
  faults.OrdinaryRequestSucceeds();
  faults.HealthyAndBounded();
}

TEST_CASE(
    "fault: a 1 MiB header block passes through byte for byte and its parse failure is "
    "counted as headers_too_large while other requests are served") {
  Faults faults;
  Process server = faults.StartFaultServer("digest-server");
  constexpr int kHeaderBytes = 1 << 20;
  const uint64_t failures_before = faults.agent.ProxyCounter("parse_failures");

  Process big =
      faults.client.Run(TcpPeer("big-header", {"--connect", faults.FaultTarget(), "--header-bytes",
                                               std::to_string(kHeaderBytes)}));
  faults.OrdinaryRequestSucceeds();
  const std::optional<ExitStatus> ended = big.Wait(30s);
  INFO("client:\n" << big.output() << "\nserver:\n" << server.output());
  REQUIRE(ended);
  // Unchanged: the server received exactly the bytes sent (length and SHA-256) and its answer
  // came back.
  CHECK(ended->ok());
  CHECK(big.output().find("status HTTP/1.1 200 OK") != std::string::npos);
  CHECK(big.output().find("match") != std::string::npos);

  // The HTTP/1 parser gave up on a head over 64 KiB: the connection went on as opaque TCP,
  // counted in /stats and by reason in /metrics.
  CHECK(PollUntil(
      [&] { return faults.agent.ProxyCounter("parse_failures") == failures_before + 1; }, 5s));
  const std::string counted =
      "nodemesh_parse_failures_total{protocol=\"http1\",reason=\"headers_too_large\"} 1";
  std::string metrics;
  CHECK(PollUntil(
      [&] {
        const std::optional<HttpReply> reply = faults.agent.GetMetricsPort("/metrics");
        metrics = reply ? reply->body : "";
        return metrics.find(counted) != std::string::npos;
      },
      5s, 200ms));
  INFO(metrics);
  std::optional<Json> closed;
  PollUntil(
      [&] {
        closed =
            FindEntry(faults.Connections()["recently_closed"], "destination", faults.FaultTarget());
        return closed.has_value();
      },
      5s);
  REQUIRE(closed);
  INFO(closed->dump(2));
  CHECK((*closed)["end"] == "closed");
  CHECK((*closed)["bytes_to_upstream"].get<uint64_t>() > kHeaderBytes);
  CHECK((*closed)["requests"] == 0);  // never parsed to its end: not a request of any route
  faults.OrdinaryRequestSucceeds();
  faults.HealthyAndBounded();
}

TEST_CASE(
    "fault: an HTTP/2 client that never reads stalls its server through backpressure "
    "without growing the agent's memory while other requests are served") {
  Faults faults;
  // nghttpd (h2c) serving a 256 MiB file: far more than the agent may hold.
  TempDir docroot;
  constexpr uint64_t kFileBytes = 256ull << 20;
  {
    std::ofstream file(docroot.path() + "/big", std::ios::binary);
    file.seekp(kFileBytes - 1);
    file.put('\0');
    REQUIRE(file);
  }
  Process nghttpd =
      faults.remote.Run({"nghttpd", "--no-tls", "-d", docroot.path(), std::to_string(kFaultPort)});
  REQUIRE(PollUntil(
      [&] {
        const CommandResult listening = faults.remote.RunCommand({"ss", "-Hltn"});
        return listening.output.find(fmt::format(":{} ", kFaultPort)) != std::string::npos;
      },
      10s, 100ms));
  const uint64_t http2_before = faults.agent.ProxyCounter("http2");
  const uint64_t resets_before = faults.agent.ProxyCounter("resets");

  Process h2 = faults.client.Run(
      TcpPeer("h2-never-reads", {"--connect", faults.FaultTarget(), "--path", "/big"}));
  REQUIRE(h2.WaitForOutput("requested", 10s));
  const std::string local = LocalOf(h2, "requested");
  INFO("h2 client: " << local << "\n" << h2.output() << "\nnghttpd:\n" << nghttpd.output());

  // The response flows until the client's receive buffer and the agent's socket buffers are
  // full, then stops: the agent reads from the server only what it can pass on.
  uint64_t last = 0;
  auto last_change = std::chrono::steady_clock::now();
  std::optional<Json> live;
  const bool stalled = PollUntil(
      [&] {
        faults.SampleMemory();
        live = FindByClient(faults.Connections()["connections"], local);
        if (!live) return false;
        const uint64_t now = (*live)["bytes_to_client"].get<uint64_t>();
        if (now != last) {
          last = now;
          last_change = std::chrono::steady_clock::now();
          return false;
        }
        return now > 0 && std::chrono::steady_clock::now() - last_change > 1500ms;
      },
      20s, 100ms);
  INFO((live ? live->dump(2) : std::string("no live connection")));
  REQUIRE(stalled);
  CHECK((*live)["protocol"] == "http2");
  CHECK((*live)["requests"] == 1);
  CHECK((*live)["bytes_to_client"].get<uint64_t>() < 64ull << 20);
  CHECK(faults.agent.ProxyCounter("http2") == http2_before + 1);

  // While it is stalled: other requests, and the agent's memory.
  faults.OrdinaryRequestSucceeds();
  faults.OrdinaryRequestSucceeds();
  faults.SampleMemory();
  INFO("VmRSS while stalled: " << faults.peak_kib << " KiB, baseline " << faults.baseline_kib);
  CHECK(faults.peak_kib - faults.baseline_kib < kMemoryBoundKiB);

  // The client goes, with unread bytes: its kernel resets, and the agent resets upstream.
  REQUIRE(h2.Kill(0ms).has_value());
  const std::optional<Json> closed = faults.WaitForClosed(local, 10s);
  REQUIRE(closed);
  INFO(closed->dump(2));
  CHECK((*closed)["end"] == "reset");
  CHECK(faults.agent.ProxyCounter("resets") == resets_before + 1);
  // As in the half-close case: the stalled relay's full buffer of frames goes back to the
  // pool unsent, and the next connection to take it must carry only its own bytes.
  faults.NextConnectionCarriesOnlyItsOwnBytes();
  faults.OrdinaryRequestSucceeds();
  faults.HealthyAndBounded();
}

TEST_CASE(
    "fault: an agent out of file descriptors lets new connections wait rather than fail, says "
    "so once, still answers its admin API, and serves them once descriptors are free") {
  Faults faults;
  const pid_t pid = faults.agent.process().pid();
  rlimit original{};
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, nullptr, &original) == 0);
  // Room for a few connections beyond what the agent holds now, two descriptors each (the
  // soft limit only: the hard one may not be raised again here).
  const rlimit tight{DescriptorCount(pid) + 10, original.rlim_max};
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &tight, nullptr) == 0);
  struct RestoreLimit {
    pid_t pid;
    rlimit limit;
    ~RestoreLimit() { ::prlimit(pid, RLIMIT_NOFILE, &limit, nullptr); }
  } restore{pid, original};
  const uint64_t errors_before = faults.agent.ProxyCounter("accept_errors");

  TempDir dir;
  const std::string release = dir.path() + "/release";
  Process holder =
      faults.client.Run(TcpPeer("echo-all", {"--connect", Target(faults.remote, kEchoPort),
                                             "--connections", "30", "--release-file", release}));
  REQUIRE(holder.WaitForOutput("sent 30", 15s));
  // The agent ran out: its admin API still answers (on the descriptor it keeps for that),
  // and counts the accepts that could not be made.
  const bool counted = PollUntil(
      [&] {
        const std::optional<Json> stats = faults.agent.TryGet("/stats");
        return stats && (*stats)["proxy"]["accept_errors"].get<uint64_t>() > errors_before;
      },
      10s, 100ms);
  INFO("holder:\n" << holder.output() << "\nagent:\n" << faults.agent.output().substr(0, 4000));
  REQUIRE(counted);
  CHECK(holder.output().find("echoed 30") == std::string::npos);  // the rest wait
  // Said once, not at every wakeup of a listener that stays readable.
  const std::string log = faults.agent.output();
  size_t notices = 0;
  for (size_t at = log.find("cannot accept connections"); at != std::string::npos;
       at = log.find("cannot accept connections", at + 1)) {
    ++notices;
  }
  CHECK(notices >= 1);
  CHECK(notices <= 2);

  // Descriptors come free as the echoed connections close: every waiting one is served, and
  // none was reset for want of a descriptor.
  std::ofstream(release).put('\n');
  const std::optional<ExitStatus> ended = holder.Wait(30s);
  INFO("holder:\n" << holder.output());
  REQUIRE(ended);
  CHECK(ended->code == 0);
  CHECK(holder.output().find("all echoed") != std::string::npos);
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, &original, nullptr) == 0);
  faults.HealthyAndBounded();
}

}  // namespace
}  // namespace nodemesh::testing
