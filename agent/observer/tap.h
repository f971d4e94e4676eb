// Tap on the agent: the aggregator's subscriptions, matched against requests as the
// workers see them, rate-limited, and turned into events queued for the aggregator.
// With no subscription the data path pays one relaxed atomic load per request.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "agent/options.h"
#include "common/metrics/identity.h"
#include "nodemesh/v1/nodemesh.pb.h"
#include "parsers/parser.h"

namespace nodemesh::agent {

struct TapFilter {
  uint64_t id = 0;
  std::vector<std::string> sources;       // "namespace/pod"; empty: any
  std::vector<std::string> destinations;  // "namespace/pod"; empty: any
  // "namespace/name" of Services the request was dialled to; empty: any, dialled to a Service
  // or not.
  std::vector<std::string> services;
  // "namespace/pod", as the source or as the destination; empty: any. A local tap of one
  // pod's requests both ways, in one subscription (the aggregator's taps use two).
  std::vector<std::string> either;
  std::string method;
  std::string path_prefix;
  std::string authority;
  std::string scheme;
  double max_rps = 0;  // for the whole agent; 0: no limit

  static TapFilter FromProto(const v1::TapSubscription& subscription);
  // `service`: the Service the caller dialled, null when none (or not known: the server's
  // side never knows it). `path` is the request's path as tap shows it (TapPath): a prefix
  // cannot probe what the redaction hides.
  bool Matches(const metrics::Identity& source, const metrics::Identity& destination,
               const metrics::Identity* service, const parsers::RequestStart& request,
               std::string_view path) const;
};

// Subscriptions of local taps (the admin API's, see local_tap.h) carry this bit in their id;
// the aggregator's never do. Their events go to the workers' local outboxes.
inline constexpr uint64_t kLocalTapBit = uint64_t{1} << 63;
inline bool IsLocalTap(uint64_t subscription) { return (subscription & kLocalTapBit) != 0; }

// The subscriptions in force, shared by their writers (the aggregator client, the local
// taps) and the workers.
class TapSubscriptions {
 public:
  using List = std::vector<TapFilter>;
  bool active() const { return active_.load(std::memory_order_relaxed); }
  std::shared_ptr<const List> Current() const { return list_.load(std::memory_order_acquire); }
  void Add(TapFilter filter);
  void Remove(uint64_t id);

 private:
  void Publish(List list);
  std::mutex mutex_;  // writers only
  std::atomic<bool> active_{false};
  std::atomic<std::shared_ptr<const List>> list_{std::make_shared<const List>()};
};

// Events a worker produced, waiting for their consumer (the aggregator client, or the local
// taps). Bounded: when the client
// cannot keep up, events are dropped and counted, the data path never waits.
class TapOutbox {
 public:
  explicit TapOutbox(size_t capacity = 4096) : capacity_(capacity) {}
  void Push(v1::TapEvent event);
  // Moves the queued events into `out` and returns how many were dropped since last time.
  uint64_t Drain(std::vector<v1::TapEvent>* out);

 private:
  const size_t capacity_;
  std::mutex mutex_;
  std::vector<v1::TapEvent> events_;
  uint64_t dropped_ = 0;
};

// Per worker and subscription: at most `rate` events a second, with a burst of one second.
class TapRateLimiter {
 public:
  // `rate` <= 0 allows everything.
  bool Allow(uint64_t subscription, double rate, int64_t now_ns);

 private:
  struct Bucket {
    double tokens = 0;
    int64_t refilled_ns = 0;
  };
  absl::flat_hash_map<uint64_t, Bucket> buckets_;
};

// A header's value as tap shows it: "[redacted]" for the headers `redaction` names, the
// value itself otherwise.
std::string TapHeaderValue(const TapRedaction& redaction, const parsers::Header& header);
// A request's path as tap shows it: without its query ("/a?[redacted]") when `redaction`
// strips queries. `storage` holds the stripped path; the request's own is returned as is.
std::string_view TapPath(const TapRedaction& redaction, std::string_view path,
                         std::string* storage);

}  // namespace nodemesh::agent
