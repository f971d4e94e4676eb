// End-to-end tier for the agent: real clients and servers (curl and nginx, h2load and
// nghttpd, python3-grpcio, a byte-stream peer, many concurrent connections) in two meshed
// pods of one node, so that every connection crosses the agent, dialled straight from the
// client pod's address into the server pod (one hop) and watched as both pods see it: the
// client's outbound view and the server's inbound one. Each scenario runs direct first
// (before the agent starts) and then through the agent, and the two runs must give the same
// results.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test/lib/agent_process.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

std::string RandomBytes(size_t size, uint32_t seed) {
  std::mt19937 generator(seed);
  std::string bytes(size, '\0');
  for (char& byte : bytes) byte = static_cast<char>(generator() & 0xff);
  return bytes;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// A node with a meshed client pod and a meshed server pod, and a scratch directory the
// peers in both pods can read and write.
struct Scenario {
  RootRequired root_required{"e2e"};
  PodNetwork network;
  TestNode node{network, "node-a"};
  const Pod& client = node.AddPod({.namespace_name = "emojivoto",
                                   .name = "web-1",
                                   .owner_name = "web",
                                   .labels = {{"app", "web"}},
                                   .service_account = "web",
                                   .meshed = true});
  const Pod& server = node.AddPod({.namespace_name = "emojivoto",
                                   .name = "emoji-1",
                                   .owner_name = "emoji",
                                   .labels = {{"app", "emoji-svc"}},
                                   .service_account = "emoji",
                                   .meshed = true});
  TempDir dir;

  std::unique_ptr<AgentProcess> StartAgent() {
    return std::make_unique<AgentProcess>(
        node, AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY, .log_level = "info"});
  }
  // Starts the agent and waits until it captures the port the server listens on.
  std::unique_ptr<AgentProcess> StartAgent(uint16_t server_port) {
    std::unique_ptr<AgentProcess> agent = StartAgent();
    REQUIRE(agent->WaitForInboundPort(server, server_port));
    return agent;
  }
};

// The agent exits cleanly on SIGTERM: under the sanitizer build this is where leaks and
// other reports would show.
void StopCleanly(AgentProcess& agent) {
  const std::optional<ExitStatus> status = agent.Stop();
  INFO(agent.output());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(agent.output().find("Sanitizer") == std::string::npos);
}

// ---- HTTP/1.1: curl and nginx ----

constexpr uint16_t kNginxPort = 8080;

struct Nginx {
  Process process;
  std::string access_log;

  // The access log's lines once it holds at least `lines` (or as it is after 10 s): nginx
  // writes a request's line after the response has gone, so a client that has its answer
  // may be ahead of the log.
  std::vector<std::string> AccessLog(size_t lines) const {
    std::vector<std::string> logged;
    PollUntil(
        [&] {
          logged = Lines(ReadFile(access_log));
          return logged.size() >= lines;
        },
        10s);
    return logged;
  }
};

Nginx StartNginx(const Pod& pod, const std::string& dir) {
  const std::string root = dir + "/nginx";
  std::filesystem::create_directories(root + "/www");
  WriteFile(root + "/www/index.html", "<html><body>hello from emoji-1</body></html>\n");
  WriteFile(root + "/www/small.txt", "small\n");
  WriteFile(root + "/www/data.bin", RandomBytes(1 << 20, 7));
  const std::string conf = fmt::format(R"(
master_process on;
worker_processes 1;
user root;
error_log {0}/error.log info;
pid {0}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  log_format peer '$remote_addr $connection $connection_requests "$request" $status $body_bytes_sent';
  access_log {0}/access.log peer;
  {3}
  keepalive_requests 1000;
  server {{
    listen {1}:{2};
    root {0}/www;
  }}
}}
)",
                                       root, pod.ip, kNginxPort, NginxTempPaths(root));
  Process nginx = testing::StartNginx(pod, pod, root, conf,
                                      fmt::format("http://{}:{}/small.txt", pod.ip, kNginxPort));
  return {std::move(nginx), root + "/access.log"};
}

// One curl with several URLs: with keep-alive they share a connection; with
// "Connection: close" each gets its own. Each body goes to <dir>/<prefix>-<n>.
CommandResult FetchAll(const Pod& client, const Pod& server, const std::string& dir,
                       const std::string& prefix, bool keep_alive) {
  const std::vector<std::string> paths = {"/index.html", "/data.bin", "/small.txt", "/missing.html",
                                          "/data.bin"};
  std::vector<std::string> argv = {
      "curl", "-sS", "--max-time",
      "60",   "-w",  "%{http_code} %{size_download} %{num_connects} %{url_effective}\\n"};
  if (!keep_alive) argv.insert(argv.end(), {"-H", "Connection: close"});
  for (size_t i = 0; i < paths.size(); ++i) {
    argv.insert(argv.end(), {"-o", fmt::format("{}/{}-{}", dir, prefix, i),
                             fmt::format("http://{}:{}{}", server.ip, kNginxPort, paths[i])});
  }
  return client.RunCommand(argv, 90s);
}

TEST_CASE("curl gets the same answers from nginx through the agent as direct") {
  Scenario scenario;
  Nginx nginx = StartNginx(scenario.server, scenario.dir.path());
  const std::string out = scenario.dir.path();
  // What nginx logged while it was being probed for readiness: at least the probe that
  // found it up.
  const size_t startup_log_lines = nginx.AccessLog(1).size();

  const CommandResult direct_keep_alive =
      FetchAll(scenario.client, scenario.server, out, "direct-ka", true);
  const CommandResult direct_close =
      FetchAll(scenario.client, scenario.server, out, "direct-close", false);
  INFO(Describe(direct_keep_alive) << Describe(direct_close));
  REQUIRE(direct_keep_alive.exit_code == 0);
  REQUIRE(direct_close.exit_code == 0);
  // curl's own view: one connection for all five with keep-alive, five without.
  CHECK(Lines(direct_keep_alive.output).size() == 5);
  CHECK(CountLines(direct_keep_alive.output, "200 ") == 4);
  CHECK(CountLines(direct_keep_alive.output, "404 ") == 1);
  CHECK(direct_keep_alive.output.find(" 1 http") == direct_keep_alive.output.rfind(" 1 http"));
  CHECK(Lines(direct_close.output).size() == 5);
  CHECK(direct_close.output.find(" 0 http") == std::string::npos);
  REQUIRE(nginx.AccessLog(startup_log_lines + 10).size() == startup_log_lines + 10);

  std::unique_ptr<AgentProcess> agent = scenario.StartAgent(kNginxPort);
  const CommandResult proxied_keep_alive =
      FetchAll(scenario.client, scenario.server, out, "agent-ka", true);
  const nlohmann::json after_keep_alive = agent->Get("/stats");
  const CommandResult proxied_close =
      FetchAll(scenario.client, scenario.server, out, "agent-close", false);
  INFO(Describe(proxied_keep_alive) << Describe(proxied_close) << "\nagent:\n" << agent->output());
  CHECK(proxied_keep_alive.output == direct_keep_alive.output);
  CHECK(proxied_close.output == direct_close.output);
  for (int i = 0; i < 5; ++i) {
    for (const char* run : {"ka", "close"}) {
      INFO(run << " " << i);
      CHECK(ReadFile(fmt::format("{}/agent-{}-{}", out, run, i)) ==
            ReadFile(fmt::format("{}/direct-{}-{}", out, run, i)));
    }
  }
  CHECK(ReadFile(out + "/agent-ka-1") == ReadFile(out + "/nginx/www/data.bin"));

  // nginx saw the client pod's address on every request, and the same connection reuse.
  std::vector<std::string> log = nginx.AccessLog(startup_log_lines + 20);
  INFO(ReadFile(nginx.access_log));
  REQUIRE(log.size() == startup_log_lines + 20);
  log.erase(log.begin(), log.begin() + static_cast<std::ptrdiff_t>(startup_log_lines));
  // "<remote_addr> <connection serial> ...": the serials tell connections apart.
  std::set<std::string> keep_alive_connections, close_connections;
  for (size_t i = 0; i < log.size(); ++i) {
    std::istringstream words(log[i]);
    std::string address, connection;
    words >> address >> connection;
    CHECK(address == scenario.client.ip);
    if (i >= 10) (i < 15 ? keep_alive_connections : close_connections).insert(connection);
  }
  CHECK(keep_alive_connections.size() == 1);
  CHECK(close_connections.size() == 5);

  // Every connection went through the agent once and was parsed as HTTP/1 by both views.
  INFO(after_keep_alive.dump(2));
  CHECK(after_keep_alive["proxy"]["accepted_outbound"] == 1);
  CHECK(after_keep_alive["proxy"]["same_node_direct"] == 1);
  CHECK(after_keep_alive["proxy"]["accepted_inbound"] == 0);
  CHECK(after_keep_alive["proxy"]["requests"] == 10);
  const nlohmann::json stats = agent->Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 6);
  CHECK(stats["proxy"]["same_node_direct"] == 6);
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["http1"] == 12);
  CHECK(stats["proxy"]["requests"] == 20);
  CHECK(stats["proxy"]["parse_failures"] == 0);
  StopCleanly(*agent);
}

// ---- HTTP/2: h2load and nghttpd ----

constexpr uint16_t kNghttpdPort = 8443;

// The "requests:" and "status codes:" lines of h2load's report, and the data byte count.
std::string H2loadSummary(const std::string& output) {
  std::string summary;
  for (const std::string& line : Lines(output)) {
    if (line.starts_with("requests:") || line.starts_with("status codes:")) summary += line + "\n";
    if (line.starts_with("traffic:")) {
      // "traffic: 31.45MB (32979920) total, 60.94KB (62400) headers (...), 31.25MB (32768000) data"
      const size_t data = line.rfind(" data");
      const size_t open = line.rfind('(', data);
      if (data != std::string::npos && open != std::string::npos) {
        summary += "data bytes " + line.substr(open + 1, line.find(')', open) - open - 1) + "\n";
      }
    }
  }
  return summary;
}

TEST_CASE("h2load gets the same answers from an HTTP/2 server through the agent as direct") {
  Scenario scenario;
  const std::string www = scenario.dir.path() + "/www";
  std::filesystem::create_directories(www);
  WriteFile(www + "/data-16k.bin", RandomBytes(16 * 1024, 11));
  Process nghttpd = scenario.server.Run({"nghttpd", "--no-tls", "--address=" + scenario.server.ip,
                                         "--htdocs=" + www, std::to_string(kNghttpdPort)});
  const std::string url =
      fmt::format("http://{}:{}/data-16k.bin", scenario.server.ip, kNghttpdPort);
  REQUIRE(PollUntil(
      [&] {
        return scenario.client
                   .RunCommand({"curl", "-sS", "--http2-prior-knowledge", "--max-time", "2", "-o",
                                "/dev/null", url},
                               10s)
                   .exit_code == 0;
      },
      20s, 100ms));

  const std::vector<std::string> h2load = {"h2load", "-n", "2000", "-c", "4", "-m", "8", url};
  const CommandResult direct = scenario.client.RunCommand(h2load, 120s);
  INFO(Describe(direct));
  REQUIRE(direct.exit_code == 0);
  const std::string direct_summary = H2loadSummary(direct.output);
  REQUIRE(direct_summary.find("2000 succeeded, 0 failed, 0 errored") != std::string::npos);
  REQUIRE(direct_summary.find("2000 2xx") != std::string::npos);

  std::unique_ptr<AgentProcess> agent = scenario.StartAgent(kNghttpdPort);
  const CommandResult proxied = scenario.client.RunCommand(h2load, 120s);
  INFO(Describe(proxied) << "\nagent:\n" << agent->output());
  REQUIRE(proxied.exit_code == 0);
  CHECK(H2loadSummary(proxied.output) == direct_summary);

  const nlohmann::json stats = agent->Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 4);
  CHECK(stats["proxy"]["same_node_direct"] == 4);
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["http2"] == 8);
  CHECK(stats["proxy"]["requests"] == 4000);  // each request seen by both views
  CHECK(stats["proxy"]["parse_failures"] == 0);
  StopCleanly(*agent);
}

// ---- gRPC: python3-grpcio ----

constexpr uint16_t kGrpcPort = 50051;

TEST_CASE(
    "gRPC unary and streaming calls and a failing one give the same results through the agent") {
  Scenario scenario;
  const std::string peer = SourcePath("test/e2e/grpc_peer.py");
  Process server = scenario.server.Run(
      {kPython, "-u", peer, "server", "--listen", Target(scenario.server, kGrpcPort)});
  REQUIRE(server.WaitForOutput("ready", 30s));
  const std::vector<std::string> client = {
      kPython, "-u", peer, "client", "--target", Target(scenario.server, kGrpcPort)};

  const CommandResult direct = scenario.client.RunCommand(client, 120s);
  INFO(Describe(direct) << "\nserver:\n" << server.output());
  REQUIRE(direct.exit_code == 0);
  REQUIRE(direct.output.find("Fail -> UNKNOWN") != std::string::npos);

  std::unique_ptr<AgentProcess> agent = scenario.StartAgent(kGrpcPort);
  const CommandResult proxied = scenario.client.RunCommand(client, 120s);
  INFO(Describe(proxied) << "\nagent:\n" << agent->output());
  CHECK(proxied.exit_code == 0);
  CHECK(proxied.output == direct.output);

  // Every call, direct or not, came from the client pod's own address.
  int calls = 0;
  for (const std::string& line : Lines(server.output())) {
    if (!line.starts_with("call ")) continue;
    ++calls;
    CHECK(line.find(" from ipv4:" + scenario.client.ip + ":") != std::string::npos);
  }
  CHECK(calls == 2 * 9);  // 9 handled calls per run; Missing never reaches a handler

  const nlohmann::json stats = agent->Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == 1);  // one channel, one connection
  CHECK(stats["proxy"]["same_node_direct"] == 1);
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["http2"] == 2);
  CHECK(stats["proxy"]["requests"] == 2 * 10);
  CHECK(stats["proxy"]["parse_failures"] == 0);
  StopCleanly(*agent);
}

// ---- opaque TCP: 1 GiB each way with half-close ----

// Who sends when: both at once, or one side only after the other's FIN, which the agent
// must pass on while it keeps the other direction open.
enum class Order { kTogether, kClientFirst, kServerFirst };

struct StreamResult {
  std::string client;  // stream_peer's report lines
  std::string server;
};

// One stream_peer run on `port`, `bytes` each way; with an agent, the client starts once
// the agent captures the port (it finds listening ports once a second).
StreamResult Stream(const Scenario& scenario, const AgentProcess* agent, uint16_t port,
                    uint64_t bytes, Order order) {
  std::vector<std::string> server_argv = {
      NODEMESH_STREAM_PEER_BINARY, "server", "--listen", Target(scenario.server, port), "--send",
      std::to_string(bytes),       "--seed", "2"};
  if (order == Order::kClientFirst) server_argv.push_back("--send-after-eof");
  std::vector<std::string> client_argv = {
      NODEMESH_STREAM_PEER_BINARY, "client", "--connect", Target(scenario.server, port), "--send",
      std::to_string(bytes),       "--seed", "1"};
  if (order == Order::kServerFirst) client_argv.push_back("--send-after-eof");
  Process server = scenario.server.Run(server_argv);
  REQUIRE(server.WaitForOutput("listening", 20s));
  if (agent != nullptr) REQUIRE(agent->WaitForInboundPort(scenario.server, port));
  const CommandResult client = scenario.client.RunCommand(client_argv, 300s);
  INFO(Describe(client) << "\nserver: " << server.output());
  REQUIRE(client.exit_code == 0);
  const std::optional<ExitStatus> server_status = server.Wait(60s);
  REQUIRE(server_status);
  REQUIRE(server_status->ok());
  return {client.output, server.output()};
}

// Both ends agree on every byte: what one sent is what the other received.
void CheckIntact(const StreamResult& result, uint64_t bytes) {
  INFO("client: " << result.client << "server: " << result.server);
  const std::string size = std::to_string(bytes);
  CHECK(FieldOf(result.client, "role=client", "sent") == size);
  CHECK(FieldOf(result.client, "role=client", "received") == size);
  CHECK(FieldOf(result.server, "role=server", "received") == size);
  CHECK(FieldOf(result.client, "role=client", "sent_sha256") ==
        FieldOf(result.server, "role=server", "received_sha256"));
  CHECK(FieldOf(result.server, "role=server", "sent_sha256") ==
        FieldOf(result.client, "role=client", "received_sha256"));
}

TEST_CASE("1 GiB each way over opaque TCP with half-close arrives intact through the agent") {
  Scenario scenario;
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  constexpr uint64_t kTurnBytes = uint64_t{64} << 20;
  struct Run {
    uint16_t port;  // one per run: a port is captured while its server listens
    uint64_t bytes;
    Order order;
  };
  const std::vector<Run> runs = {{9000, kGiB, Order::kTogether},
                                 {9001, kTurnBytes, Order::kClientFirst},
                                 {9002, kTurnBytes, Order::kServerFirst}};
  std::vector<StreamResult> direct;
  for (const Run& run : runs) {
    INFO("direct, port " << run.port);
    direct.push_back(Stream(scenario, nullptr, run.port, run.bytes, run.order));
    CheckIntact(direct.back(), run.bytes);
  }

  std::unique_ptr<AgentProcess> agent = scenario.StartAgent();
  uint64_t total = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    INFO("through the agent, port " << runs[i].port << "\nagent:\n" << agent->output());
    const StreamResult proxied =
        Stream(scenario, agent.get(), runs[i].port, runs[i].bytes, runs[i].order);
    CheckIntact(proxied, runs[i].bytes);
    // The same bytes as direct, and the server saw the client pod's address.
    for (const char* field : {"sent_sha256", "received_sha256"}) {
      CHECK(FieldOf(proxied.client, "role=client", field) ==
            FieldOf(direct[i].client, "role=client", field));
    }
    CHECK(FieldOf(proxied.server, "role=server", "peer").starts_with(scenario.client.ip + ":"));
    total += runs[i].bytes;
  }

  const nlohmann::json stats = agent->Get("/stats");
  INFO(stats.dump(2));
  CHECK(stats["proxy"]["accepted_outbound"] == runs.size());
  CHECK(stats["proxy"]["same_node_direct"] == runs.size());
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["opaque"] == 2 * runs.size());
  // Every byte crossed the agent once and was counted by both views (the client pod's
  // outbound, the server pod's inbound).
  CHECK(stats["proxy"]["bytes_to_upstream"] == 2 * total);
  CHECK(stats["proxy"]["bytes_to_client"] == 2 * total);
  CHECK(stats["proxy"]["resets"] == 0);
  CHECK(stats["proxy"]["active"] == 0);
  StopCleanly(*agent);
}

TEST_CASE("a receiver that stops reading stalls its sender instead of filling the agent") {
  Scenario scenario;
  constexpr uint64_t kBytes = uint64_t{512} << 20;
  constexpr uint16_t kPort = 9100;
  const std::string go = scenario.dir.path() + "/go";
  std::unique_ptr<AgentProcess> agent = scenario.StartAgent();
  Process server = scenario.server.Run({NODEMESH_STREAM_PEER_BINARY, "server", "--listen",
                                        Target(scenario.server, kPort), "--send", "0", "--seed",
                                        "2", "--read-after", go});
  REQUIRE(server.WaitForOutput("listening", 20s));
  REQUIRE(agent->WaitForInboundPort(scenario.server, kPort));
  Process client = scenario.client.Run({NODEMESH_STREAM_PEER_BINARY, "client", "--connect",
                                        Target(scenario.server, kPort), "--send",
                                        std::to_string(kBytes), "--seed", "1"});

  // Wait until the agent stops taking bytes from the client (two readings alike).
  uint64_t taken = 0;
  const bool settled = PollUntil(
      [&] {
        const uint64_t now = agent->ProxyCounter("bytes_to_upstream");
        const bool same = now > 0 && now == taken;
        taken = now;
        return same;
      },
      60s, 500ms);
  INFO("taken " << taken << "\nclient: " << client.output() << "\nserver: " << server.output());
  REQUIRE(settled);
  // What is in flight fits in the sockets' buffers and a pooled buffer per direction of
  // each leg, nowhere near the whole stream: the agent stopped reading, not buffering.
  CHECK(taken < kBytes / 4);
  CHECK(client.IsRunning());

  WriteFile(go, "");
  const std::optional<ExitStatus> client_status = client.Wait(120s);
  const std::optional<ExitStatus> server_status = server.Wait(60s);
  INFO("client: " << client.output() << "\nserver: " << server.output());
  REQUIRE(client_status);
  REQUIRE(server_status);
  CHECK(client_status->ok());
  CHECK(server_status->ok());
  CHECK(FieldOf(server.output(), "role=server", "received") == std::to_string(kBytes));
  CHECK(FieldOf(server.output(), "role=server", "received_sha256") ==
        FieldOf(client.output(), "role=client", "sent_sha256"));
  CHECK(FieldOf(client.output(), "role=client", "received") == "0");
  CHECK(agent->ProxyCounter("bytes_to_upstream") == 2 * kBytes);
  StopCleanly(*agent);
}

// ---- 1000 concurrent connections ----

constexpr uint16_t kEchoPort = 7000;
constexpr int kConnections = 1000;

// Opens kConnections at once from the client pod, checks each echoes, and returns with all
// of them still open (the caller releases them by creating `release_file`).
Process OpenMany(const Scenario& scenario, const std::string& release_file) {
  Process many = scenario.client.Run(
      TcpPeer("many", {"--connect", Target(scenario.server, kEchoPort), "--connections",
                       std::to_string(kConnections), "--release-file", release_file}));
  const std::string holding = fmt::format("holding {}", kConnections);
  const bool held = PollUntil(
      [&] { return many.output().find(holding) != std::string::npos || !many.IsRunning(); }, 120s,
      50ms);
  INFO(many.output());
  REQUIRE(held);
  REQUIRE(many.output().find(holding) != std::string::npos);
  return many;
}

void CloseMany(Process& many, const std::string& release_file) {
  WriteFile(release_file, "");
  const std::optional<ExitStatus> status = many.Wait(60s);
  INFO(many.output());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(many.output().find(fmt::format("closed {}", kConnections)) != std::string::npos);
}

TEST_CASE("1000 concurrent connections all succeed through the agent") {
  Scenario scenario;
  Process server = StartEchoServer(scenario.server, kEchoPort);

  Process direct = OpenMany(scenario, scenario.dir.path() + "/release-direct");
  CloseMany(direct, scenario.dir.path() + "/release-direct");
  REQUIRE(AcceptedFrom(server).size() == kConnections);

  std::unique_ptr<AgentProcess> agent = scenario.StartAgent(kEchoPort);
  Process proxied = OpenMany(scenario, scenario.dir.path() + "/release-agent");
  // All of them open at once, each one hop, listed for both pods.
  const nlohmann::json stats = agent->Get("/stats");
  INFO(stats.dump(2) << "\nagent:\n" << agent->output());
  CHECK(stats["proxy"]["accepted_outbound"] == kConnections);
  CHECK(stats["proxy"]["same_node_direct"] == kConnections);
  CHECK(stats["proxy"]["accepted_inbound"] == 0);
  CHECK(stats["proxy"]["active"] == kConnections);
  CHECK(stats["kernel"]["redirected_ipv4"] == kConnections);
  CHECK(stats["kernel"]["inbound_steered"] == 0);
  CHECK(stats["proxy"]["origin_missing"] == 0);
  CHECK(agent->Get("/connections")["connections"].size() == 2 * kConnections);
  CloseMany(proxied, scenario.dir.path() + "/release-agent");

  const std::vector<std::string> accepted = AcceptedFrom(server);
  CHECK(accepted.size() == 2 * kConnections);
  CHECK(std::count(accepted.begin(), accepted.end(), scenario.client.ip) == 2 * kConnections);
  // And every one of them is gone from the agent afterwards.
  CHECK(PollUntil([&] { return agent->Get("/stats")["proxy"]["active"] == 0; }, 30s));
  StopCleanly(*agent);
}

}  // namespace
}  // namespace nodemesh::testing
