#include "agent/agent.h"

#include <poll.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "agent/kernel/capabilities.h"
#include "common/base/file.h"
#include "common/base/format.h"
#include "common/base/log.h"
#include "common/wire/convert.h"

namespace nodemesh::agent {
namespace {

// How often the control thread retries pods that failed to enrol, and forgets identities and
// routes.
constexpr int kRetryEverySeconds = 5;
constexpr int kForgetEverySeconds = 10;

// A pod must be enrolled again (not just relabelled) when any of these change.
bool SameDataPlane(const PodInfo& a, const PodInfo& b) {
  return a.ips == b.ips && a.cgroup == b.cgroup && a.netns == b.netns &&
         a.inbound_ports == b.inbound_ports;
}

// The token in the file the kubelet keeps the pod's projected ServiceAccount token in.
absl::StatusOr<std::string> ReadAggregatorToken(const std::string& file) {
  absl::StatusOr<std::string> text = ReadFile(file);
  if (!text.ok()) {
    return absl::UnavailableError(fmt::format("cannot read --aggregator-token-file {}: {}", file,
                                              text.status().message()));
  }
  const absl::string_view token = absl::StripAsciiWhitespace(*text);
  if (token.empty()) {
    return absl::UnavailableError(fmt::format(
        "--aggregator-token-file {} is empty: it holds the pod's projected ServiceAccount token",
        file));
  }
  return std::string(token);
}

int64_t SteadySeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Agent::Agent(const AgentOptions& options)
    : options_(options),
      routes_(options.observer.max_routes_per_workload),
      registry_(identities_, routes_, options.observer.metrics_export) {}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(const AgentOptions& requested) {
  AgentOptions options = requested;
  if (options.workers <= 0) options.workers = AllowedCpuCount();
  std::unique_ptr<Agent> agent(new Agent(options));
  absl::StatusOr<std::string> mount = FindCgroup2Mount();
  if (!mount.ok()) return mount.status();
  agent->cgroup_mount_ = *mount;
  absl::StatusOr<Netns> home = Netns::Current();
  if (!home.ok()) return home.status();
  agent->home_ = std::make_unique<Netns>(*std::move(home));
  if (absl::Status status = CheckPrivileges(*agent->home_, options.marks.upstream); !status.ok()) {
    return status;
  }

  const std::string cgroup_dir =
      agent->cgroup_mount_ + (options.cgroup_root == "/" ? "" : options.cgroup_root);
  absl::StatusOr<std::unique_ptr<Datapath>> loaded = Datapath::Load(agent->options_, cgroup_dir);
  if (!loaded.ok()) return loaded.status();
  agent->datapath_ = *std::move(loaded);
  for (uint16_t port : options.excluded_ports) {
    if (absl::Status status = agent->datapath_->SetExcludedPort(port, true); !status.ok()) {
      return status;
    }
  }
  const AgentTables tables{agent->identities_, agent->routes_, agent->directory_,
                           agent->services_,   agent->tap_,    agent->options_.node};
  for (int i = 0; i < options.workers; ++i) {
    agent->workers_.push_back(std::make_unique<Worker>(
        i, agent->options_, *agent->datapath_, *agent->home_, tables, agent->captured_endpoints_));
    if (absl::Status status = agent->workers_.back()->Start(); !status.ok()) return status;
  }
  agent->local_taps_ = std::make_unique<LocalTaps>(
      agent->tap_, [self = agent.get()](std::vector<v1::TapEvent>* out) {
        return self->DrainTapOutboxes(&Worker::local_tap_outbox, out);
      });
  agent->admin_routes_ = AdminRoutes(*agent);
  if (!options.aggregator_address.empty()) {
    Agent* self = agent.get();
    AggregatorClient::Hooks hooks;
    hooks.pods = [self] { return self->PodsForAggregator(); };
    hooks.cluster_pods = [self](const v1::PodList& pods) { self->SetClusterPods(pods); };
    hooks.admin = [self](std::string_view target) { return self->AnswerRelayed(target); };
    hooks.drain_tap = [self](std::vector<v1::TapEvent>* out) {
      return self->DrainTapOutboxes(&Worker::tap_outbox, out);
    };
    if (const std::string& file = options.aggregator_token_file; !file.empty()) {
      hooks.token = [file] { return ReadAggregatorToken(file); };
      // Said now rather than at every retry: a token that cannot be read at the start is a
      // mistake in the flags, not a rotation caught half-way.
      if (absl::StatusOr<std::string> token = hooks.token(); !token.ok()) return token.status();
    }
    absl::StatusOr<std::unique_ptr<AggregatorReplicas>> replicas =
        AggregatorReplicas::Make(options.aggregator_address, options.aggregator_tls, options.node,
                                 agent->tap_, std::move(hooks));
    if (!replicas.ok()) return replicas.status();
    Log(LogLevel::kInfo, "{}",
        options.aggregator_tls.empty()
            ? fmt::format("the aggregator's replicas at {} are dialled in plaintext: "
                          "a local cluster, on loopback only",
                          options.aggregator_address)
            : fmt::format("the aggregator's replicas at {} are dialled with TLS",
                          options.aggregator_address));
    agent->aggregator_ = *std::move(replicas);
  }
  Log(LogLevel::kInfo, "node {}: kernel programs attached to cgroup {}, {} workers", options.node,
      cgroup_dir, options.workers);
  return agent;
}

Agent::~Agent() {
  if (aggregator_) aggregator_->Stop();
  {
    std::lock_guard lock(mutex_);
    enrolled_.clear();  // each releases its pod
  }
  for (auto& worker : workers_) worker->Stop();
}

absl::Status Agent::Run(InventorySource& inventory, int stop_fd) {
  source_.store(&inventory, std::memory_order_release);
  absl::Status first = absl::OkStatus();
  bool started = false;
  absl::Status status = inventory.Start([&](const Inventory& update) {
    absl::Status applied = Apply(update);
    if (!started) first = applied;  // the first version must apply cleanly
  });
  started = true;
  if (!status.ok()) return status;
  if (!first.ok() && inventory.FirstVersionMustApply()) return first;
  ready_.store(true, std::memory_order_release);

  if (aggregator_) aggregator_->Start();
  for (int64_t tick = 1;; ++tick) {
    heartbeat_.store(SteadySeconds(), std::memory_order_relaxed);
    pollfd stop{stop_fd, POLLIN, 0};
    if (poll(&stop, 1, 1000) > 0) break;
    CollectMetrics();
    {
      std::lock_guard lock(mutex_);
      bool captured_changed = false;
      for (auto& [key, pod] : enrolled_) captured_changed |= pod->RefreshCapturedPorts();
      if (captured_changed) RebuildCapturedEndpoints();
      if (tick % kRetryEverySeconds == 0 && !not_enrolled_.empty()) {
        EnrolWanted();
        RebuildCapturedEndpoints();
      }
    }
    if (tick % kForgetEverySeconds == 0) ForgetUnused();
    local_taps_->Expire(std::chrono::steady_clock::now());
  }
  ready_.store(false, std::memory_order_release);
  if (aggregator_) aggregator_->Stop();
  source_.store(nullptr, std::memory_order_release);
  inventory.Stop();
  return absl::OkStatus();
}

// A meshed pod the agent cannot enrol yet, said once per reason: a reason that lasts (a
// capability missing, a runtime the locator does not know) must be findable in the log, not
// only in /pods.
void Agent::LogNewlyPending(const Inventory& before, const Inventory& after) {
  absl::flat_hash_map<std::string, const std::string*> was;
  for (const PodInfo& pod : before.pods) was[pod.key()] = &pod.pending;
  for (const PodInfo& pod : after.pods) {
    if (pod.pending.empty()) continue;
    const auto it = was.find(pod.key());
    if (it != was.end() && *it->second == pod.pending) continue;
    Log(LogLevel::kInfo, "{} is meshed but not enrolled yet: {}", pod.key(), pod.pending);
  }
}

uint64_t Agent::DrainTapOutboxes(TapOutbox& (Worker::*outbox)(), std::vector<v1::TapEvent>* out) {
  uint64_t dropped = 0;
  for (const auto& worker : workers_) dropped += ((*worker).*outbox)().Drain(out);
  return dropped;
}

int64_t Agent::SecondsSinceHeartbeat() const {
  const int64_t heartbeat = heartbeat_.load(std::memory_order_relaxed);
  return heartbeat == 0 ? 0 : SteadySeconds() - heartbeat;
}

absl::Status Agent::Apply(const Inventory& inventory) {
  std::lock_guard lock(mutex_);
  LogNewlyPending(inventory_, inventory);
  // Names first, so that the first connections of pods enrolled below are named right. The
  // address directory holds every pod of the cluster: rebuilt only when the pods changed,
  // not for a Service event.
  const bool pods_changed = inventory_.pods != inventory.pods;
  inventory_ = inventory;
  if (pods_changed) RebuildPeerDirectory();
  UpdateServiceDirectory();
  absl::flat_hash_map<std::string, const PodInfo*> wanted;
  for (const PodInfo& pod : inventory_.pods) {
    if (Enrollable(pod)) wanted[pod.key()] = &pod;
  }
  std::vector<std::string> to_release;
  for (const auto& [key, pod] : enrolled_) {
    auto it = wanted.find(key);
    if (it == wanted.end() || !SameDataPlane(pod->runtime().view()->info, *it->second)) {
      to_release.push_back(key);
    }
  }
  // Out of the workers' snapshot before the kernel's map: none of their new connections is
  // dialled straight into a pod being released.
  if (!to_release.empty()) RebuildCapturedEndpoints(to_release);
  for (const std::string& key : to_release) {
    enrolled_.erase(key);
    Log(LogLevel::kInfo, "released {}: its new connections go direct", key);
  }
  absl::erase_if(not_enrolled_, [&](const auto& entry) { return !wanted.contains(entry.first); });
  for (auto& [key, pod] : enrolled_) {
    // Same data plane: only identity fields (labels, owner, ...) may have changed.
    const PodInfo& info = *wanted[key];
    pod->runtime().set_view(PodView{info, identities_.Intern(IdentityOf(info))});
  }
  const std::vector<std::string> errors = EnrolWanted();
  RebuildCapturedEndpoints();
  if (aggregator_) aggregator_->PodsChanged();
  if (!errors.empty()) return absl::InvalidArgumentError(absl::StrJoin(errors, "; "));
  return absl::OkStatus();
}

std::vector<std::string> Agent::EnrolWanted() {
  std::vector<std::string> errors;
  const PodEnrolment::Context context{options_, *datapath_, *home_, cgroup_mount_, workers_};
  for (const PodInfo& pod : inventory_.pods) {
    if (!Enrollable(pod) || enrolled_.contains(pod.key())) continue;
    absl::StatusOr<std::unique_ptr<PodEnrolment>> enrolment = PodEnrolment::Enrol(
        context, next_pod_id_++, PodView{pod, identities_.Intern(IdentityOf(pod))});
    if (enrolment.ok()) {
      enrolled_.emplace(pod.key(), *std::move(enrolment));
      not_enrolled_.erase(pod.key());
      continue;
    }
    const std::string reason(enrolment.status().message());
    // Said once per reason, not at every retry.
    std::string& last = not_enrolled_[pod.key()];
    Log(last == reason ? LogLevel::kDebug : LogLevel::kError,
        "pod {}: not enrolled: {} (nothing of it was left enrolled; retrying every {} s)",
        pod.key(), reason, kRetryEverySeconds);
    last = reason;
    errors.push_back(fmt::format("pod {}: {}", pod.key(), reason));
  }
  return errors;
}

void Agent::RebuildCapturedEndpoints(const std::vector<std::string>& leaving) {
  CapturedEndpoints::Map map;
  for (const auto& [key, pod] : enrolled_) {
    if (std::find(leaving.begin(), leaving.end(), key) != leaving.end()) continue;
    for (const Endpoint& endpoint : pod->captured()) map.emplace(endpoint, pod->shared_runtime());
  }
  captured_endpoints_.Replace(std::move(map));
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
  // The counts were gathered over the second that just ended.
  const int64_t second = UnixSeconds() - 1;
  registry_.Add(delta, second);
  if (aggregator_) {
    aggregator_->SendMetrics(wire::ToProto(
        delta, [this](uint32_t id) { return identities_.Get(id); },
        [this](uint32_t id) { return routes_.Get(id); }, second));
  }
  // The agent's own counters, as totals.
  for (const parsers::Protocol protocol : parsers::kParsedProtocols) {
    const auto p = static_cast<size_t>(protocol);
    for (size_t error = 0; error < parsers::kParseErrorCount; ++error) {
      if (static_cast<parsers::ParseError>(error) == parsers::ParseError::kNone) continue;
      uint64_t total = 0;
      for (const auto& worker : workers_) {
        total += worker->observer_stats().parse_errors[p][error].value();
      }
      registry_.SetInternal(
          "nodemesh_parse_failures_total",
          "Connections whose parser gave up; they were forwarded unchanged as opaque TCP.",
          fmt::format("protocol=\"{}\",reason=\"{}\"", parsers::ProtocolName(protocol),
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

void Agent::ForgetUnused() {
  // Under mutex_, no identity is interned meanwhile: every identity in use is either held by
  // what is marked here or by a worker's series, marked worker by worker (a connection a
  // worker opens after its turn names only identities of pods and the directories). Routes
  // are interned by the workers themselves, unlocked; StartForgetting keeps those handed out
  // during the pass, and each worker's turn leaves in its cache only routes it reports.
  std::lock_guard lock(mutex_);
  metrics::InUse in_use;
  for (const auto& [key, pod] : enrolled_) {
    in_use.identities.insert(pod->runtime().view()->identity);
  }
  directory_.AddReferencedIdentities(&in_use.identities);
  services_.AddReferencedIdentities(&in_use.identities);
  routes_.StartForgetting();
  for (const auto& worker : workers_) {
    worker->RunAndWait([&] {
      worker->AddReferencedIdentities(&in_use.identities);
      worker->AddReferencedRoutes(&in_use.routes);
    });
  }
  const metrics::Forgotten forgotten =
      metrics::ForgetUnused(identities_, routes_, registry_, std::move(in_use),
                            UnixSeconds() - options_.observer.retain_idle_ns / 1'000'000'000);
  if (forgotten.routes > 0) {
    Log(LogLevel::kDebug, "forgot {} routes no series, stream or cache refers to",
        forgotten.routes);
  }
  if (forgotten.identities.empty()) return;
  for (const auto& worker : workers_) {
    worker->RunAndWait([&] { worker->ForgetIdentities(forgotten.identities); });
  }
  Log(LogLevel::kDebug, "forgot {} identities no series or pod refers to",
      forgotten.identities.size());
}

void Agent::SetClusterPods(const v1::PodList& pods) {
  std::lock_guard lock(mutex_);
  PeerDirectory::Map directory;
  for (const v1::Pod& pod : pods.pods()) {
    const metrics::IdentityTable::Id identity = identities_.Intern(wire::FromProto(pod.identity()));
    for (const std::string& text : pod.ips()) {
      if (const std::optional<IpAddress> ip = IpAddress::Parse(text)) directory[*ip] = identity;
    }
  }
  cluster_directory_ = std::move(directory);
  RebuildPeerDirectory();
}

void Agent::RebuildPeerDirectory() {
  // The cluster's pods first; the local inventory, which may be newer for this node's own
  // pods, has the last word.
  PeerDirectory::Map directory = cluster_directory_;
  for (const PodInfo& pod : inventory_.pods) {
    const metrics::IdentityTable::Id identity = identities_.Intern(IdentityOf(pod));
    for (const IpAddress& ip : pod.ips) directory[ip] = identity;
  }
  directory_.Replace(std::move(directory));
}

void Agent::UpdateServiceDirectory() {
  // Services by cluster IP: the connections dialled to one are named after it too. Only the
  // Services that changed since the last version are looked at (the versions share the
  // rest), so a Service event costs what it changed, not the size of the cluster.
  const auto identity_of = [this](const ServiceInfo& service) {
    return identities_.Intern(metrics::ServiceIdentity(service.namespace_name, service.name));
  };
  bool changed = false;
  const auto update = [&](const std::string&, const ServiceInfo* before, const ServiceInfo* after) {
    changed = true;
    if (before != nullptr) {
      // An address another Service holds now (it moved) stays that one's.
      const metrics::IdentityTable::Id was = identity_of(*before);
      for (const IpAddress& ip : before->cluster_ips) {
        const metrics::IdentityTable::Id* id = service_ips_.Find(ip);
        if (id != nullptr && *id == was) service_ips_.Erase(ip);
      }
    }
    if (after == nullptr) return;
    const metrics::IdentityTable::Id identity = identity_of(*after);
    for (const IpAddress& ip : after->cluster_ips) service_ips_.Set(ip, identity);
  };
  ServiceMap::Diff(applied_services_, inventory_.services, update);
  applied_services_ = inventory_.services;
  if (changed) services_.Replace(service_ips_);
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
    const PodStatus status = StatusOf(info);
    pod.set_state(status.state);
    pod.set_state_reason(status.reason);
  }
  return pods;
}

Agent::PodStatus Agent::StatusOf(const PodInfo& pod) const {
  if (!pod.meshed) return {v1::UNMESHED, pod.mesh_reason};
  if (enrolled_.contains(pod.key())) return {v1::ENROLLED, pod.mesh_reason};
  if (!pod.pending.empty()) return {v1::PENDING, pod.pending};
  if (const auto failed = not_enrolled_.find(pod.key()); failed != not_enrolled_.end()) {
    return {v1::FAILED, failed->second};
  }
  return {v1::PENDING, "not enrolled yet"};
}

void Agent::ServeAdmin(HttpServer& server) {
  admin_address_ = server.address();
  server.Serve(admin_routes_);
}

http::HttpResponse Agent::AnswerRelayed(std::string_view target) const {
  return admin_routes_.Serve(http::HttpRoutes::Request("GET", target));
}

void Agent::ServeMetrics(HttpServer& server) {
  metrics_address_ = server.address();
  server.Serve(MetricsRoutes(*this));
}

std::optional<nlohmann::json> Agent::InventoryStatus() const {
  const InventorySource* source = source_.load(std::memory_order_acquire);
  if (source == nullptr) return std::nullopt;
  return source->Status();
}

std::optional<AggregatorLinkStatus> Agent::aggregator() const {
  if (!aggregator_) return std::nullopt;
  const AggregatorReplicas::Status status = aggregator_->status();
  return AggregatorLinkStatus{.connected = status.connected != 0,
                              .replicas = status.replicas,
                              .connected_replicas = status.connected,
                              .unacknowledged_deltas = status.unacknowledged_deltas,
                              .dropped_deltas = status.dropped_deltas};
}

std::vector<PodReport> Agent::Pods() const {
  std::lock_guard lock(mutex_);
  std::vector<PodReport> pods;
  for (const PodInfo& info : inventory_.pods) {
    // A pod of another node (a local inventory may list the whole cluster) is not this
    // agent's to enrol: it only names the far end of connections.
    if (!OnThisNode(info)) continue;
    PodReport& pod = pods.emplace_back();
    pod.info = info;
    const PodStatus status = StatusOf(info);
    pod.state = status.state;
    pod.state_reason = status.reason;
    if (const auto failed = not_enrolled_.find(info.key()); failed != not_enrolled_.end()) {
      pod.enrolment_error = failed->second;
    }
    if (const auto enrolled = enrolled_.find(info.key()); enrolled != enrolled_.end()) {
      const PodEnrolment& enrolment = *enrolled->second;
      pod.enrolment = PodReport::Enrolment{.pod_id = enrolment.runtime().id(),
                                           .cgroup_id = enrolment.cgroup_id(),
                                           .captured_ports = enrolment.CapturedPorts()};
    }
  }
  return pods;
}

std::vector<PodProgram> Agent::PodPrograms() const {
  std::lock_guard lock(mutex_);
  std::vector<PodProgram> programs;
  for (const PodInfo& info : inventory_.pods) {
    const auto enrolled = enrolled_.find(info.key());
    if (enrolled == enrolled_.end() || enrolled->second->inbound_link() == nullptr) continue;
    absl::StatusOr<AttachedProgram> program =
        DescribeLink(enrolled->second->inbound_link()->fd(), "nm_sk_lookup");
    if (!program.ok()) continue;
    programs.push_back(PodProgram{.pod = info.key(), .netns = info.netns, .program = *program});
  }
  return programs;
}

absl::flat_hash_map<uint32_t, std::string> Agent::PodNamesById() const {
  std::lock_guard lock(mutex_);
  absl::flat_hash_map<uint32_t, std::string> pods;
  for (const auto& [key, enrolment] : enrolled_) pods[enrolment->runtime().id()] = key;
  return pods;
}

std::vector<WorkerCounters> Agent::Counters() const {
  std::vector<WorkerCounters> counters;
  for (const auto& worker : workers_) {
    const UpstreamDialer& dialer = worker->upstream_dialer();
    counters.push_back(WorkerCounters{
        .proxy = worker->stats(),
        .observer = worker->observer_stats(),
        .conntrack = dialer.conntrack_stats(),
        .service_lookups_unavailable = dialer.service_lookups_unavailable()});
  }
  return counters;
}

uint64_t Agent::ListenerCount() const {
  uint64_t count = 0;
  for (const auto& worker : workers_) {
    worker->RunAndWait([&] { count += worker->listener_count(); });
  }
  return count;
}

std::vector<WorkerConnections> Agent::Connections() const {
  std::vector<WorkerConnections> connections;
  for (const auto& worker : workers_) {
    WorkerConnections& of_worker = connections.emplace_back();
    of_worker.worker = worker->index();
    worker->RunAndWait([&] {
      of_worker.live = worker->ListConnections();
      of_worker.recently_closed = worker->RecentlyClosed();
    });
  }
  return connections;
}

absl::StatusOr<LocalTaps::Batch> Agent::PollTap(const std::string& session,
                                                TapFilter filter) const {
  return local_taps_->Poll(session, std::move(filter), std::chrono::steady_clock::now());
}

}  // namespace nodemesh::agent
