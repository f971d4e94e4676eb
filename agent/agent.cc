#include "agent/agent.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "absl/strings/str_join.h"
#include "agent/inventory/local.h"
#include "agent/kernel/pod_routing.h"
#include "common/base/log.h"
#include "common/wire/convert.h"

namespace nodemesh::agent {
namespace {

// A pod must be enrolled again (not just relabelled) when any of these change.
bool SameDataPlane(const PodInfo& a, const PodInfo& b) {
  return a.ips == b.ips && a.cgroup == b.cgroup && a.netns == b.netns &&
         a.inbound_ports == b.inbound_ports;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(const AgentOptions& options) {
  std::unique_ptr<Agent> agent(new Agent(options));
  absl::StatusOr<std::string> mount = FindCgroup2Mount();
  if (!mount.ok()) return mount.status();
  agent->cgroup_mount_ = *mount;
  absl::StatusOr<Netns> home = Netns::Current();
  if (!home.ok()) return home.status();
  agent->home_ = std::make_unique<Netns>(*std::move(home));

  DatapathOptions datapath;
  datapath.cgroup_dir =
      agent->cgroup_mount_ + (options.cgroup_root == "/" ? "" : options.cgroup_root);
  datapath.outbound_port = options.outbound_port;
  datapath.agent_mark = options.agent_mark;
  datapath.transparent_mark = options.transparent_mark;
  absl::StatusOr<std::unique_ptr<Datapath>> loaded = Datapath::Load(datapath);
  if (!loaded.ok()) return loaded.status();
  agent->datapath_ = *std::move(loaded);
  for (uint16_t port : options.excluded_ports) {
    if (absl::Status status = agent->datapath_->SetExcludedPort(port, true); !status.ok()) {
      return status;
    }
  }
  for (int i = 0; i < options.workers; ++i) {
    agent->workers_.push_back(
        std::make_unique<Worker>(i, options.worker, *agent->datapath_,
                                 MetricsContext{agent->identities_, agent->routes_,
                                                agent->directory_, agent->tap_, options.node}));
    if (absl::Status status = agent->workers_.back()->Start(); !status.ok()) return status;
  }
  Log(LogLevel::kInfo, "node {}: kernel programs attached to cgroup {}, {} workers", options.node,
      datapath.cgroup_dir, options.workers);
  return agent;
}

Agent::~Agent() {
  {
    std::lock_guard lock(mutex_);
    std::vector<std::string> keys;
    for (const auto& [key, pod] : enrolled_) keys.push_back(key);
    for (const std::string& key : keys) Release(key);
  }
  for (auto& worker : workers_) worker->Stop();
}

absl::Status Agent::Run(int stop_fd) {
  LocalInventory inventory(options_.inventory_path);
  absl::Status first = absl::OkStatus();
  bool started = false;
  absl::Status status = inventory.Start([&](const Inventory& update) {
    absl::Status applied = Apply(update);
    if (!started) first = applied;  // the first version must apply cleanly
  });
  started = true;
  if (!status.ok()) return status;
  if (!first.ok()) return first;

  if (!options_.aggregator_address.empty()) {
    AggregatorClient::Hooks hooks;
    hooks.pods = [this] { return PodsForAggregator(); };
    hooks.cluster_pods = [this](const v1::PodList& pods) { SetClusterPods(pods); };
    hooks.drain_tap = [this](std::vector<v1::TapEvent>* out) {
      uint64_t dropped = 0;
      for (const auto& worker : workers_) dropped += worker->tap_outbox().Drain(out);
      return dropped;
    };
    aggregator_ = std::make_unique<AggregatorClient>(options_.aggregator_address, options_.node,
                                                     tap_, std::move(hooks));
    aggregator_->Start();
  }
  for (;;) {
    pollfd stop{stop_fd, POLLIN, 0};
    if (poll(&stop, 1, 1000) > 0) break;
    CollectMetrics();
    std::lock_guard lock(mutex_);
    for (auto& [key, pod] : enrolled_) RefreshMeshedPorts(pod);
  }
  inventory.Stop();
  if (aggregator_) aggregator_->Stop();
  return absl::OkStatus();
}

absl::Status Agent::Apply(const Inventory& inventory) {
  std::lock_guard lock(mutex_);
  // Names first, so that the first connections of pods enrolled below are named right.
  inventory_ = inventory;
  RebuildDirectory();
  absl::flat_hash_map<std::string, const PodInfo*> wanted;
  for (const PodInfo& pod : inventory.pods) {
    if (pod.meshed && OnThisNode(pod)) wanted[pod.key()] = &pod;
  }
  std::vector<std::string> to_release;
  for (const auto& [key, pod] : enrolled_) {
    auto it = wanted.find(key);
    if (it == wanted.end() || !SameDataPlane(pod.runtime->view()->info, *it->second)) {
      to_release.push_back(key);
    }
  }
  for (const std::string& key : to_release) Release(key);
  std::vector<std::string> errors;
  for (const PodInfo& pod : inventory.pods) {
    if (!pod.meshed || !OnThisNode(pod)) continue;
    auto it = enrolled_.find(pod.key());
    if (it != enrolled_.end()) {
      // Same data plane: only identity fields (labels, owner, ...) may have changed.
      it->second.runtime->set_view(PodView{pod, identities_.Intern(IdentityOf(pod))});
      continue;
    }
    if (absl::Status status = Enrol(pod); !status.ok()) {
      Log(LogLevel::kError, "pod {}: not enrolled: {}", pod.key(), status.message());
      errors.push_back(fmt::format("pod {}: {}", pod.key(), status.message()));
    }
  }
  if (aggregator_) aggregator_->PodsChanged();
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<UniqueFd>> Agent::MakeListeners(const Netns& netns,
                                                           const Endpoint& address) {
  std::vector<UniqueFd> listeners;
  ScopedNetns in_pod(netns, *home_);
  if (!in_pod.status().ok()) return in_pod.status();
  for (size_t i = 0; i < workers_.size(); ++i) {
    UniqueFd fd(socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus("listener socket", errno);
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (address.family() == AF_INET6) {
      setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage storage;
    const socklen_t length = address.ToSockaddr(&storage);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
      return ErrnoStatus(fmt::format("listening on {} in {}", address.ToString(), netns.path()),
                         errno);
    }
    if (listen(fd.get(), 4096) != 0) return ErrnoStatus("listen", errno);
    listeners.push_back(std::move(fd));
  }
  return listeners;
}

void Agent::GiveListeners(std::vector<UniqueFd> listeners, const std::shared_ptr<PodRuntime>& pod,
                          Direction direction) {
  for (size_t i = 0; i < workers_.size(); ++i) {
    Worker& worker = *workers_[i];
    UniqueFd fd = std::move(listeners[i]);
    worker.RunAndWait([&] { worker.AddListener(std::move(fd), pod, direction); });
  }
}

absl::Status Agent::Enrol(const PodInfo& info) {
  const std::string cgroup_dir = cgroup_mount_ + info.cgroup;
  absl::StatusOr<uint64_t> cgroup_id = CgroupId(cgroup_dir);
  if (!cgroup_id.ok()) return cgroup_id.status();
  absl::StatusOr<Netns> netns = Netns::Open(info.netns);
  if (!netns.ok()) return netns.status();

  EnrolledPod pod;
  pod.cgroup_id = *cgroup_id;
  pod.runtime = std::make_shared<PodRuntime>(
      next_pod_id_++, PodView{info, identities_.Intern(IdentityOf(info))}, *std::move(netns));
  const Netns& pod_netns = pod.runtime->netns();

  // Listeners first: once the kernel redirects, something must be there to accept.
  absl::StatusOr<std::vector<UniqueFd>> outbound4 =
      MakeListeners(pod_netns, Endpoint{IpAddress::Loopback4(), options_.outbound_port});
  if (!outbound4.ok()) return outbound4.status();
  // IPv6 where the pod has it; without ::1 the kernel keeps IPv6 connects direct.
  absl::StatusOr<std::vector<UniqueFd>> outbound6 =
      MakeListeners(pod_netns, Endpoint{IpAddress::Loopback6(), options_.outbound_port});
  const bool ipv6 = outbound6.ok();

  struct InboundListeners {
    IpAddress pod_ip;
    std::vector<UniqueFd> fds;
  };
  std::vector<InboundListeners> inbound;
  bool have_inbound4 = false, have_inbound6 = false;
  for (const IpAddress& ip : info.ips) {
    bool& have = ip.is_v4() ? have_inbound4 : have_inbound6;
    if (have) continue;  // one listener group per family serves every address of the pod
    have = true;
    const IpAddress loopback = ip.is_v4() ? IpAddress::Loopback4() : IpAddress::Loopback6();
    absl::StatusOr<std::vector<UniqueFd>> fds =
        MakeListeners(pod_netns, Endpoint{loopback, options_.inbound_port});
    if (!fds.ok()) return fds.status();
    inbound.push_back({ip, *std::move(fds)});
  }
  if (absl::Status status = PrepareTransparentInbound(pod_netns, *home_, options_.transparent_mark,
                                                      options_.transparent_table);
      !status.ok()) {
    return status;
  }
  if (!info.inbound_ports) {
    absl::StatusOr<ListeningPorts> listening = ListeningPorts::Open(pod_netns, *home_);
    if (!listening.ok()) return listening.status();
    pod.listening.emplace(*std::move(listening));
  }
  absl::StatusOr<std::unique_ptr<NetnsLink>> link = datapath_->AttachInbound(pod_netns.fd());
  if (!link.ok()) return link.status();
  pod.inbound_link = *std::move(link);

  // The sockhash keeps a reference to the listener's socket, so it is filled while the fds
  // are still ours, before they go to the workers.
  for (const IpAddress& ip : info.ips) {
    for (const InboundListeners& group : inbound) {
      if (group.pod_ip.is_v4() != ip.is_v4()) continue;
      if (absl::Status status = datapath_->SetInboundListener(ip, group.fds[0].get());
          !status.ok()) {
        return status;
      }
    }
  }
  GiveListeners(*std::move(outbound4), pod.runtime, Direction::kOutbound);
  if (ipv6) GiveListeners(*std::move(outbound6), pod.runtime, Direction::kOutbound);
  for (InboundListeners& group : inbound) {
    GiveListeners(std::move(group.fds), pod.runtime, Direction::kInbound);
  }
  RefreshMeshedPorts(pod);
  if (absl::Status status =
          datapath_->EnrolCgroup(pod.cgroup_id, pod.runtime->id(), ipv6, info.ips);
      !status.ok()) {
    return status;
  }
  std::vector<std::string> ports;
  for (const Endpoint& endpoint : pod.meshed) ports.push_back(endpoint.ToString());
  std::sort(ports.begin(), ports.end());
  Log(LogLevel::kInfo, "enrolled {} (cgroup {}, netns {}): outbound via port {}{}, inbound {}",
      info.key(), info.cgroup, info.netns, options_.outbound_port, ipv6 ? " (IPv4 and IPv6)" : "",
      ports.empty() ? std::string("on no port yet") : absl::StrJoin(ports, " "));
  enrolled_.emplace(info.key(), std::move(pod));
  return absl::OkStatus();
}

void Agent::Release(const std::string& key) {
  auto it = enrolled_.find(key);
  if (it == enrolled_.end()) return;
  EnrolledPod& pod = it->second;
  // New connects go direct from here on; connections already proxied carry on.
  datapath_->ReleaseCgroup(pod.cgroup_id);
  for (const Endpoint& endpoint : pod.meshed) datapath_->RemoveMeshedPort(endpoint);
  for (const IpAddress& ip : pod.runtime->view()->info.ips) datapath_->RemoveInboundListener(ip);
  pod.inbound_link.reset();
  const uint32_t pod_id = pod.runtime->id();
  for (auto& worker : workers_) {
    worker->RunAndWait([&] { worker->RemoveListeners(pod_id); });
  }
  Log(LogLevel::kInfo, "released {}: its new connections go direct", key);
  enrolled_.erase(it);
}

void Agent::RefreshMeshedPorts(EnrolledPod& pod) {
  const std::shared_ptr<const PodView> snapshot = pod.runtime->view();
  const PodInfo& info = snapshot->info;
  absl::flat_hash_set<Endpoint> wanted;
  if (info.inbound_ports) {
    for (const IpAddress& ip : info.ips) {
      for (uint16_t port : *info.inbound_ports) wanted.insert(Endpoint{ip, port});
    }
  } else {
    absl::StatusOr<std::vector<Endpoint>> listening = pod.listening->List();
    if (!listening.ok()) {
      Log(LogLevel::kWarning, "pod {}: listing its ports: {}", info.key(),
          listening.status().message());
      return;
    }
    for (const Endpoint& endpoint : *listening) {
      if (endpoint.ip.is_loopback()) continue;  // unreachable from outside the pod anyway
      const bool wildcard = endpoint.ip == IpAddress{} || endpoint.ip == IpAddress::V4(0);
      for (const IpAddress& ip : info.ips) {
        if (endpoint.ip == ip ||
            (wildcard && (endpoint.ip.is_v4() == ip.is_v4() || endpoint.ip == IpAddress{}))) {
          wanted.insert(Endpoint{ip, endpoint.port});
        }
      }
    }
  }
  for (auto it = pod.meshed.begin(); it != pod.meshed.end();) {
    if (!wanted.contains(*it)) {
      datapath_->RemoveMeshedPort(*it);
      pod.meshed.erase(it++);
    } else {
      ++it;
    }
  }
  for (const Endpoint& endpoint : wanted) {
    if (pod.meshed.contains(endpoint)) continue;
    if (absl::Status status = datapath_->AddMeshedPort(endpoint); !status.ok()) {
      Log(LogLevel::kWarning, "pod {}: capturing {}: {}", info.key(), endpoint.ToString(),
          status.message());
      continue;
    }
    pod.meshed.insert(endpoint);
    Log(LogLevel::kDebug, "pod {}: capturing inbound {}", info.key(), endpoint.ToString());
  }
}

metrics::Identity Agent::IdentityOf(const PodInfo& pod) const {
  return metrics::Identity{pod.namespace_name,  pod.name,
                           pod.owner_kind,      pod.owner_name,
                           pod.service_account, pod.node.empty() ? options_.node : pod.node};
}

void Agent::CollectMetrics() {
  metrics::Delta delta;
  for (const auto& worker : workers_) {
    worker->RunAndWait([&] { worker->CollectMetrics(&delta); });
  }
  registry_.Add(delta);
  if (aggregator_) {
    const int64_t now = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    // The counts were gathered over the second that just ended.
    aggregator_->SendMetrics(wire::ToProto(
        delta, [this](uint32_t id) { return identities_.Get(id); },
        [this](uint32_t id) { return routes_.Get(id); }, now - 1));
  }
  // The agent's own counters, as totals.
  static constexpr const char* kProtocols[] = {"http1", "http2", "tls", "opaque"};
  for (int protocol = 0; protocol < 2; ++protocol) {
    for (int error = 1; error < 8; ++error) {
      uint64_t total = 0;
      for (const auto& worker : workers_) {
        total += worker->stats().parse_errors[protocol][error].load(std::memory_order_relaxed);
      }
      registry_.SetInternal(
          "nodemesh_parse_failures_total",
          "Connections whose parser gave up; they were forwarded unchanged as opaque TCP.",
          fmt::format("protocol=\"{}\",reason=\"{}\"", kProtocols[protocol],
                      parsers::ParseErrorName(static_cast<parsers::ParseError>(error))),
          total);
    }
  }
  const CounterValues counters = datapath_->ReadCounters();
  for (uint32_t i = 0; i < NM_COUNTER_COUNT; ++i) {
    registry_.SetInternal("nodemesh_kernel_events_total",
                          "Events counted by the kernel programs (redirects, steering, errors).",
                          fmt::format("event=\"{}\"", CounterName(static_cast<nm_counter>(i))),
                          counters[i]);
  }
}

void Agent::SetClusterPods(const v1::PodList& pods) {
  PeerDirectory::Map directory;
  for (const v1::Pod& pod : pods.pods()) {
    const metrics::IdentityTable::Id identity = identities_.Intern(wire::FromProto(pod.identity()));
    for (const std::string& text : pod.ips()) {
      if (const std::optional<IpAddress> ip = IpAddress::Parse(text)) directory[*ip] = identity;
    }
  }
  std::lock_guard lock(mutex_);
  cluster_directory_ = std::move(directory);
  RebuildDirectory();
}

void Agent::RebuildDirectory() {
  // The cluster's pods first; the local inventory, which may be newer for this node's own
  // pods, has the last word.
  PeerDirectory::Map directory = cluster_directory_;
  for (const PodInfo& pod : inventory_.pods) {
    const metrics::IdentityTable::Id identity = identities_.Intern(IdentityOf(pod));
    for (const IpAddress& ip : pod.ips) directory[ip] = identity;
  }
  directory_.Replace(std::move(directory));
}

std::vector<v1::Pod> Agent::PodsForAggregator() {
  std::lock_guard lock(mutex_);
  std::vector<v1::Pod> pods;
  for (const PodInfo& info : inventory_.pods) {
    if (!OnThisNode(info)) continue;
    v1::Pod& pod = pods.emplace_back();
    *pod.mutable_identity() = wire::ToProto(IdentityOf(info));
    for (const auto& [key, value] : info.labels) (*pod.mutable_labels())[key] = value;
    for (const IpAddress& ip : info.ips) pod.add_ips(ip.ToString());
    pod.set_meshed(info.meshed);
    pod.set_enrolled(enrolled_.contains(info.key()));
  }
  return pods;
}

void Agent::ServeMetrics(HttpServer& server) {
  server.Handle("/metrics", [this](const HttpRequest&) {
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                        registry_.PrometheusText()};
  });
}

void Agent::ServeAdmin(HttpServer& server) {
  const auto json_response = [](const nlohmann::json& body) {
    return HttpResponse{200, "application/json", body.dump(2) + "\n"};
  };
  server.Handle("/stats", [this, json_response](const HttpRequest&) {
    nlohmann::json totals = nlohmann::json::object();
    const auto add = [&](const char* name, const std::atomic<uint64_t>& value) {
      totals[name] = totals.value(name, uint64_t{0}) + value.load(std::memory_order_relaxed);
    };
    for (const auto& worker : workers_) {
      const WorkerStats& s = worker->stats();
      add("accepted_outbound", s.accepted[0]);
      add("accepted_inbound", s.accepted[1]);
      add("closed", s.closed);
      add("origin_missing", s.origin_missing);
      add("upstream_refused", s.upstream_refused);
      add("upstream_failed", s.upstream_failed);
      add("connect_timeouts", s.connect_timeouts);
      add("idle_timeouts", s.idle_timeouts);
      add("resets", s.resets);
      add("bytes_to_upstream", s.bytes_to_upstream);
      add("bytes_to_client", s.bytes_to_client);
      add("http1", s.protocols[static_cast<int>(parsers::Protocol::kHttp1)]);
      add("http2", s.protocols[static_cast<int>(parsers::Protocol::kHttp2)]);
      add("tls", s.protocols[static_cast<int>(parsers::Protocol::kTls)]);
      add("opaque", s.protocols[static_cast<int>(parsers::Protocol::kOpaque)]);
      add("parse_failures", s.parse_failures);
      add("protocol_switches", s.protocol_switches);
      add("requests", s.requests);
      add("stream_ends", s.stream_ends);
      add("accept_errors", s.accept_errors);
    }
    totals["active"] = totals["accepted_outbound"].get<uint64_t>() +
                       totals["accepted_inbound"].get<uint64_t>() -
                       totals["closed"].get<uint64_t>();
    nlohmann::json kernel = nlohmann::json::object();
    const CounterValues counters = datapath_->ReadCounters();
    for (uint32_t i = 0; i < NM_COUNTER_COUNT; ++i) {
      kernel[std::string(CounterName(static_cast<nm_counter>(i)))] = counters[i];
    }
    return json_response({{"node", options_.node}, {"proxy", totals}, {"kernel", kernel}});
  });
  server.Handle("/pods", [this, json_response](const HttpRequest&) {
    std::lock_guard lock(mutex_);
    nlohmann::json pods = nlohmann::json::array();
    for (const PodInfo& info : inventory_.pods) {
      nlohmann::json pod = {{"namespace", info.namespace_name},
                            {"name", info.name},
                            {"owner", {{"kind", info.owner_kind}, {"name", info.owner_name}}},
                            {"meshed", info.meshed},
                            {"cgroup", info.cgroup},
                            {"netns", info.netns}};
      nlohmann::json ips = nlohmann::json::array();
      for (const IpAddress& ip : info.ips) ips.push_back(ip.ToString());
      pod["ips"] = ips;
      const auto enrolled = enrolled_.find(info.key());
      pod["enrolled"] = enrolled != enrolled_.end();
      if (enrolled != enrolled_.end()) {
        std::vector<std::string> inbound;
        for (const Endpoint& endpoint : enrolled->second.meshed)
          inbound.push_back(endpoint.ToString());
        std::sort(inbound.begin(), inbound.end());
        pod["inbound"] = inbound;
        pod["cgroup_id"] = enrolled->second.cgroup_id;
      }
      pods.push_back(pod);
    }
    return json_response({{"node", options_.node}, {"pods", pods}});
  });
  server.Handle("/connections", [this, json_response](const HttpRequest&) {
    nlohmann::json connections = nlohmann::json::array();
    for (const auto& worker : workers_) {
      std::vector<ConnectionSummary> summaries;
      worker->RunAndWait([&] { summaries = worker->ListConnections(); });
      for (const ConnectionSummary& c : summaries) {
        connections.push_back({{"worker", worker->index()},
                               {"direction", DirectionName(c.direction)},
                               {"pod", c.pod},
                               {"client", c.client.ToString()},
                               {"destination", c.destination.ToString()},
                               {"protocol", c.protocol},
                               {"state", c.state},
                               {"age_ms", c.age_ns / 1'000'000},
                               {"bytes_to_upstream", c.bytes_to_upstream},
                               {"bytes_to_client", c.bytes_to_client}});
      }
    }
    return json_response({{"node", options_.node}, {"connections", connections}});
  });
  server.Handle("/routes", [this, json_response](const HttpRequest&) {
    nlohmann::json routes = nlohmann::json::array();
    const auto workload = [this](uint32_t id) {
      const metrics::Identity identity = identities_.Get(id);
      return nlohmann::json{{"namespace", identity.namespace_name},
                            {"pod", identity.pod},
                            {"owner_kind", identity.owner_kind},
                            {"owner_name", identity.owner_name}};
    };
    for (const metrics::Registry::RouteTotals& route : registry_.Routes()) {
      routes.push_back(
          {{"direction", metrics::DirectionName(route.traffic.direction)},
           {"source", workload(route.traffic.source)},
           {"destination", workload(route.traffic.destination)},
           {"route", route.route},
           {"responses", route.responses},
           {"failures", route.failures},
           {"latency_ns", {{"p50", route.p50_ns}, {"p95", route.p95_ns}, {"p99", route.p99_ns}}}});
    }
    return json_response({{"node", options_.node}, {"routes", routes}});
  });
  server.Handle("/log-level", [](const HttpRequest& request) {
    if (request.method != "POST" && request.method != "PUT") {
      return HttpResponse{405, "text/plain; charset=utf-8", "use POST /log-level?level=debug\n"};
    }
    LogLevel level;
    const auto it = request.query.find("level");
    if (it == request.query.end() || !ParseLogLevel(it->second, &level)) {
      return HttpResponse{400, "text/plain; charset=utf-8",
                          "level must be debug, info, warning or error\n"};
    }
    SetLogLevel(level);
    Log(LogLevel::kInfo, "log level set to {}", it->second);
    return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
  });
}

}  // namespace nodemesh::agent
