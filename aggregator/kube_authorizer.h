// Whether a user may do something to the aggregator's API, as the Kubernetes API server's
// authorization (RBAC) says: a SubjectAccessReview (authorization.k8s.io/v1) asks it about
// one permission on a resource of the API group nodemesh.io, for the user the front proxy
// named (front_proxy.h). Answers are cached a short while (allowed ones longer than denied
// ones, so that a new RoleBinding takes effect soon), in a bounded cache that forgets the
// least recently used answer first.
//
// An API server that is down, refuses the aggregator or does not answer within the review's
// timeout makes the call fail at once with UNAVAILABLE, saying so: never a wait without end,
// and never an answer guessed. Failures are not cached.
//
// Threads: any; the cache has its own mutex, and no lock is held while a review is asked.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregator/kube_user.h"
#include "common/httpapi/permissions.h"
#include "common/kube/client.h"
#include "nlohmann/json.hpp"

namespace nodemesh::aggregator {

using httpapi::Permission;

// The body of a SubjectAccessReview asking whether `user` has `permission`.
nlohmann::json SubjectAccessReview(const KubeUser& user, const Permission& permission);

// Answers by what was asked, each for a while: a bounded map that forgets an answer once its
// time is up or, when full, the least recently used one. Not thread-safe on its own.
class AccessReviewCache {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  struct Answer {
    bool allowed = false;
    std::string reason{};  // the review's, for a refusal's message
  };

  explicit AccessReviewCache(size_t capacity) : capacity_(capacity) {}

  // The answer kept for `key` until after `now`, and it becomes the most recently used.
  std::optional<Answer> Find(const std::string& key, TimePoint now);
  // Keeps `answer` for `key` until `expires`, forgetting the least recently used one when full.
  void Put(const std::string& key, Answer answer, TimePoint expires);
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string key;
    Answer answer;
    TimePoint expires;
  };
  const size_t capacity_;
  std::list<Entry> entries_;  // most recently used first
  absl::flat_hash_map<std::string, std::list<Entry>::iterator> by_key_;
};

// What identifies a review: two keys are equal exactly when the reviews would ask the same
// (user, uid, groups and extra, and the permission).
std::string AccessReviewKey(const KubeUser& user, const Permission& permission);

struct KubeAuthorizerOptions {
  std::chrono::milliseconds allowed_for{std::chrono::seconds(10)};
  std::chrono::milliseconds denied_for{std::chrono::seconds(5)};
  size_t max_answers = 4096;
  // A review with no answer by then is UNAVAILABLE: under the API server's own 60 s for the
  // call it proxies, and short enough that the caller hears why within seconds.
  std::chrono::milliseconds review_timeout{std::chrono::seconds(5)};
  std::function<std::chrono::steady_clock::time_point()> now = [] {
    return std::chrono::steady_clock::now();
  };
};

struct KubeAuthorizerStats {
  uint64_t reviews = 0;  // SubjectAccessReviews asked (answered or not)
  uint64_t cached = 0;   // checks answered from the cache
};

class KubeAuthorizer {
 public:
  // Asks through `client`, which needs `create subjectaccessreviews` (ClusterRole
  // system:auth-delegator).
  explicit KubeAuthorizer(kube::Client& client, KubeAuthorizerOptions options = {});

  // OK when `user` has `permission`; PERMISSION_DENIED in the API server's words
  // (httpapi::Forbidden); UNAVAILABLE when
  // the API server gave no answer. A user in group system:masters has every permission
  // without a review, as the API server's own authorization grants it.
  absl::Status Check(const KubeUser& user, const Permission& permission);
  // Every one of `permissions`, in order; the first refusal or failure.
  absl::Status CheckAll(const KubeUser& user, const std::vector<Permission>& permissions);

  KubeAuthorizerStats stats() const;

 private:
  // Asks the API server; the answer, or UNAVAILABLE saying why there is none.
  absl::StatusOr<AccessReviewCache::Answer> Review(const KubeUser& user,
                                                   const Permission& permission);

  kube::Client& client_;
  const KubeAuthorizerOptions options_;
  mutable std::mutex mutex_;  // for the two below
  AccessReviewCache cache_;
  KubeAuthorizerStats stats_;
};

}  // namespace nodemesh::aggregator
