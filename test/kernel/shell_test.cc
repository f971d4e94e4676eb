// Kernel tier for meshctl shell: the real meshctl binary runs `shell -c CMD` against the
// admin socket of a real nodemesh-agent on a simulated node, for each command, as a table
// and as JSON, and what it shows is checked against the node, the kernel and the traffic.
#include <fmt/format.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <vector>

#include "test/kernel/kernel_cluster.h"
#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;
using Json = nlohmann::json;

constexpr uint16_t kEchoPort = 7000;
constexpr uint16_t kExcludedPort = 2379;

using Cluster = KernelCluster;

CommandResult Shell(const std::string& socket, const std::string& command, bool json = false) {
  std::vector<std::string> argv = {
      NODEMESH_MESHCTL_BINARY, "shell", "--socket", socket, "-c", command};
  if (json) {
    argv.push_back("-o");
    argv.push_back("json");
  }
  return RunCommand(argv, 30s);
}

// The command's JSON result; fails the test with the output if it did not succeed.
Json ShellJson(const AgentProcess& agent, const std::string& command) {
  const CommandResult result = Shell(agent.admin_socket(), command, /*json=*/true);
  INFO("meshctl shell -c '" << command << "' -o json:\n" << result.output);
  REQUIRE(result.exit_code == 0);
  const Json json = Json::parse(result.output, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(json.is_discarded());
  return json;
}

// The command's table; fails the test if it did not succeed.
std::string ShellTable(const AgentProcess& agent, const std::string& command) {
  const CommandResult result = Shell(agent.admin_socket(), command);
  INFO("meshctl shell -c '" << command << "':\n" << result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

const Json* Find(const Json& items, const char* key, const std::string& value) {
  for (const Json& item : items) {
    if (item.value(key, "") == value) return &item;
  }
  return nullptr;
}

// The row of a table whose text contains `needle`, or "".
std::string RowWith(const std::string& table, const std::string& needle) {
  size_t start = 0;
  while (start < table.size()) {
    const size_t end = table.find('\n', start);
    const std::string row = table.substr(start, end - start);
    if (row.find(needle) != std::string::npos) return row;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return "";
}

TEST_CASE("meshctl shell -c shows the agent's pods, connections, programs, maps and settings") {
  Cluster cluster;
  Process echo = StartEchoServer(cluster.remote, kEchoPort);
  const std::string target = Target(cluster.remote, kEchoPort);
  AgentProcess agent(cluster.node_a,
                     {.binary = NODEMESH_AGENT_BINARY,
                      .log_level = "debug",
                      .extra_args = {"--exclude-ports", std::to_string(kExcludedPort)}});
  INFO("agent:\n" << agent.output());
  // A live proxied connection, held open with a round trip every 0.2 s.
  Process held = cluster.client.Run(TcpPeer("hold", {"--connect", target, "--interval", "0.2"}));
  REQUIRE(held.WaitForOutput("ping 3 ok", 20s));

  const Json agent_pods = agent.Get("/pods")["pods"];
  const Json* web = Find(agent_pods, "name", "web-1");
  REQUIRE(web != nullptr);
  const uint64_t web_cgroup_id = (*web)["cgroup_id"].get<uint64_t>();
  CHECK(web_cgroup_id == cluster.client.cgroup_id);

  SECTION("pods") {
    const Json pods = ShellJson(agent, "pods")["pods"];
    REQUIRE(pods.size() == 3);
    const Json* client = Find(pods, "name", "web-1");
    REQUIRE(client != nullptr);
    CHECK((*client)["state"] == "enrolled");
    CHECK((*client)["cgroup_id"] == web_cgroup_id);
    CHECK((*client)["netns"] == cluster.client.netns_path);
    CHECK((*Find(pods, "name", "vote-bot-1"))["state"] == "unmeshed");

    const std::string table = ShellTable(agent, "pods");
    const std::string row = RowWith(table, "emojivoto/web-1");
    INFO(table);
    CHECK(row.find("enrolled") != std::string::npos);
    CHECK(row.find(std::to_string(web_cgroup_id)) != std::string::npos);
    CHECK(row.find(cluster.client.netns_path) != std::string::npos);
    CHECK(RowWith(table, "emojivoto/vote-bot-1").find("unmeshed") != std::string::npos);
  }

  SECTION("conns") {
    // The held connection, with the bytes of its round trips so far.
    const size_t pings = static_cast<size_t>(CountLines(held.output(), "ping "));
    const Json conns = ShellJson(agent, "conns emojivoto/web-1")["connections"];
    INFO(conns.dump(2));
    REQUIRE(conns.size() == 1);
    const Json& conn = conns[0];
    CHECK(conn["pod"] == "emojivoto/web-1");
    CHECK(conn["direction"] == "outbound");
    CHECK(conn["destination"] == target);
    CHECK(conn["state"] == "proxying");
    CHECK(conn["bytes_to_upstream"].get<uint64_t>() >= pings * std::string("ping 0\n").size());
    CHECK(conn["bytes_to_client"].get<uint64_t>() >= pings * std::string("ping 0\n").size());
    const std::string id = conn["id"];
    const std::string protocol = conn["protocol"];

    // By id, by the pod's name alone, by protocol; none of another pod or protocol.
    CHECK(ShellJson(agent, "conns " + id)["connections"].size() == 1);
    CHECK(ShellJson(agent, "conns web-1 --proto " + protocol)["connections"].size() == 1);
    CHECK(ShellJson(agent, "conns --proto nosuch")["connections"].empty());
    CHECK(ShellJson(agent, "conns emoji-1")["connections"].empty());

    const std::string table = ShellTable(agent, "conns");
    INFO(table);
    const std::string row = RowWith(table, id + " ");
    CHECK(row.find("emojivoto/web-1") != std::string::npos);
    CHECK(row.find(target) != std::string::npos);
    CHECK(row.find("outbound") != std::string::npos);

    const CommandResult unknown = Shell(agent.admin_socket(), "conns nosuch");
    CHECK(unknown.exit_code == 1);
    CHECK(unknown.output.find("no pod and no live connection 'nosuch' on node node-a") !=
          std::string::npos);
  }

  SECTION("stats") {
    const Json stats = ShellJson(agent, "stats");
    CHECK(stats["proxy"]["accepted_outbound"].get<uint64_t>() >= 1);
    CHECK(stats["kernel"]["redirected_ipv4"].get<uint64_t>() >= 1);
    const std::string table = ShellTable(agent, "stats");
    CHECK(RowWith(table, "accepted_outbound").find(stats["proxy"]["accepted_outbound"].dump()) !=
          std::string::npos);
    CHECK(RowWith(table, "redirected_ipv4") != "");
  }

  SECTION("kernel: programs, maps, counters") {
    const Json kernel = ShellJson(agent, "kernel");
    INFO(kernel.dump(2));
    // Seven programs on the node's cgroup, as the kernel lists them.
    const std::string listed =
        RunCommand({"bpftool", "cgroup", "show", cluster.node_a.cgroup_dir()}).output;
    int on_cgroup = 0;
    for (const Json& program : kernel["programs"]) {
      if (program["attach_point"].get<std::string>().starts_with("cgroup ")) {
        ++on_cgroup;
        CHECK(program["attach_point"] == "cgroup " + cluster.node_a.cgroup_dir());
        CHECK(listed.find(std::to_string(program["program_id"].get<uint32_t>())) !=
              std::string::npos);
      }
    }
    CHECK(on_cgroup == 7);
    const Json* connect4 = Find(kernel["programs"], "name", "nm_connect4");
    REQUIRE(connect4 != nullptr);
    CHECK((*connect4)["type"] == "cgroup_sock_addr");
    CHECK((*connect4)["attach_type"] == "cgroup_inet4_connect");
    // One sk_lookup link per enrolled pod, on its netns.
    int sk_lookups = 0;
    for (const Json& program : kernel["programs"]) {
      if (program["name"] != "nm_sk_lookup") continue;
      ++sk_lookups;
      CHECK(program["type"] == "sk_lookup");
      if (program["pod"] == "emojivoto/web-1") {
        CHECK(program["attach_point"] == "netns " + cluster.client.netns_path);
      }
    }
    CHECK(sk_lookups == 2);
    // The maps' entries follow the node: two pods enrolled, one IPv4 listener each, one
    // port excluded.
    const Json* enrolled = Find(kernel["maps"], "name", "enrolled_cgroups");
    REQUIRE(enrolled != nullptr);
    CHECK((*enrolled)["entries"] == 2);
    CHECK((*enrolled)["capacity"] == 4096);
    CHECK((*Find(kernel["maps"], "name", "inbound_listeners"))["entries"] == 2);
    CHECK((*Find(kernel["maps"], "name", "excluded_ports"))["entries"] == 1);
    CHECK((*Find(kernel["maps"], "name", "excluded_ports"))["capacity"] == 65536);
    CHECK(kernel["counters"]["redirected_ipv4"].get<uint64_t>() >= 1);

    const std::string table = ShellTable(agent, "kernel");
    INFO(table);
    CHECK(RowWith(table, "nm_connect4").find("cgroup_inet4_connect") != std::string::npos);
    CHECK(RowWith(table, "(emojivoto/web-1)").find("nm_sk_lookup") != std::string::npos);
    CHECK(RowWith(table, "enrolled_cgroups").find("4096") != std::string::npos);
  }

  SECTION("kernel map: entries decoded") {
    const Json cgroups = ShellJson(agent, "kernel map enrolled_cgroups");
    INFO(cgroups.dump(2));
    CHECK(cgroups["count"] == 2);
    const Json* entry = nullptr;
    for (const Json& e : cgroups["entries"]) {
      if (e["cgroup_id"] == web_cgroup_id) entry = &e;
    }
    REQUIRE(entry != nullptr);
    CHECK((*entry)["pod"] == "emojivoto/web-1");
    CHECK((*entry)["ipv4"] == cluster.client.ip);
    const std::string table = ShellTable(agent, "kernel map enrolled_cgroups");
    CHECK(RowWith(table, std::to_string(web_cgroup_id)).find("emojivoto/web-1") !=
          std::string::npos);

    const Json excluded = ShellJson(agent, "kernel map excluded_ports");
    REQUIRE(excluded["entries"].size() == 1);
    CHECK(excluded["entries"][0]["port"] == kExcludedPort);
    const Json listeners = ShellJson(agent, "kernel map inbound_listeners");
    REQUIRE(listeners["entries"].size() == 2);
    CHECK(listeners["entries"][0]["socket_cookie"].get<uint64_t>() != 0);
    const Json meshed = ShellJson(agent, "kernel map meshed_ports --limit 1");
    CHECK(meshed["entries"].size() <= 1);
    // Each enrolled pod has its counters, named; web-1's held connection was redirected.
    const Json counters = ShellJson(agent, "kernel map pod_counters");
    INFO(counters.dump(2));
    REQUIRE(counters["entries"].size() == 2);
    const Json* web_counters = Find(counters["entries"], "pod", "emojivoto/web-1");
    REQUIRE(web_counters != nullptr);
    CHECK((*web_counters)["redirected"] == 1);
    CHECK((*web_counters)["inbound_steered"] == 0);
    CHECK((*Find(counters["entries"], "pod", "emojivoto/emoji-1"))["redirected"] == 0);

    const CommandResult unknown = Shell(agent.admin_socket(), "kernel map nosuch");
    CHECK(unknown.exit_code == 1);
    CHECK(unknown.output.find("no map named nosuch: the maps are") != std::string::npos);
  }

  SECTION("config, log-level, version") {
    Json config = ShellJson(agent, "config");
    CHECK(config["node"] == "node-a");
    CHECK(config["excluded_ports"] == Json::array({kExcludedPort}));
    CHECK(config["workers"] == 2);
    CHECK(config["log_level"] == "debug");
    CHECK(config["inventory"]["path"] == agent.inventory_path());
    CHECK(config["admin_socket"] == agent.admin_socket());
    CHECK(config["metrics_address"] == agent.metrics_address());
    CHECK(RowWith(ShellTable(agent, "config"), "cgroup_root").find(cluster.node_a.cgroup_path()) !=
          std::string::npos);

    CHECK(ShellTable(agent, "log-level warning") == "log level set to warning\n");
    CHECK(ShellJson(agent, "config")["log_level"] == "warning");

    const Json version = ShellJson(agent, "version");
    CHECK(version["agent"]["node"] == "node-a");
    CHECK(version["agent"]["version"] == version["meshctl"]["version"]);
    CHECK(ShellTable(agent, "version").starts_with("meshctl version "));
  }

  SECTION("explain: an enrolled pod, an unmeshed one, an excluded port") {
    // A connection that came and went, as well as the held one.
    const CommandResult dialled = cluster.client.RunCommand(TcpPeer("dial", {"--connect", target}));
    REQUIRE(dialled.exit_code == 0);
    Json enrolled;
    // The worker files the connection as ended once both sides have closed.
    CHECK(PollUntil(
        [&] {
          enrolled = ShellJson(agent, "explain emojivoto/web-1");
          return !enrolled["recently_closed"].empty();
        },
        10s));
    INFO(enrolled.dump(2));
    REQUIRE(enrolled["recently_closed"].size() == 1);
    CHECK(enrolled["recently_closed"][0]["destination"] == target);
    CHECK(enrolled["recently_closed"][0]["end"] == "closed");
    CHECK(enrolled["recently_closed"][0]["pod"] == "emojivoto/web-1");
    // The pod's own kernel counters: the held connection and the dialled one redirected.
    CHECK(enrolled["counters_of"] == "emojivoto/web-1");
    CHECK(enrolled["counters"]["redirected"] == 2);
    CHECK(enrolled["counters"]["origin_save_failed"] == 0);
    CHECK(enrolled["first_failure"].is_null());
    CHECK(enrolled["steps"].size() >= 6);
    for (const Json& step : enrolled["steps"]) CHECK(step["ok"] == true);
    REQUIRE(enrolled["connections"].size() == 1);
    CHECK(enrolled["connections"][0]["destination"] == target);
    const std::string table = ShellTable(agent, "explain web-1");
    INFO(table);
    CHECK(table.find(fmt::format("(id {})", web_cgroup_id)) != std::string::npos);
    CHECK(table.find("Every step passes") != std::string::npos);

    // Each fails at its first failing step, marked, with what to do; exit code 1.
    const auto first_failure = [&](const std::string& what) {
      const CommandResult result = Shell(agent.admin_socket(), "explain " + what, true);
      INFO(result.output);
      CHECK(result.exit_code == 1);
      const Json json = Json::parse(result.output, nullptr, false);
      REQUIRE_FALSE(json.is_discarded());
      REQUIRE(json["first_failure"].is_number());
      const Json& step = json["steps"][json["first_failure"].get<size_t>()];
      CHECK(step["ok"] == false);
      CHECK_FALSE(step["fix"].get<std::string>().empty());
      return step["check"].get<std::string>();
    };
    CHECK(first_failure("emojivoto/vote-bot-1") == "meshed");
    CHECK(first_failure(Target(cluster.remote, kExcludedPort)) ==
          fmt::format("port {} not excluded", kExcludedPort));
    CHECK(first_failure("127.0.0.1:" + std::to_string(kEchoPort)) == "not loopback");
    const CommandResult unmeshed = Shell(agent.admin_socket(), "explain vote-bot-1");
    CHECK(unmeshed.output.find("FAIL  meshed") != std::string::npos);
    CHECK(unmeshed.output.find("meshctl inject pod/vote-bot-1 -n emojivoto") != std::string::npos);
  }

  SECTION("routes: an HTTP request through the agent") {
    Process http = cluster.remote.Run(
        {kPython, "-u", "-m", "http.server", "8000", "--bind", cluster.remote.ip});
    REQUIRE(http.WaitForOutput("Serving HTTP", 10s));
    const CommandResult curl =
        cluster.client.RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                   fmt::format("http://{}:8000/", cluster.remote.ip)});
    INFO(curl.output);
    REQUIRE(curl.output == "200");
    // The agent's registry takes the second's counts once a second.
    Json routes;
    CHECK(PollUntil(
        [&] {
          routes = ShellJson(agent, "routes web-1")["routes"];
          return !routes.empty();
        },
        10s));
    INFO(routes.dump(2));
    REQUIRE(routes.size() == 1);
    CHECK(routes[0]["route"] == "GET /");
    CHECK(routes[0]["direction"] == "outbound");
    CHECK(routes[0]["source"]["pod"] == "web-1");
    CHECK(routes[0]["responses"] == 1);
    CHECK(routes[0]["failures"] == 0);
    CHECK(ShellJson(agent, "routes emoji-1")["routes"].empty());
    CHECK(RowWith(ShellTable(agent, "routes"), "GET /").find("100.00%") != std::string::npos);
  }

  SECTION("explain: a pod the agent could not enrol says which step and why") {
    // A meshed pod of this node whose network namespace does not exist: enrolment fails at
    // its first step and is retried.
    Json inventory = Json::parse(ReadFile(agent.inventory_path()));
    inventory["pods"].push_back({{"namespace", "emojivoto"},
                                 {"name", "broken-1"},
                                 {"ips", {"10.77.250.9"}},
                                 {"cgroup", cluster.client.cgroup_path},
                                 {"netns", "/var/run/netns/nodemesh-test-no-such-netns"},
                                 {"meshed", true},
                                 {"node", "node-a"}});
    const std::string written = agent.inventory_path() + ".new";
    WriteFile(written, inventory.dump());
    REQUIRE(::rename(written.c_str(), agent.inventory_path().c_str()) == 0);
    REQUIRE(PollUntil(
        [&] {
          const std::optional<Json> pods = agent.TryGet("/pods");
          const Json* broken = pods ? Find((*pods)["pods"], "name", "broken-1") : nullptr;
          return broken != nullptr && (*broken)["state"] == "failed";
        },
        20s));
    const CommandResult result = Shell(agent.admin_socket(), "explain emojivoto/broken-1");
    INFO(result.output);
    CHECK(result.exit_code == 1);
    CHECK(RowWith(result.output, "FAIL").find("enrolled by the agent: state: failed:") !=
          std::string::npos);
    CHECK(RowWith(result.output, "FAIL").find("nodemesh-test-no-such-netns") != std::string::npos);
    CHECK(result.output.find("the agent tries again every 5 seconds") != std::string::npos);
    CHECK(RowWith(result.output, "sk_lookup attached").starts_with("  -  "));
  }

  SECTION("the admin socket is root's: owner-only and another user is told so") {
    struct stat socket_stat {};
    REQUIRE(::stat(agent.admin_socket().c_str(), &socket_stat) == 0);
    CHECK(S_ISSOCK(socket_stat.st_mode));
    CHECK((socket_stat.st_mode & 0777) == 0600);
    CHECK(socket_stat.st_uid == 0);
    // Its directory must let another user reach the socket for the socket's own mode to be
    // what refuses them.
    const std::string directory = agent.admin_socket().substr(0, agent.admin_socket().rfind('/'));
    ::chmod(directory.c_str(), 0755);
    const CommandResult other = RunCommand(
        {"setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
         NODEMESH_MESHCTL_BINARY, "shell", "--socket", agent.admin_socket(), "-c", "pods"},
        30s);
    INFO(other.output);
    CHECK(other.exit_code == 1);
    CHECK(other.output.find(fmt::format("no permission to use {}: the agent's admin socket is "
                                        "root's (run meshctl shell as root)",
                                        agent.admin_socket())) != std::string::npos);
  }

  SECTION("help, an unknown command, no agent") {
    CHECK(ShellTable(agent, "help").find("kernel map NAME") != std::string::npos);
    const CommandResult unknown = Shell(agent.admin_socket(), "podz");
    CHECK(unknown.exit_code == 2);
    CHECK(unknown.output.find("unknown command 'podz': the commands are pods, conns") !=
          std::string::npos);
    const std::string missing = agent.admin_socket() + ".missing";
    const CommandResult down = Shell(missing, "pods");
    CHECK(down.exit_code == 1);
    CHECK(down.output.find(fmt::format(
              "no agent answers on {}: is nodemesh-agent running on this node? (--socket PATH)",
              missing)) != std::string::npos);
  }
  held.Kill();
  // The agent stops cleanly: under the sanitizer build, this is where its reports would show.
  const std::optional<ExitStatus> status = agent.Stop();
  INFO(agent.output());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(agent.output().find("Sanitizer") == std::string::npos);
}

TEST_CASE("a pod of another node in the local inventory is not listed as the node's, and names its "
          "peer") {
  Cluster cluster;
  Process echo = StartEchoServer(cluster.remote, kEchoPort);
  AgentProcess agent(cluster.node_a, {.binary = NODEMESH_AGENT_BINARY});
  // One inventory for the whole cluster, as the local cluster writes it: node-a's pods (emoji-1
  // naming its node, the others no node) and node-b's voting-1, meshed, enrolled there.
  Json inventory = Json::parse(ReadFile(agent.inventory_path()));
  for (Json& pod : inventory["pods"]) {
    if (pod["name"] == cluster.server.name) pod["node"] = "node-a";
  }
  inventory["pods"].push_back({{"namespace", "emojivoto"},
                               {"name", cluster.remote.name},
                               {"owner", {{"kind", "Deployment"}, {"name", "voting"}}},
                               {"ips", {cluster.remote.ip}},
                               {"cgroup", cluster.remote.cgroup_path},
                               {"netns", cluster.remote.netns_path},
                               {"meshed", true},
                               {"node", "node-b"}});
  const uint64_t named = agent.ProxyCounter("identities");
  const std::string written = agent.inventory_path() + ".new";
  WriteFile(written, inventory.dump());
  REQUIRE(::rename(written.c_str(), agent.inventory_path().c_str()) == 0);
  // Applied once voting-1 has a name: the only identity the new inventory adds.
  REQUIRE(PollUntil([&] { return agent.ProxyCounter("identities") == named + 1; }, 10s));
  INFO("agent:\n" << agent.output());

  const Json pods = agent.Get("/pods")["pods"];
  INFO(pods.dump(2));
  CHECK(pods.size() == 3);
  CHECK(Find(pods, "name", cluster.remote.name) == nullptr);
  REQUIRE(Find(pods, "name", cluster.client.name) != nullptr);
  CHECK((*Find(pods, "name", cluster.client.name))["state"] == "enrolled");
  REQUIRE(Find(pods, "name", cluster.server.name) != nullptr);
  CHECK((*Find(pods, "name", cluster.server.name))["state"] == "enrolled");

  const Json shell_pods = ShellJson(agent, "pods")["pods"];
  CHECK(shell_pods.size() == 3);
  CHECK(Find(shell_pods, "name", cluster.remote.name) == nullptr);
  const std::string table = ShellTable(agent, "pods");
  INFO(table);
  CHECK(table.find(cluster.remote.name) == std::string::npos);
  CHECK(table.find("pending") == std::string::npos);
  const CommandResult explained = Shell(agent.admin_socket(), "explain " + cluster.remote.ip);
  INFO(explained.output);
  CHECK(explained.output.find("no pod of node node-a: explained as a destination of its pods") !=
        std::string::npos);

  // It still names the far end: web-1's connection to it is counted as to voting-1.
  CHECK(Dial(cluster.client, Target(cluster.remote, kEchoPort)).exit_code == 0);
  const std::string to_voting = fmt::format("dst_pod=\"{}\"", cluster.remote.name);
  CHECK(PollUntil(
      [&] {
        const std::optional<HttpReply> metrics = agent.GetMetricsPort("/metrics");
        return metrics && metrics->body.find(to_voting) != std::string::npos;
      },
      10s));
}

// node-a's agent streams to a real aggregator; web-1 calls an HTTP server on node-b.
struct RelayedCluster : Cluster {
  const std::string aggregator_address =
      StartAggregator({.binary = NODEMESH_AGGREGATOR_BINARY}).address();
  Process http = remote.Run({kPython, "-u", "-m", "http.server", "8000", "--bind", remote.ip});
  AgentProcess& agent = StartAgent(node_a, {.binary = NODEMESH_AGENT_BINARY});
  const std::string url = fmt::format("http://{}:8000/tapped", remote.ip);

  // meshctl --aggregator ADDRESS shell ARGUMENTS...
  CommandResult Relayed(std::vector<std::string> arguments) const {
    arguments.insert(arguments.begin(),
                     {NODEMESH_MESHCTL_BINARY, "--aggregator", aggregator_address, "shell"});
    return RunCommand(arguments, 30s);
  }

  // Sends requests from web-1 until `tap` ends (it stops after its --max-events), for at
  // most 30 s: a tap's subscription reaches the workers a moment after it starts.
  bool RequestUntilEnded(Process& tap) {
    return PollUntil(
        [&] {
          client.RunCommand({"curl", "-s", "-o", "/dev/null", "--max-time", "5", url});
          return !tap.IsRunning();
        },
        30s, 100ms);
  }
};

// One request line of tap as meshctl tap prints it, from web-1 to the server on node-b.
const std::regex kTappedRequest(R"(^req id=\S+ proxy=out src=emojivoto/web-1 dst=\S+ :method=GET )"
                                R"(:authority=\S+:8000 :path=/tapped)",
                                std::regex::multiline);

// The agent's log lines as a local tap session starts, and as it ends unpolled.
const std::regex kSessionStarted(R"(local tap \S+ started)");
const std::regex kSessionEnded(R"(local tap \S+ ended: not polled)");

size_t CountOf(const std::string& text, const std::regex& pattern) {
  return static_cast<size_t>(std::distance(std::sregex_iterator(text.begin(), text.end(), pattern),
                                           std::sregex_iterator()));
}

TEST_CASE("meshctl shell tap shows the node's live requests until --max-events or Ctrl-C") {
  RelayedCluster cluster;
  REQUIRE(cluster.http.WaitForOutput("Serving HTTP", 10s));
  AgentProcess& agent = cluster.agent;
  INFO("agent:\n" << agent.output());

  SECTION("on the admin socket: the lines of meshctl tap, and the session ends after it") {
    Process tap({NODEMESH_MESHCTL_BINARY, "shell", "--socket", agent.admin_socket(), "-c",
                 "tap web-1 --method GET --max-events 2"});
    REQUIRE(cluster.RequestUntilEnded(tap));
    const std::optional<ExitStatus> status = tap.Wait(5s);
    INFO(tap.output());
    REQUIRE(status);
    CHECK(status->ok());
    CHECK(std::regex_search(tap.output(), kTappedRequest));
    // A tap of another pod sees none of web-1's requests: --max-events 1 of a pod nobody
    // calls never ends by itself, and Ctrl-C (SIGINT) stops it cleanly.
    Process idle({NODEMESH_MESHCTL_BINARY, "shell", "--socket", agent.admin_socket(), "-c",
                  "tap emoji-1 --max-events 1"});
    // Its session is open once the agent says so: a SIGINT before meshctl has started
    // (slow under the sanitizers) would end it uncleanly for a reason of the test's own.
    REQUIRE(PollUntil([&] { return CountOf(agent.output(), kSessionStarted) == 2; }, 10s));
    for (int i = 0; i < 5; ++i) {
      cluster.client.RunCommand({"curl", "-s", "-o", "/dev/null", "--max-time", "5", cluster.url});
    }
    CHECK(idle.IsRunning());
    REQUIRE(idle.Signal(SIGINT));
    const std::optional<ExitStatus> stopped = idle.Wait(5s);
    REQUIRE(stopped);
    CHECK(stopped->ok());
    CHECK(idle.output().empty());
    // Nobody polls the agent's two sessions any more: it ends them by itself.
    CHECK(PollUntil([&] { return CountOf(agent.output(), kSessionEnded) == 2; }, 20s));
  }

  SECTION("--node through the aggregator: the same answers, tap too, reads only") {
    Json local = ShellJson(agent, "pods");
    CommandResult pods;
    // The agent's stream reaches the aggregator a moment after the agent is ready.
    REQUIRE(PollUntil(
        [&] {
          pods = cluster.Relayed({"--node", "node-a", "-c", "pods", "-o", "json"});
          return pods.exit_code == 0;
        },
        15s));
    INFO(pods.output);
    CHECK(Json::parse(pods.output)["pods"] == local["pods"]);
    const CommandResult kernel = cluster.Relayed({"--node", "node-a", "-c", "kernel"});
    CHECK(kernel.exit_code == 0);
    CHECK(kernel.output.find("enrolled_cgroups") != std::string::npos);

    Process tap({NODEMESH_MESHCTL_BINARY, "--aggregator", cluster.aggregator_address, "shell",
                 "--node", "node-a", "-c", "tap emojivoto/web-1 --max-events 1"});
    REQUIRE(cluster.RequestUntilEnded(tap));
    INFO(tap.output());
    CHECK(tap.Wait(5s).value_or(ExitStatus{.code = -1}).ok());
    CHECK(std::regex_search(tap.output(), kTappedRequest));

    const CommandResult level = cluster.Relayed({"--node", "node-a", "-c", "log-level debug"});
    CHECK(level.exit_code == 1);
    CHECK(level.output.find("the aggregator relays reads only: change the agent of node node-a "
                            "on that node") != std::string::npos);
    const CommandResult unknown = cluster.Relayed({"--node", "node-z", "-c", "pods"});
    CHECK(unknown.exit_code == 1);
    CHECK(unknown.output.find("no agent of node 'node-z' is connected to this aggregator "
                              "(connected: node-a)") != std::string::npos);
    const CommandResult both =
        cluster.Relayed({"--node", "node-a", "--socket", agent.admin_socket(), "-c", "pods"});
    CHECK(both.exit_code == 2);
  }
}

}  // namespace
}  // namespace nodemesh::testing
