// Kernel tier: the simulated-node fixture makes real namespaces, veths, a bridge and
// cgroups, and removes them again. Needs root; without it every test fails and says so.
#include "test/lib/test_node.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "test/lib/files.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

bool Exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

ino_t InodeOf(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_ino;
}

// A process that is gone, or exited and waiting for a parent that is not us to reap it.
bool Dead(pid_t pid) {
  const std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  const size_t comm_end = stat.rfind(')');
  return stat.empty() || (comm_end != std::string::npos && stat.substr(comm_end + 2, 1) == "Z");
}

std::string Run(std::vector<std::string> argv) {
  const CommandResult result = RunCommand(std::move(argv), 30s);
  INFO(result.output);
  REQUIRE(result.exit_code == 0);
  return result.output;
}

// Two simulated nodes on one pod network, two pods each, as in the emojivoto demo.
struct Cluster {
  RootRequired root_required{"kernel"};
  PodNetwork network;
  TestNode node_a{network, "node-a"};
  TestNode node_b{network, "node-b"};
  const Pod& web = node_a.AddPod({.namespace_name = "emojivoto",
                                  .name = "web-1",
                                  .owner_kind = "Deployment",
                                  .owner_name = "web",
                                  .labels = {{"app", "web"}, {"version", "v11"}},
                                  .service_account = "web",
                                  .meshed = true});
  const Pod& emoji = node_a.AddPod({.namespace_name = "emojivoto",
                                    .name = "emoji-1",
                                    .owner_kind = "Deployment",
                                    .owner_name = "emoji",
                                    .labels = {{"app", "emoji-svc"}},
                                    .service_account = "emoji",
                                    .meshed = true});
  const Pod& voting = node_b.AddPod({.namespace_name = "emojivoto",
                                     .name = "voting-1",
                                     .owner_kind = "Deployment",
                                     .owner_name = "voting",
                                     .labels = {{"app", "voting-svc"}},
                                     .service_account = "voting",
                                     .meshed = true});
  const Pod& vote_bot = node_b.AddPod({.namespace_name = "emojivoto",
                                       .name = "vote-bot-1",
                                       .owner_kind = "Deployment",
                                       .owner_name = "vote-bot",
                                       .labels = {},
                                       .service_account = "default",
                                       .meshed = false});
};

// Serves `directory` over HTTP on the pod's address and port 8080.
Process StartHttpServer(const Pod& pod, const std::string& directory) {
  return pod.Run({"/usr/bin/python3", "-u", "-m", "http.server", "8080", "--bind", pod.ip},
                 {.cwd = directory});
}

// Fetches `url` from inside `client` until the server answers (it may still be starting).
CommandResult FetchWhenUp(const Pod& client, const std::string& url) {
  CommandResult result;
  PollUntil(
      [&] {
        result = client.RunCommand({"curl", "-sS", "--max-time", "2", url}, 10s);
        return result.exit_code == 0;
      },
      20s, 100ms);
  return result;
}

TEST_CASE("each pod gets its own address on the shared bridge") {
  Cluster cluster;
  const std::vector<const Pod*> pods = {&cluster.web, &cluster.emoji, &cluster.voting,
                                        &cluster.vote_bot};
  const std::string subnet_prefix =
      cluster.network.subnet().substr(0, cluster.network.subnet().rfind('.') + 1);
  CHECK(cluster.network.gateway() == subnet_prefix + "1");
  CHECK(Run({"ip", "-4", "-o", "addr", "show", "dev", cluster.network.bridge()})
            .find(cluster.network.gateway() + "/24") != std::string::npos);

  std::set<std::string> addresses;
  for (const Pod* pod : pods) {
    INFO(pod->name << " " << pod->ip);
    CHECK(pod->ip.starts_with(subnet_prefix));
    addresses.insert(pod->ip);
    CHECK(Run({"ip", "-n", pod->netns_name, "-4", "-o", "addr", "show", "dev", "eth0"})
              .find(pod->ip + "/24") != std::string::npos);
    CHECK(Run({"ip", "-n", pod->netns_name, "route", "show", "default"})
              .find("via " + cluster.network.gateway()) != std::string::npos);
    CHECK(Run({"ip", "-n", pod->netns_name, "-o", "link", "show", "lo"}).find("UP") !=
          std::string::npos);
    CHECK(fs::read_symlink("/sys/class/net/" + pod->host_veth + "/master").filename() ==
          cluster.network.bridge());
  }
  CHECK(addresses.size() == pods.size());
}

TEST_CASE("a process started in a pod is in the pod's cgroup and network namespace") {
  Cluster cluster;
  for (const Pod* pod : {&cluster.web, &cluster.vote_bot}) {
    INFO(pod->name);
    Process sleeper = pod->Run({"sleep", "60"});
    const std::string proc = "/proc/" + std::to_string(sleeper.pid());
    CHECK(ReadFile(proc + "/cgroup").find("0::" + pod->cgroup_path + "\n") != std::string::npos);
    CHECK(ReadFile(pod->cgroup_dir + "/cgroup.procs").find(std::to_string(sleeper.pid())) !=
          std::string::npos);
    CHECK(pod->cgroup_dir.starts_with(cluster.node_a.cgroup_dir()) ==
          (pod == &cluster.web));  // under its own node's subtree
    CHECK(pod->cgroup_id == InodeOf(pod->cgroup_dir));
    CHECK(InodeOf(proc + "/ns/net") == InodeOf(pod->netns_path));
    CHECK(InodeOf(proc + "/ns/net") != InodeOf("/proc/self/ns/net"));
  }
  // The pod's /etc/hosts names every pod on the network, whichever node it is on. (IPv4
  // only: an IPv6 lookup would miss the file and go on to DNS, which pods cannot reach.)
  const CommandResult resolved = cluster.web.RunCommand({"getent", "ahostsv4", "vote-bot-1"});
  INFO(resolved.output);
  CHECK(resolved.exit_code == 0);
  CHECK(resolved.output.starts_with(cluster.vote_bot.ip + " "));
}

TEST_CASE("a pod on one node reaches a server in a pod on the other node") {
  Cluster cluster;
  TempDir docroot;
  WriteFile(docroot.path() + "/hello.txt", "hello from web-1\n");
  Process server = StartHttpServer(cluster.web, docroot.path());
  const std::string url = "http://" + cluster.web.ip + ":8080/hello.txt";

  const CommandResult fetched = FetchWhenUp(cluster.voting, url);
  INFO("curl: " << fetched.output << "\nserver: " << server.output());
  REQUIRE(fetched.exit_code == 0);
  CHECK(fetched.output == "hello from web-1\n");
  // The server saw the client pod's own address: pod-to-pod, no NAT on the way.
  CHECK(server.WaitForOutput(cluster.voting.ip + " - - [", 5s));

  // By name, through the pod's /etc/hosts.
  const CommandResult by_name = cluster.vote_bot.RunCommand(
      {"curl", "-sS", "--max-time", "5", "http://web-1:8080/hello.txt"});
  INFO("by name: " << by_name.output);
  CHECK(by_name.output == "hello from web-1\n");
  CHECK(server.WaitForOutput(cluster.vote_bot.ip + " - - [", 5s));

  // And from the host (where the agent runs), through the gateway address.
  const CommandResult from_host = RunCommand({"curl", "-sS", "--max-time", "5", url});
  CHECK(from_host.output == "hello from web-1\n");
  CHECK(server.WaitForOutput(cluster.network.gateway() + " - - [", 5s));
}

// A routed network with a Service of two backends: its cluster IP reaches each in turn,
// without any agent, and a backend's replies come back through the host's NAT though client
// and backend share the bridge.
TEST_CASE("a routed network's Service reaches its backends in turn through the host's NAT") {
  RequireRoot("kernel");
  std::string table;
  {
    PodNetwork network({.routed = true});
    TestNode node(network, "node-a");
    const Pod& client = node.AddPod({.name = "client-1", .owner_name = "client"});
    const Pod& backend_a = node.AddPod({.name = "web-a", .owner_name = "web"});
    const Pod& backend_b = node.AddPod({.name = "web-b", .owner_name = "web"});
    TempDir docroot_a, docroot_b;
    WriteFile(docroot_a.path() + "/who", "web-a\n");
    WriteFile(docroot_b.path() + "/who", "web-b\n");
    Process server_a = StartHttpServer(backend_a, docroot_a.path());
    Process server_b = StartHttpServer(backend_b, docroot_b.path());
    const Service& service =
        network.AddService({.name = "web-svc",
                            .port = 80,
                            .backends = {backend_a.ip + ":8080", backend_b.ip + ":8080"}});
    table = network.nat_table();
    CHECK(service.cluster_ip.starts_with("10.96."));
    const std::string url = "http://" + service.target() + "/who";

    // Pod to pod goes through the host too: the server sees the client's own address.
    REQUIRE(FetchWhenUp(client, "http://" + backend_a.ip + ":8080/who").output == "web-a\n");
    REQUIRE(FetchWhenUp(client, "http://" + backend_b.ip + ":8080/who").output == "web-b\n");
    std::set<std::string> answered;
    for (int i = 0; i < 4; ++i) {
      const CommandResult fetched = client.RunCommand({"curl", "-sS", "--max-time", "5", url});
      INFO("curl: " << fetched.output);
      REQUIRE(fetched.exit_code == 0);
      answered.insert(fetched.output);
    }
    CHECK(answered == std::set<std::string>{"web-a\n", "web-b\n"});
    CHECK(server_a.WaitForOutput(client.ip + " - - [", 5s));
    CHECK(server_b.WaitForOutput(client.ip + " - - [", 5s));
    CHECK(Run({"nft", "list", "table", "ip", table}).find(service.cluster_ip) != std::string::npos);

    // Without its NAT the cluster IP belongs to no one: routed to the bridge, unanswered.
    network.RemoveServiceNat(service);
    CHECK(client.RunCommand({"curl", "-sS", "--max-time", "2", url}).exit_code != 0);
    network.RestoreServiceNat(service);
    CHECK(client.RunCommand({"curl", "-sS", "--max-time", "5", url}).exit_code == 0);

    // The node's inventory lists the Service.
    const nlohmann::json inventory = nlohmann::json::parse(node.InventoryJson());
    REQUIRE(inventory["services"].size() == 1);
    CHECK(inventory["services"][0]["name"] == "web-svc");
    CHECK(inventory["services"][0]["clusterIPs"][0] == service.cluster_ip);
  }
  CHECK(Run({"nft", "list", "tables", "ip"}).find(table) == std::string::npos);
}

TEST_CASE("a Service needs a routed network") {
  RequireRoot("kernel");
  PodNetwork network;
  CHECK_THROWS_AS(network.AddService({.name = "web-svc", .backends = {"10.77.0.11:8080"}}),
                  std::invalid_argument);
}

TEST_CASE("the inventory lists the node's pods in the agent's format") {
  Cluster cluster;
  TempDir dir;
  const std::string path = dir.path() + "/pods.json";
  cluster.node_a.WriteInventory(path);

  const std::string text = ReadFile(path);
  INFO(text);
  const nlohmann::ordered_json inventory = nlohmann::ordered_json::parse(text);
  CHECK(inventory.dump() + "\n" == text);  // compact, one line
  REQUIRE(inventory["pods"].size() == 2);
  const nlohmann::ordered_json& web = inventory["pods"][0];
  std::vector<std::string> keys;
  for (const auto& item : web.items()) keys.push_back(item.key());
  CHECK(keys == std::vector<std::string>{"namespace", "name", "owner", "labels", "serviceAccount",
                                         "ips", "cgroup", "netns", "meshed"});
  CHECK(web["namespace"] == "emojivoto");
  CHECK(web["name"] == "web-1");
  CHECK(web["owner"] == nlohmann::ordered_json{{"kind", "Deployment"}, {"name", "web"}});
  CHECK(web["labels"] == nlohmann::ordered_json{{"app", "web"}, {"version", "v11"}});
  CHECK(web["serviceAccount"] == "web");
  CHECK(web["ips"] == nlohmann::ordered_json::array({cluster.web.ip}));
  CHECK(web["cgroup"] == cluster.web.cgroup_path);
  CHECK(Exists(CgroupMount() + web["cgroup"].get<std::string>()));
  CHECK(web["netns"] == "/var/run/netns/" + cluster.web.netns_name);
  CHECK(web["meshed"] == true);
  CHECK(inventory["pods"][1]["name"] == "emoji-1");

  const std::string node_b_json = cluster.node_b.InventoryJson();
  const auto node_b = nlohmann::json::parse(node_b_json);
  CHECK(node_b["pods"][1]["labels"] == nlohmann::json::object());  // {} rather than null
  CHECK(node_b["pods"][1]["meshed"] == false);

  // Meshing changes replace the file in one rename, which an inotify watcher sees once.
  const ino_t before = InodeOf(path);
  cluster.node_a.SetMeshed(cluster.web, false);
  CHECK(InodeOf(path) != before);
  CHECK(nlohmann::json::parse(ReadFile(path))["pods"][0]["meshed"] == false);
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir.path())) {
    files.push_back(entry.path().filename().string());
  }
  CHECK(files == std::vector<std::string>{"pods.json"});

  // So do new pods.
  cluster.node_a.AddPod({.name = "late-1", .owner_name = "late"});
  const auto grown = nlohmann::json::parse(ReadFile(path));
  REQUIRE(grown["pods"].size() == 3);
  CHECK(grown["pods"][2]["namespace"] == "default");
  CHECK(grown["pods"][2]["owner"]["kind"] == "Deployment");
}

TEST_CASE("destroying the fixture removes everything it created") {
  RequireRoot("kernel");
  std::string id, cgroup_root, marker;
  std::vector<std::string> netns_names, veths;
  {
    Cluster cluster;
    id = cluster.network.id();
    cgroup_root = cluster.network.cgroup_root();
    marker = std::string(kTestStateDir) + "/" + id + ".owner";
    for (const Pod* pod : {&cluster.web, &cluster.emoji, &cluster.voting, &cluster.vote_bot}) {
      netns_names.push_back(pod->netns_name);
      veths.push_back(pod->host_veth);
      REQUIRE(Exists(pod->netns_path));
      REQUIRE(Exists(pod->hosts_file));
      REQUIRE(Exists(pod->cgroup_dir));
    }
    REQUIRE(Exists("/sys/class/net/" + cluster.network.bridge()));
    REQUIRE(Exists(marker));
    Process server = cluster.web.Run({"sleep", "600"});
  }
  const std::string ours = "nmt" + id;
  CHECK(Run({"ip", "netns", "list"}).find(ours) == std::string::npos);
  CHECK(Run({"ip", "-o", "link", "show"}).find(ours) == std::string::npos);
  for (const std::string& name : netns_names) {
    CHECK_FALSE(Exists("/var/run/netns/" + name));
    CHECK_FALSE(Exists("/etc/netns/" + name));
  }
  for (const std::string& veth : veths) CHECK_FALSE(Exists("/sys/class/net/" + veth));
  CHECK_FALSE(Exists(cgroup_root));
  CHECK_FALSE(Exists(marker));
}

TEST_CASE("processes still running in a pod are killed when the fixture goes") {
  RequireRoot("kernel");
  // Outlive the fixture, as a test that forgot to stop them would.
  std::optional<Process> in_pod;
  std::optional<Process> netns_only;
  pid_t orphan = 0;
  {
    PodNetwork network;
    TestNode node(network, "node-a");
    const Pod& pod = node.AddPod({.name = "server-1", .owner_name = "server"});
    in_pod.emplace(pod.Run({"sleep", "600"}));
    // Entered the netns without the pod's cgroup, as `ip netns exec` from a script would.
    netns_only.emplace(Process({"sleep", "600"}, {.netns_path = pod.netns_path}));
    // A daemon: its parent exits, it stays in the pod's cgroup with no Process owning it.
    const CommandResult daemon =
        pod.RunCommand({"/bin/sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"});
    REQUIRE(daemon.exit_code == 0);
    orphan = static_cast<pid_t>(std::stol(daemon.output));
    REQUIRE_FALSE(Dead(orphan));
    REQUIRE(in_pod->IsRunning());
    REQUIRE(netns_only->IsRunning());
  }
  const std::optional<ExitStatus> pod_status = in_pod->Wait(10s);
  REQUIRE(pod_status);
  CHECK(pod_status->signal == SIGKILL);
  const std::optional<ExitStatus> netns_status = netns_only->Wait(10s);
  REQUIRE(netns_status);
  CHECK(netns_status->signal == SIGKILL);
  CHECK(PollUntil([&] { return Dead(orphan); }, 10s));
}

// The owner marker of a run, in the format documented in test_node.h.
void WriteMarker(const std::string& id, const std::string& start) {
  fs::create_directories(std::string(kTestStateDir));
  const std::string path = std::string(kTestStateDir) + "/" + id + ".owner";
  WriteFile(path + ".tmp",
            "pid=" + std::to_string(::getpid()) + " start=" + start + " subnet=255\n");
  fs::rename(path + ".tmp", path);
}

std::string UnusedId() {
  std::random_device entropy;
  while (true) {
    char id[5];
    std::snprintf(id, sizeof(id), "%04x", entropy() & 0xffff);
    if (!Exists(std::string(kTestStateDir) + "/" + id + ".owner") &&
        !Exists(std::string("/sys/class/net/nmt") + id + "br")) {
      return id;
    }
  }
}

TEST_CASE("a new pod network sweeps what a dead run left behind") {
  RequireRoot("kernel");
  // Built under a marker naming this (live) process, so that tests running in parallel
  // leave it alone; then the marker is changed to name a process that no longer exists.
  const std::string dead = UnusedId();
  const std::string stat = ReadFile("/proc/self/stat");
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string start;
  for (int field = 3; field <= 22; ++field) fields >> start;
  WriteMarker(dead, start);

  const std::string netns = "nmt" + dead + "-stale";
  const std::string cgroup = CgroupMount() + "/nodemesh-test-" + dead;
  Run({"ip", "netns", "add", netns});
  Run({"ip", "link", "add", "nmt" + dead + "br", "type", "bridge"});
  Run({"ip", "link", "add", "nmt" + dead + "p0", "type", "veth", "peer", "name", "eth0", "netns",
       netns});
  fs::create_directories("/etc/netns/" + netns);
  WriteFile("/etc/netns/" + netns + "/hosts", "");
  fs::create_directories(cgroup + "/node-x/default_stale-1");
  Process leftover({"sleep", "600"}, {.cgroup_dir = cgroup + "/node-x/default_stale-1",
                                      .netns_path = "/var/run/netns/" + netns});
  WriteMarker(dead, "0");  // a start time no live process has

  // Its Services' NAT, if nft is here.
  const bool have_nft = ::access("/usr/sbin/nft", X_OK) == 0;
  if (have_nft) Run({"nft", "add", "table", "ip", "nodemesh-test-" + dead});

  // No marker at all: a crash between removing resources and the marker is impossible,
  // but a resource of an id without one can only be a leftover.
  const std::string unmarked = UnusedId();
  Run({"ip", "link", "add", "nmt" + unmarked + "br", "type", "bridge"});

  {
    PodNetwork network;
    CHECK(network.id() != dead);
  }
  const std::optional<ExitStatus> status = leftover.Wait(10s);
  REQUIRE(status);
  CHECK(status->signal == SIGKILL);
  CHECK_FALSE(Exists("/var/run/netns/" + netns));
  CHECK_FALSE(Exists("/etc/netns/" + netns));
  CHECK_FALSE(Exists("/sys/class/net/nmt" + dead + "br"));
  CHECK_FALSE(Exists("/sys/class/net/nmt" + dead + "p0"));
  CHECK_FALSE(Exists(cgroup));
  if (have_nft) {
    CHECK(Run({"nft", "list", "tables", "ip"}).find("nodemesh-test-" + dead) == std::string::npos);
  }
  CHECK_FALSE(Exists(std::string(kTestStateDir) + "/" + dead + ".owner"));
  CHECK_FALSE(Exists("/sys/class/net/nmt" + unmarked + "br"));
}

TEST_CASE("Process reports exit codes, output and timeouts") {
  const CommandResult ok = RunCommand({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  CHECK(ok.exit_code == 3);
  CHECK_FALSE(ok.timed_out);
  CHECK(ok.output == "out\nerr\n");

  const CommandResult slow = RunCommand({"sleep", "30"}, 200ms);
  CHECK(slow.timed_out);

  CHECK_THROWS_WITH(Process({"no-such-program-nodemesh"}),
                    Catch::Contains("no-such-program-nodemesh"));
  CHECK_THROWS_WITH(Process({"true"}, {.cwd = "/nonexistent-nodemesh"}),
                    Catch::Contains("change directory"));

  Process env({"/bin/sh", "-c", "echo $NODEMESH_TEST_VALUE; pwd"},
              {.env = {{"NODEMESH_TEST_VALUE", "from-options"}}, .cwd = "/"});
  REQUIRE(env.Wait(10s));
  CHECK(env.output() == "from-options\n/\n");

  // A process that ignores SIGTERM is killed after the grace period.
  Process stubborn({"/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"});
  REQUIRE(stubborn.WaitForOutput("ready", 10s));
  const std::optional<ExitStatus> status = stubborn.Kill(100ms);
  REQUIRE(status);
  CHECK(status->signal == SIGKILL);
  CHECK_FALSE(stubborn.IsRunning());
  CHECK_FALSE(stubborn.Signal(SIGTERM));  // reaped: its pid is never signalled again
}

}  // namespace
}  // namespace nodemesh::testing
