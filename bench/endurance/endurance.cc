#include "bench/endurance/endurance.h"

#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

#include "test/lib/peers.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

// The failed checks of the whole run.
std::vector<std::string> failures;

// The totals a client printed last, as a JSON line.
std::optional<ClientTotals> TotalsOf(const Process& client) {
  std::istringstream lines(client.output());
  std::optional<ClientTotals> totals;
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("{")) continue;
    const Json json = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!json.is_discarded()) totals = ClientTotals::FromJson(json);
  }
  return totals;
}

}  // namespace

void Check(bool ok, const std::string& what) {
  if (!ok) {
    failures.push_back(what);
    fmt::print("CHECK FAILED: {}\n", what);
    std::fflush(stdout);
  }
}

const std::vector<std::string>& Failures() { return failures; }

Process StartNginxAnsweringPaths(const Pod& server, const Pod& prober, const std::string& dir) {
  const std::string root = fmt::format("{}/nginx-{}", dir, server.name);
  const std::string conf = fmt::format(R"(
master_process on;
worker_processes 1;
worker_rlimit_nofile 200000;
user root;
error_log {0}/error.log warn;
pid {0}/nginx.pid;
events {{ worker_connections 100000; multi_accept on; }}
http {{
  access_log off;
  default_type text/plain;
  {3}
  keepalive_requests 100000000;
  keepalive_timeout 3600s;
  server {{
    listen {1}:{2} backlog=8192;
    location / {{ return 200 "$request_uri"; }}
  }}
}}
)",
                                       root, server.ip, kServerPort, NginxTempPaths(root));
  return StartNginx(server, prober, root, conf,
                    fmt::format("http://{}:{}/probe", server.ip, kServerPort));
}

std::unique_ptr<AgentProcess> StartAgent(TestNode& node, const Settings& settings,
                                         std::vector<std::string> extra_args) {
  return std::make_unique<AgentProcess>(node,
                                        AgentProcessOptions{.binary = NODEMESH_AGENT_BINARY,
                                                            .log_level = "warning",
                                                            .workers = settings.workers,
                                                            .extra_args = std::move(extra_args)});
}

ClientTotals FinishClient(Process& client, std::chrono::milliseconds timeout) {
  const std::optional<ExitStatus> status = client.Wait(timeout);
  std::optional<ClientTotals> totals = TotalsOf(client);
  if (!status || !status->ok() || !totals) {
    throw std::runtime_error(fmt::format("client {} ({}):\n{}", client.command(),
                                         status ? status->ToString() : "still running",
                                         client.output()));
  }
  return *totals;
}

void WaitForLine(Process& client, std::string_view line, std::chrono::seconds timeout) {
  if (!PollUntil(
          [&] { return client.output().find(line) != std::string::npos || !client.IsRunning(); },
          timeout, 100ms) ||
      client.output().find(line) == std::string::npos) {
    const std::string why =
        client.IsRunning()
            ? fmt::format("did not say '{}' within {} s", line, timeout.count())
            : fmt::format("ended ({}) before saying '{}'", client.Wait(0ms)->ToString(), line);
    throw std::runtime_error(fmt::format("client {}:\n{}", why, client.output()));
  }
}

std::string SelfBinary() { return std::filesystem::read_symlink("/proc/self/exe").string(); }

int64_t CountLinesWith(const std::string& text, std::string_view needle) {
  std::istringstream lines(text);
  int64_t count = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.find(needle) != std::string::npos) ++count;
  }
  return count;
}

uint64_t ProxyStat(const AgentProcess& agent, const char* name) {
  return agent.Get("/stats")["proxy"].at(name).get<uint64_t>();
}

void WaitUntilIdle(const AgentProcess& agent) {
  PollUntil([&] { return ProxyStat(agent, "active") == 0; }, 60s, 100ms);
  std::this_thread::sleep_for(3s);
}

uint64_t RegistryResponses(const AgentProcess& agent) {
  uint64_t responses = 0;
  const Json routes = agent.Get("/routes");  // named: a loop over a temporary's member dangles
  for (const Json& route : routes["routes"]) {
    responses += route["responses"].get<uint64_t>();
  }
  return responses;
}

Memory MemoryOf(pid_t pid) {
  return {StatusKiB(pid, "VmRSS"), StatusKiB(pid, "VmHWM"), DescriptorCount(pid)};
}

double MiB(uint64_t kib) { return static_cast<double>(kib) / 1024.0; }

}  // namespace nodemesh::testing::endurance
