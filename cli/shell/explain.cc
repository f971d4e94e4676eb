#include "cli/shell/explain.h"

#include <arpa/inet.h>

#include <algorithm>
#include <optional>

#include "common/base/format.h"

namespace nodemesh::cli {
namespace {

// The admin API's answers, as the shell fetched them.
using AdminJson = nlohmann::json;

struct Address {
  std::string ip;
  std::optional<uint16_t> port;
};

// "10.0.0.1", "10.0.0.1:80", "fd00::1", "[fd00::1]:80".
std::optional<Address> ParseAddress(const std::string& text) {
  Address address;
  std::string host = text;
  std::string port;
  if (text.starts_with("[")) {
    const size_t close = text.find(']');
    if (close == std::string::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    if (close + 1 < text.size()) {
      if (text[close + 1] != ':') return std::nullopt;
      port = text.substr(close + 2);
    }
  } else if (std::count(text.begin(), text.end(), ':') == 1) {
    host = text.substr(0, text.find(':'));
    port = text.substr(text.find(':') + 1);
  }
  unsigned char buffer[16];
  if (inet_pton(AF_INET, host.c_str(), buffer) != 1 &&
      inet_pton(AF_INET6, host.c_str(), buffer) != 1) {
    return std::nullopt;
  }
  address.ip = host;
  if (!port.empty()) {
    if (!std::all_of(port.begin(), port.end(), ::isdigit) || port.size() > 5 ||
        std::stoi(port) < 1 || std::stoi(port) > 65535) {
      return std::nullopt;
    }
    address.port = static_cast<uint16_t>(std::stoi(port));
  }
  return address;
}

bool IsLoopback(const std::string& ip) {
  return ip.starts_with("127.") || ip == "::1" || ip.starts_with("::ffff:127.");
}

std::string PodKey(const AdminJson& pod) {
  return pod.value("namespace", "") + "/" + pod.value("name", "");
}

std::string Endpoint(const std::string& ip, uint16_t port) {
  return ip.find(':') != std::string::npos ? fmt::format("[{}]:{}", ip, port)
                                           : fmt::format("{}:{}", ip, port);
}

class Checklist {
 public:
  // Adds a step; once one has failed, the later ones are not reached (ok null) unless
  // `always` (facts that do not depend on the earlier steps).
  void Add(std::string check, bool ok, std::string detail, std::string fix = "") {
    AdminJson step = {{"check", std::move(check)}, {"detail", std::move(detail)}};
    if (first_failure_) {
      step["ok"] = nullptr;
    } else {
      step["ok"] = ok;
      if (!ok) {
        first_failure_ = steps_.size();
        step["fix"] = std::move(fix);
      }
    }
    steps_.push_back(std::move(step));
  }
  AdminJson steps() const { return steps_; }
  AdminJson first_failure() const {
    return first_failure_ ? AdminJson(*first_failure_) : AdminJson(nullptr);
  }

 private:
  AdminJson steps_ = AdminJson::array();
  std::optional<size_t> first_failure_;
};

// What explain is asked about: a pod of the node (by its key, its name or one of its
// addresses), an address, or both when an address is a pod's.
struct Target {
  std::optional<AdminJson> pod;
  std::optional<Address> address;
};

absl::StatusOr<Target> FindTarget(const std::string& target, const AdminJson& pods_answer) {
  const AdminJson pods = pods_answer.value("pods", AdminJson::array());
  Target found;
  for (const AdminJson& candidate : pods) {
    if (PodKey(candidate) == target || candidate.value("name", "") == target) found.pod = candidate;
  }
  if (found.pod) return found;
  found.address = ParseAddress(target);
  if (!found.address) {
    return absl::NotFoundError(
        fmt::format("{} is no pod of node {} and no address (IP or IP:PORT): see `pods`", target,
                    pods_answer.value("node", "?")));
  }
  for (const AdminJson& candidate : pods) {
    for (const AdminJson& ip : candidate.value("ips", AdminJson::array())) {
      if (ip == found.address->ip) found.pod = candidate;
    }
  }
  return found;
}

void CheckPortNotExcluded(uint16_t port, const AdminJson& excluded, Checklist& checks) {
  const bool is_excluded = std::find(excluded.begin(), excluded.end(), port) != excluded.end();
  checks.Add(fmt::format("port {} not excluded", port), !is_excluded,
             is_excluded ? fmt::format("--exclude-ports lists {}: connects to it go direct", port)
                         : fmt::format("--exclude-ports: {}", excluded.dump()),
             "remove it from the agent's --exclude-ports to mesh it");
}

// An address outside this node's pods: what a connect() to it from an enrolled pod meets in
// cgroup/connect.
void CheckDestination(const Address& address, const std::string& node, const AdminJson& config,
                      Checklist& checks) {
  checks.Add(fmt::format("address {}", address.ip), true,
             fmt::format("no pod of node {}: explained as a destination of its pods", node));
  checks.Add(
      "not loopback", !IsLoopback(address.ip),
      IsLoopback(address.ip) ? "connects to loopback are never redirected" : "a routed address",
      "connections inside a pod over loopback are not meshed, by design");
  if (address.port) {
    CheckPortNotExcluded(*address.port, config.value("excluded_ports", AdminJson::array()), checks);
  }
  const AdminJson marks = config.value("marks", AdminJson::object());
  checks.Add("a connect() from an enrolled pod is redirected to the agent", true,
             fmt::format("to the agent's outbound listener (port {}) in the caller's netns; "
                         "the agent's own sockets (marks {} and {}) never are",
                         config.value("outbound_port", 0), marks.value("upstream", "?"),
                         marks.value("transparent", "?")));
}

// The agent's side of a pod: in its inventory (as /pods lists it), meshed, enrolled.
void CheckPodInAgent(const AdminJson& pod, const std::string& node, Checklist& checks) {
  checks.Add("in this node's inventory", true, fmt::format("{} on node {}", PodKey(pod), node));
  checks.Add("meshed", pod.value("meshed", false),
             pod.value("meshed", false) ? "true in the inventory" : "false in the inventory",
             fmt::format("mesh it: meshctl inject pod/{} -n {}", pod.value("name", ""),
                         pod.value("namespace", "")));
  const std::string state = pod.value("state", "");
  checks.Add(
      "enrolled by the agent", state == "enrolled",
      state == "enrolled" ? "state: enrolled"
                          : fmt::format("state: {}: {}", state, pod.value("state_reason", "")),
      state == "pending" ? "it is enrolled as soon as what it waits for is there"
                         : "the agent tries again every 5 seconds; the reason says what to fix "
                           "(the agent's log has the details)");
}

// The kernel's side of a pod: its cgroup in enrolled_cgroups, the connect programs above
// it, sk_lookup on its netns.
void CheckPodInKernel(const AdminJson& pod, const ExplainInputs& in, Checklist& checks) {
  const AdminJson cgroup_id = pod.value("cgroup_id", AdminJson(nullptr));
  bool in_map = false;
  for (const AdminJson& entry : in.enrolled_cgroups.value("entries", AdminJson::array())) {
    in_map |= !cgroup_id.is_null() && entry.value("cgroup_id", AdminJson(nullptr)) == cgroup_id;
  }
  checks.Add(
      "its cgroup is in the kernel's enrolled_cgroups", in_map,
      fmt::format("cgroup {} (id {}){}", pod.value("cgroup", ""),
                  cgroup_id.is_null() ? "-" : cgroup_id.dump(), in_map ? "" : ": not in the map"),
      "the agent and its kernel map disagree: restart the agent (the pod is enrolled "
      "again)");
  const std::string root = in.config.value("cgroup_root", "/");
  const std::string cgroup = pod.value("cgroup", "");
  const bool below_root = root == "/" || cgroup == root || cgroup.starts_with(root + "/");
  int cgroup_programs = 0;
  for (const AdminJson& program : in.kernel.value("programs", AdminJson::array())) {
    cgroup_programs += program.value("attach_point", "").starts_with("cgroup ") ? 1 : 0;
  }
  checks.Add("connect programs attached above its cgroup", below_root && cgroup_programs > 0,
             fmt::format("{} programs on --cgroup-root {}{}", cgroup_programs, root,
                         below_root ? "" : fmt::format(", which does not hold {}", cgroup)),
             fmt::format("run the agent with a --cgroup-root that holds {}", cgroup));
  bool sk_lookup = false;
  for (const AdminJson& program : in.kernel.value("programs", AdminJson::array())) {
    sk_lookup |=
        program.value("pod", "") == PodKey(pod) && program.value("name", "") == "nm_sk_lookup";
  }
  checks.Add("sk_lookup attached to its netns", sk_lookup,
             fmt::format("netns {}", pod.value("netns", "")),
             "the agent could not attach to the pod's netns: see its log");
}

// The pod's ports: the one asked about captured inbound and not excluded, or else which are
// captured.
void CheckPodPorts(const AdminJson& pod, const std::optional<Address>& address,
                   const AdminJson& config, Checklist& checks) {
  const AdminJson inbound = pod.value("inbound", AdminJson::array());
  if (!address || !address->port) {
    checks.Add("ports captured inbound", true,
               inbound.empty() ? "none yet (the agent looks for listening ports once a "
                                 "second)"
                               : fmt::format("{}", inbound.dump()));
    return;
  }
  const std::string endpoint = Endpoint(address->ip, *address->port);
  const bool captured = std::find(inbound.begin(), inbound.end(), endpoint) != inbound.end();
  checks.Add(fmt::format("{} captured inbound", endpoint), captured,
             fmt::format("captured: {}", inbound.empty() ? "none" : inbound.dump()),
             "nothing listens on that port in the pod, or the inventory's inboundPorts "
             "leaves it out");
  CheckPortNotExcluded(*address->port, config.value("excluded_ports", AdminJson::array()), checks);
}

// What the programs did for the pod: did any of its traffic go around the agent? Only when
// the agent keeps the pod's kernel counters.
void CheckPodFailOpen(const AdminJson& pod, Checklist& checks) {
  const AdminJson counters = pod.value("kernel_counters", AdminJson(nullptr));
  if (!counters.is_object()) return;
  const uint64_t outbound = counters.value("origin_save_failed", uint64_t{0});
  const uint64_t inbound_missed = counters.value("inbound_no_listener", uint64_t{0}) +
                                  counters.value("inbound_assign_failed", uint64_t{0});
  checks.Add("none of its traffic went around the agent (fail-open)",
             outbound == 0 && inbound_missed == 0,
             fmt::format("{} connects redirected, {} went direct; {} SYNs steered, {} passed on",
                         counters.value("redirected", uint64_t{0}), outbound,
                         counters.value("inbound_steered", uint64_t{0}), inbound_missed),
             outbound != 0 ? "origins_by_cookie was full: the node has more connections in flight "
                             "than the agent's maps hold (see `kernel`)"
                           : "a captured port had no listener of the agent in the pod: see the "
                             "agent's log for the pod");
}

// The connections of `connections` that match: of the pod, or to or from the address.
AdminJson MatchingConnections(const AdminJson& connections, const Target& target) {
  AdminJson matched = AdminJson::array();
  for (const AdminJson& c : connections) {
    const std::string destination = c.value("destination", "");
    const std::string client = c.value("client", "");
    bool match;
    if (target.address) {
      const std::optional<uint16_t> port = target.address->port;
      const std::string wanted = port ? Endpoint(target.address->ip, *port) : target.address->ip;
      const auto has = [&](const std::string& endpoint) {
        return port ? endpoint == wanted
                    : endpoint.rfind(wanted + ":", 0) == 0 ||
                          endpoint.rfind("[" + wanted + "]", 0) == 0;
      };
      match = has(destination) || has(client);
    } else {
      match = c.value("pod", "") == PodKey(*target.pod);
    }
    if (match) matched.push_back(c);
  }
  return matched;
}

}  // namespace

absl::StatusOr<ExplainInputs> FetchExplainInputs(AdminClient& agent) {
  ExplainInputs inputs;
  for (const auto& [path, json] :
       {std::pair{"/pods", &inputs.pods}, std::pair{"/kernel", &inputs.kernel},
        std::pair{"/kernel/maps/enrolled_cgroups", &inputs.enrolled_cgroups},
        std::pair{"/config", &inputs.config}, std::pair{"/connections", &inputs.connections}}) {
    absl::StatusOr<AdminJson> answer = agent.Get(path);
    if (!answer.ok()) return answer.status();
    *json = *std::move(answer);
  }
  return inputs;
}

absl::StatusOr<AdminJson> Explain(const std::string& target, const ExplainInputs& in) {
  absl::StatusOr<Target> found = FindTarget(target, in.pods);
  if (!found.ok()) return found.status();
  const std::string node = in.config.value("node", in.pods.value("node", "?"));
  Checklist checks;
  if (!found->pod) {
    CheckDestination(*found->address, node, in.config, checks);
  } else {
    CheckPodInAgent(*found->pod, node, checks);
    CheckPodInKernel(*found->pod, in, checks);
    CheckPodPorts(*found->pod, found->address, in.config, checks);
    CheckPodFailOpen(*found->pod, checks);
  }
  // A pod's own kernel counters when the agent keeps them; the node's otherwise.
  const bool pod_counters = found->pod && found->pod->contains("kernel_counters");
  return AdminJson{
      {"target", target},
      {"node", node},
      {"pod", found->pod ? AdminJson(PodKey(*found->pod)) : AdminJson(nullptr)},
      {"steps", checks.steps()},
      {"first_failure", checks.first_failure()},
      {"counters_of", pod_counters ? PodKey(*found->pod) : "node"},
      {"counters", pod_counters ? (*found->pod)["kernel_counters"]
                                : in.kernel.value("counters", AdminJson::object())},
      {"connections",
       MatchingConnections(in.connections.value("connections", AdminJson::array()), *found)},
      {"recently_closed",
       MatchingConnections(in.connections.value("recently_closed", AdminJson::array()), *found)}};
}

}  // namespace nodemesh::cli
