#include "agent/observer/local_tap.h"

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include <string>
#include <vector>

#include "common/base/log.h"

namespace nodemesh::agent {
namespace {

bool SameFilter(const TapFilter& a, const TapFilter& b) {
  return a.sources == b.sources && a.destinations == b.destinations && a.services == b.services &&
         a.either == b.either && a.method == b.method && a.path_prefix == b.path_prefix &&
         a.authority == b.authority && a.scheme == b.scheme && a.max_rps == b.max_rps;
}

}  // namespace

nlohmann::json TapEventsJson(const std::vector<v1::TapEvent>& events) {
  // One pass of protobuf's printer over the whole poll: its cost is mostly per call (the
  // message serialized, then read back by type), so a batch costs little more than an event.
  v1::TapEvents batch;
  batch.mutable_events()->Reserve(static_cast<int>(events.size()));
  for (const v1::TapEvent& event : events) *batch.add_events() = event;
  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  std::string text;
  if (!google::protobuf::util::MessageToJsonString(batch, &text, print).ok()) {
    return nlohmann::json::array();
  }
  nlohmann::json json = nlohmann::json::parse(text);
  return json.contains("events") ? std::move(json["events"]) : nlohmann::json::array();
}

LocalTaps::LocalTaps(TapSubscriptions& subscriptions, Drain drain, LocalTapOptions options)
    : subscriptions_(subscriptions), drain_(std::move(drain)), options_(options) {}

LocalTaps::~LocalTaps() {
  std::lock_guard lock(mutex_);
  for (const auto& [name, session] : sessions_) subscriptions_.Remove(session.subscription);
}

absl::StatusOr<LocalTaps::Batch> LocalTaps::Poll(const std::string& session, TapFilter filter,
                                                 Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto found = sessions_.find(session);
  if (found == sessions_.end()) {
    if (sessions_.size() >= options_.max_sessions) {
      return absl::ResourceExhaustedError(fmt::format(
          "{} taps are open on this agent already; end one (each ends {} s after its last poll)",
          sessions_.size(), options_.idle_timeout.count() / 1000));
    }
    Session opened;
    opened.subscription = kLocalTapBit | next_subscription_++;
    filter.id = opened.subscription;
    opened.filter = filter;
    opened.last_poll = now;
    subscriptions_.Add(std::move(filter));
    Log(LogLevel::kInfo, "local tap {} started", session);
    sessions_.emplace(session, std::move(opened));
    return Batch{};
  }
  filter.id = found->second.subscription;
  if (!SameFilter(filter, found->second.filter)) {
    return absl::FailedPreconditionError(fmt::format(
        "tap session {} is open with other filters: use a new session for new filters", session));
  }
  Distribute();
  Session& current = found->second;
  current.last_poll = now;
  Batch batch;
  batch.events.assign(std::make_move_iterator(current.queue.begin()),
                      std::make_move_iterator(current.queue.end()));
  current.queue.clear();
  batch.dropped = std::exchange(current.dropped, 0);
  return batch;
}

void LocalTaps::Distribute() {
  std::vector<v1::TapEvent> events;
  const uint64_t dropped = drain_(&events);
  for (v1::TapEvent& event : events) {
    for (auto& [name, session] : sessions_) {
      if (session.subscription != event.subscription()) continue;
      if (session.queue.size() >= options_.max_queued_events) {
        ++session.dropped;
      } else {
        session.queue.push_back(std::move(event));
      }
      break;
    }
  }
  // The workers' queues are shared by every session: their losses are everyone's.
  if (dropped != 0) {
    for (auto& [name, session] : sessions_) session.dropped += dropped;
  }
}

void LocalTaps::Expire(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_poll < options_.idle_timeout) {
      ++it;
      continue;
    }
    subscriptions_.Remove(it->second.subscription);
    Log(LogLevel::kInfo, "local tap {} ended: not polled for {} s", it->first,
        options_.idle_timeout.count() / 1000);
    it = sessions_.erase(it);
  }
  // Events of ended sessions would otherwise wait in the workers' queues.
  if (sessions_.empty()) Distribute();
}

size_t LocalTaps::sessions() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

}  // namespace nodemesh::agent
