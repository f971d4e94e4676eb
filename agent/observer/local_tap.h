// Taps asked of the agent itself, through its admin API (`tap` in meshctl shell): live
// requests of this node only, with no aggregator in the way. A client opens a session by
// polling it with its filter, and polls it again a few times a second; each poll returns
// what the workers tapped since the previous one. A session nobody polls for a while ends by
// itself, so a client that vanishes leaves nothing behind. The admin API serves one request
// at a time, so polling (rather than a held stream) keeps it free for everyone else.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "agent/observer/tap.h"
#include "nodemesh/v1/nodemesh.pb.h"

namespace nodemesh::agent {

// Events a second a local tap takes unless asked otherwise, as meshctl tap's default.
inline constexpr double kDefaultLocalTapRps = 100;

// Polled events as GET /tap answers them: a JSON array of each event's proto3 JSON, fields
// named as in the proto.
nlohmann::json TapEventsJson(const std::vector<v1::TapEvent>& events);

struct LocalTapOptions {
  size_t max_sessions = 8;
  size_t max_queued_events = 2048;  // per session, between two polls
  std::chrono::milliseconds idle_timeout{10000};
};

class LocalTaps {
 public:
  using Clock = std::chrono::steady_clock;
  // Moves the workers' local tap events into the vector; returns how many they dropped.
  using Drain = std::function<uint64_t(std::vector<v1::TapEvent>*)>;

  LocalTaps(TapSubscriptions& subscriptions, Drain drain, LocalTapOptions options = {});
  ~LocalTaps();

  struct Batch {
    std::vector<v1::TapEvent> events;
    uint64_t dropped = 0;  // events lost since the previous poll (queues full)
  };
  // The session named `session` (chosen by the client): opened with `filter` on its first
  // poll; afterwards the events since the previous poll. FailedPrecondition when the session
  // exists with another filter; ResourceExhausted when max_sessions are open.
  absl::StatusOr<Batch> Poll(const std::string& session, TapFilter filter, Clock::time_point now);
  // Ends the sessions not polled within the idle timeout.
  void Expire(Clock::time_point now);
  size_t sessions() const;

 private:
  struct Session {
    uint64_t subscription = 0;
    TapFilter filter;
    std::deque<v1::TapEvent> queue;
    uint64_t dropped = 0;
    Clock::time_point last_poll;
  };
  // Moves the workers' events into their sessions' queues; under mutex_.
  void Distribute();

  TapSubscriptions& subscriptions_;
  const Drain drain_;
  const LocalTapOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, Session> sessions_;
  uint64_t next_subscription_ = 1;
};

}  // namespace nodemesh::agent
