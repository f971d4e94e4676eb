#include "aggregator/tap_hub.h"

#include <fmt/format.h>

#include <algorithm>
#include <random>
#include <tuple>
#include <utility>

#include "aggregator/queries.h"
#include "common/wire/convert.h"

namespace nodemesh::aggregator {
namespace {

std::string PodName(const v1::Identity& identity) {
  return identity.namespace_() + "/" + identity.pod();
}

using wire::WorkloadOf;

std::string NodeList(const std::set<std::string>& nodes) {
  std::string list;
  for (const std::string& node : nodes) list += (list.empty() ? "" : ", ") + node;
  return list;
}

}  // namespace

bool TapSession::Wait(std::chrono::milliseconds timeout, std::vector<v1::TapEvent>* out) {
  std::unique_lock lock(mutex_);
  ready_.wait_for(lock, timeout, [&] { return closed_ || !events_.empty(); });
  for (v1::TapEvent& event : events_) out->push_back(std::move(event));
  events_.clear();
  return !(closed_ && out->empty());
}

v1::TapDrops TapSession::TakeDrops() {
  std::lock_guard lock(mutex_);
  v1::TapDrops drops;
  drops.set_agent_dropped(std::exchange(agent_dropped_, 0));
  drops.set_stream_dropped(std::exchange(stream_dropped_, 0));
  return drops;
}

bool TapSession::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

void TapSession::Push(v1::TapEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return;
    // The client is slower than the agents: the newest events are the ones dropped, so that
    // what the client does see stays in order and its requests' ends follow their starts.
    if (events_.size() >= capacity_) {
      ++stream_dropped_;
      return;
    }
    events_.push_back(std::move(event));
  }
  ready_.notify_one();
}

void TapSession::AddAgentDrops(uint64_t count) {
  std::lock_guard lock(mutex_);
  agent_dropped_ += count;
}

void TapSession::Close() {
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
  }
  ready_.notify_all();
}

uint64_t TapHub::FirstSubscriptionId() {
  std::random_device random;
  const uint64_t drawn = (uint64_t{random()} << 32) | random();
  return (drawn >> 2) | 1;  // below 2^62, never 0
}

void TapHub::AttachAgent(const std::string& node, std::shared_ptr<AgentLink> link) {
  std::lock_guard lock(mutex_);
  links_[node] = std::move(link);
  // A new stream starts with no subscriptions: the agent drops them when its stream ends.
  sent_.erase(node);
  ReconcileLocked();
}

void TapHub::DetachAgent(const std::string& node, const AgentLink* link) {
  std::lock_guard lock(mutex_);
  const auto found = links_.find(node);
  if (found == links_.end() || found->second.get() != link) return;
  links_.erase(found);
  sent_.erase(node);
  ReconcileLocked();  // the remaining agents' shares of max_rps grow
}

void TapHub::PodsChanged() {
  std::lock_guard lock(mutex_);
  ReconcileLocked();
}

void TapHub::Deliver(const std::string& node, const v1::TapEvents& events) {
  std::lock_guard lock(mutex_);
  for (const v1::TapEvent& event : events.events()) {
    const auto owner = owner_of_.find(event.subscription());
    if (owner == owner_of_.end()) continue;  // a tap that ended while this was in flight
    const auto tap = taps_.find(owner->second);
    if (tap == taps_.end()) continue;
    if (event.subscription() == tap->second.to_target_id) {
      const auto sources = tap->second.from_target_sources.find(node);
      if (sources != tap->second.from_target_sources.end() &&
          sources->second.contains(PodName(event.source()))) {
        continue;  // the same request, reported for from_target_id too
      }
    }
    tap->second.session->Push(event);
  }
  if (events.dropped() == 0) return;
  for (auto& [id, tap] : taps_) {
    const auto sent = sent_.find(node);
    if (sent == sent_.end()) continue;
    if (sent->second.contains(tap.from_target_id) || sent->second.contains(tap.to_target_id)) {
      tap.session->AddAgentDrops(events.dropped());
    }
  }
}

absl::StatusOr<std::shared_ptr<TapSession>> TapHub::Open(const v1::TapRequestSpec& spec,
                                                         const std::string& caller) {
  absl::StatusOr<Selector> target = ToSelector(spec.target(), "target");
  if (!target.ok()) return target.status();
  std::optional<Selector> to;
  std::string to_service;
  if (IsServiceType(spec.to().type())) {
    absl::StatusOr<Selector> service = ServiceSelector(spec.to(), "to");
    if (!service.ok()) return service.status();
    if (service->name.empty() || service->namespace_name.empty()) {
      return absl::InvalidArgumentError(
          "the tap's 'to' Service needs a name and a namespace: name the Service whose callers' "
          "requests to tap (e.g. to svc/web-svc)");
    }
    to_service = service->namespace_name + "/" + service->name;
  } else if (IsSet(spec.to())) {
    absl::StatusOr<Selector> parsed = ToSelector(spec.to(), "to");
    if (!parsed.ok()) return parsed.status();
    to = *std::move(parsed);
  }
  // Filters are matched against every request the agents see: each is bounded, as the
  // request fields it matches are.
  for (const auto& [name, value, most] :
       {std::tuple{"method", &spec.method(), size_t{32}},
        std::tuple{"scheme", &spec.scheme(), size_t{32}},
        std::tuple{"authority", &spec.authority(), size_t{512}},
        std::tuple{"path_prefix", &spec.path_prefix(), size_t{4096}}}) {
    if (value->size() > most) {
      return absl::InvalidArgumentError(fmt::format(
          "the tap's {} filter is {} bytes, more than a tap matches ({}): give a shorter one", name,
          value->size(), most));
    }
  }
  if (spec.max_rps() < 0) {
    return absl::InvalidArgumentError(
        fmt::format("max_rps {} is negative: give a positive rate, or 0 for the default of {}",
                    spec.max_rps(), options_.default_max_rps));
  }

  std::lock_guard lock(mutex_);
  if (shut_down_) return absl::UnavailableError("the aggregator is shutting down");
  if (taps_.size() >= options_.max_taps) {
    return absl::ResourceExhaustedError(fmt::format(
        "{} taps are open on this aggregator, the most it serves at once: end one, or try again "
        "later",
        taps_.size()));
  }
  const size_t callers_taps =
      static_cast<size_t>(std::count_if(taps_.begin(), taps_.end(), [&](const auto& entry) {
        return entry.second.caller == caller;
      }));
  if (callers_taps >= options_.max_taps_per_caller) {
    return absl::ResourceExhaustedError(
        fmt::format("{} has {} taps open, the most one caller may: end one of them first", caller,
                    callers_taps));
  }
  pods_ = pods_source_();
  std::set<std::string> target_nodes;
  size_t to_pods = 0;
  for (const PodEntry& entry : pods_) {
    if (target->Contains(WorkloadOf(entry.pod.identity()))) target_nodes.insert(entry.node);
    if (to && to->Contains(WorkloadOf(entry.pod.identity()))) ++to_pods;
  }
  if (target_nodes.empty()) {
    return absl::NotFoundError(fmt::format(
        "no pods of {} are known to the aggregator: check the name and the namespace (the "
        "pods' agents report them once connected)",
        target->Describe()));
  }
  if (to && to_pods == 0) {
    return absl::NotFoundError(fmt::format(
        "no pods of {} (the tap's 'to') are known to the aggregator: check the name and the "
        "namespace",
        to->Describe()));
  }

  Tap tap;
  tap.caller = caller;
  tap.spec = spec;
  tap.target = *std::move(target);
  tap.to = std::move(to);
  tap.to_service = std::move(to_service);
  tap.from_target_id = next_id_;
  tap.to_target_id = tap.to || !tap.to_service.empty() ? 0 : next_id_ + 1;
  std::map<std::string, Subscriptions> plan;
  PlanLocked(tap, &plan);
  if (plan.empty()) {
    return absl::UnavailableError(fmt::format(
        "the pods of {} run on {}, whose agents are not connected to the aggregator now: check "
        "the nodemesh agents there",
        tap.target.Describe(), NodeList(target_nodes)));
  }
  next_id_ += 2;
  tap.session = std::make_shared<TapSession>(tap.from_target_id, options_.queue_capacity);
  owner_of_[tap.from_target_id] = tap.from_target_id;
  if (tap.to_target_id != 0) owner_of_[tap.to_target_id] = tap.from_target_id;
  std::shared_ptr<TapSession> session = tap.session;
  taps_.emplace(tap.from_target_id, std::move(tap));
  ReconcileLocked();
  return session;
}

void TapHub::Close(const std::shared_ptr<TapSession>& session) {
  {
    std::lock_guard lock(mutex_);
    const auto found = taps_.find(session->id());
    if (found != taps_.end()) {
      owner_of_.erase(found->second.from_target_id);
      owner_of_.erase(found->second.to_target_id);
      taps_.erase(found);
      ReconcileLocked();
    }
  }
  session->Close();
}

void TapHub::Shutdown() {
  std::vector<std::shared_ptr<TapSession>> sessions;
  {
    std::lock_guard lock(mutex_);
    shut_down_ = true;
    for (auto& [id, tap] : taps_) sessions.push_back(tap.session);
  }
  for (const std::shared_ptr<TapSession>& session : sessions) Close(session);
}

size_t TapHub::sessions() const {
  std::lock_guard lock(mutex_);
  return taps_.size();
}

std::vector<std::string> TapHub::agents() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> nodes;
  for (const auto& [node, link] : links_) nodes.push_back(node);
  return nodes;
}

void TapHub::PlanLocked(Tap& tap, std::map<std::string, Subscriptions>* desired) {
  // Target pods per node, the unenrolled ones, and the `to` pods per node.
  std::map<std::string, std::vector<std::string>> target_pods, to_pods;
  std::vector<std::string> unenrolled_targets, all_to_pods;
  for (const PodEntry& entry : pods_) {
    const Workload workload = WorkloadOf(entry.pod.identity());
    if (tap.target.Contains(workload)) {
      target_pods[entry.node].push_back(PodName(entry.pod.identity()));
      if (!entry.pod.enrolled()) unenrolled_targets.push_back(PodName(entry.pod.identity()));
    }
    if (tap.to && tap.to->Contains(workload)) {
      to_pods[entry.node].push_back(PodName(entry.pod.identity()));
      all_to_pods.push_back(PodName(entry.pod.identity()));
    }
  }
  std::set<std::string> involved;
  for (const auto& [node, pods] : target_pods) {
    if (links_.contains(node)) involved.insert(node);
  }
  std::set<std::string> to_only;  // nodes that see unenrolled targets' requests arrive
  if (tap.to && !unenrolled_targets.empty()) {
    for (const auto& [node, pods] : to_pods) {
      if (links_.contains(node) && !target_pods.contains(node)) to_only.insert(node);
    }
  }
  tap.from_target_sources.clear();
  const size_t agents = involved.size() + to_only.size();
  if (agents == 0) return;
  const double total = tap.spec.max_rps() > 0 ? tap.spec.max_rps() : options_.default_max_rps;
  const double share = total / double(agents);

  const auto subscription = [&](uint64_t id, const std::vector<std::string>& sources,
                                const std::vector<std::string>& destinations, double rps) {
    v1::TapSubscription out;
    out.set_id(id);
    v1::TapMatch& match = *out.mutable_match();
    for (const std::string& pod : sources) match.add_source_pods(pod);
    for (const std::string& pod : destinations) match.add_destination_pods(pod);
    if (!tap.to_service.empty()) match.add_destination_services(tap.to_service);
    match.set_method(tap.spec.method());
    match.set_path_prefix(tap.spec.path_prefix());
    match.set_authority(tap.spec.authority());
    match.set_scheme(tap.spec.scheme());
    out.set_max_rps(rps);
    return out;
  };
  for (const std::string& node : involved) {
    const std::vector<std::string>& local = target_pods[node];
    Subscriptions& subscriptions = (*desired)[node];
    if (!tap.to_service.empty()) {
      subscriptions[tap.from_target_id] = subscription(tap.from_target_id, local, {}, share);
    } else if (tap.to) {
      // The local target pods' requests, and those of unenrolled target pods elsewhere, seen
      // arriving at `to` pods here.
      std::set<std::string> sources(local.begin(), local.end());
      sources.insert(unenrolled_targets.begin(), unenrolled_targets.end());
      subscriptions[tap.from_target_id] =
          subscription(tap.from_target_id, std::vector<std::string>(sources.begin(), sources.end()),
                       all_to_pods, share);
    } else {
      subscriptions[tap.from_target_id] = subscription(tap.from_target_id, local, {}, share / 2);
      subscriptions[tap.to_target_id] = subscription(tap.to_target_id, {}, local, share / 2);
      tap.from_target_sources[node] = std::set<std::string>(local.begin(), local.end());
    }
  }
  for (const std::string& node : to_only) {
    (*desired)[node][tap.from_target_id] =
        subscription(tap.from_target_id, unenrolled_targets, to_pods[node], share);
  }
}

void TapHub::ReconcileLocked() {
  if (!taps_.empty()) pods_ = pods_source_();
  std::map<std::string, Subscriptions> desired;
  for (auto& [id, tap] : taps_) PlanLocked(tap, &desired);
  for (const auto& [node, link] : links_) {
    std::map<uint64_t, std::string>& sent = sent_[node];
    const Subscriptions& wanted = desired[node];
    for (const auto& [id, subscription] : wanted) {
      std::string serialized = subscription.SerializeAsString();
      const auto previous = sent.find(id);
      if (previous != sent.end() && previous->second == serialized) continue;
      v1::AggregatorMessage message;
      *message.mutable_subscribe() = subscription;
      link->Send(std::move(message));
      sent[id] = std::move(serialized);
    }
    for (auto it = sent.begin(); it != sent.end();) {
      if (wanted.contains(it->first)) {
        ++it;
        continue;
      }
      v1::AggregatorMessage message;
      message.mutable_cancel()->set_id(it->first);
      link->Send(std::move(message));
      it = sent.erase(it);
    }
  }
}

}  // namespace nodemesh::aggregator
