#include "aggregator/kube_authorizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "common/base/format.h"
#include "common/kube/object.h"

namespace nodemesh::aggregator {
namespace {

constexpr std::string_view kReviewPath = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
// The group whose members the API server lets do anything without asking its authorizers.
constexpr std::string_view kMastersGroup = "system:masters";

// `field` into `key` so that no two different sequences of fields make the same key.
void AddField(std::string& key, std::string_view field) {
  key += std::to_string(field.size());
  key += ':';
  key += field;
}

// "get nodes/admin node-a at the cluster scope", for the messages of failed reviews: the
// name says which node or which kind of workload was asked about.
std::string DescribePermission(const Permission& permission) {
  std::string resource = permission.resource;
  if (!permission.subresource.empty()) resource += "/" + permission.subresource;
  return fmt::format("{} {}{} {}", permission.verb, resource,
                     permission.name.empty() ? "" : " " + permission.name,
                     permission.namespace_name.empty()
                         ? "at the cluster scope"
                         : fmt::format("in namespace {}", permission.namespace_name));
}

}  // namespace

nlohmann::json SubjectAccessReview(const KubeUser& user, const Permission& permission) {
  nlohmann::json spec = {{"user", user.name},
                         {"resourceAttributes", permission.ResourceAttributes()}};
  if (!user.uid.empty()) spec["uid"] = user.uid;
  if (!user.groups.empty()) spec["groups"] = user.groups;
  if (!user.extra.empty()) spec["extra"] = user.extra;
  return {{"apiVersion", "authorization.k8s.io/v1"},
          {"kind", "SubjectAccessReview"},
          {"spec", std::move(spec)}};
}

std::optional<AccessReviewCache::Answer> AccessReviewCache::Find(const std::string& key,
                                                                 TimePoint now) {
  const auto found = by_key_.find(key);
  if (found == by_key_.end()) return std::nullopt;
  const std::list<Entry>::iterator entry = found->second;
  if (entry->expires <= now) {
    by_key_.erase(found);
    entries_.erase(entry);
    return std::nullopt;
  }
  entries_.splice(entries_.begin(), entries_, entry);
  return entry->answer;
}

void AccessReviewCache::Put(const std::string& key, Answer answer, TimePoint expires) {
  if (capacity_ == 0) return;
  if (const auto found = by_key_.find(key); found != by_key_.end()) {
    entries_.erase(found->second);
    by_key_.erase(found);
  }
  if (entries_.size() >= capacity_) {
    by_key_.erase(entries_.back().key);
    entries_.pop_back();
  }
  entries_.push_front(Entry{key, std::move(answer), expires});
  by_key_[key] = entries_.begin();
}

std::string AccessReviewKey(const KubeUser& user, const Permission& permission) {
  std::string key;
  for (const std::string* field :
       {&user.name, &user.uid, &permission.verb, &permission.resource, &permission.subresource,
        &permission.name, &permission.namespace_name}) {
    AddField(key, *field);
  }
  AddField(key, std::to_string(user.groups.size()));
  for (const std::string& group : user.groups) AddField(key, group);
  AddField(key, std::to_string(user.extra.size()));
  for (const auto& [name, values] : user.extra) {
    AddField(key, name);
    AddField(key, std::to_string(values.size()));
    for (const std::string& value : values) AddField(key, value);
  }
  return key;
}

KubeAuthorizer::KubeAuthorizer(kube::Client& client, KubeAuthorizerOptions options)
    : client_(client), options_(std::move(options)), cache_(options_.max_answers) {}

absl::Status KubeAuthorizer::Check(const KubeUser& user, const Permission& permission) {
  if (std::find(user.groups.begin(), user.groups.end(), kMastersGroup) != user.groups.end()) {
    return absl::OkStatus();
  }
  const std::string key = AccessReviewKey(user, permission);
  std::optional<AccessReviewCache::Answer> answer;
  {
    std::lock_guard lock(mutex_);
    answer = cache_.Find(key, options_.now());
    if (answer) {
      ++stats_.cached;
    } else {
      ++stats_.reviews;
    }
  }
  if (!answer) {
    absl::StatusOr<AccessReviewCache::Answer> reviewed = Review(user, permission);
    if (!reviewed.ok()) return reviewed.status();
    answer = *std::move(reviewed);
    std::lock_guard lock(mutex_);
    cache_.Put(key, *answer,
               options_.now() + (answer->allowed ? options_.allowed_for : options_.denied_for));
  }
  return answer->allowed ? absl::OkStatus()
                         : httpapi::Forbidden(permission, user.name, answer->reason);
}

absl::Status KubeAuthorizer::CheckAll(const KubeUser& user,
                                      const std::vector<Permission>& permissions) {
  for (const Permission& permission : permissions) {
    if (absl::Status may = Check(user, permission); !may.ok()) return may;
  }
  return absl::OkStatus();
}

KubeAuthorizerStats KubeAuthorizer::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

absl::StatusOr<AccessReviewCache::Answer> KubeAuthorizer::Review(const KubeUser& user,
                                                                 const Permission& permission) {
  const auto unavailable = [&](absl::string_view why) {
    return absl::UnavailableError(
        fmt::format("cannot check whether {} may {}: the Kubernetes API server's "
                    "SubjectAccessReview failed: {}",
                    user.name, DescribePermission(permission), why));
  };
  const std::string body = SubjectAccessReview(user, permission).dump();
  const absl::StatusOr<kube::Response> response =
      client_.Request("POST", kReviewPath, body, "application/json", options_.review_timeout);
  if (!response.ok()) return unavailable(response.status().message());
  if (response->status >= 300) {
    const absl::Status refused = kube::StatusFromResponse(*response, "create subjectaccessreviews");
    return unavailable(response->status == 401 || response->status == 403
                           ? fmt::format("{} (the aggregator needs the ClusterRole "
                                         "system:auth-delegator)",
                                         refused.message())
                           : std::string(refused.message()));
  }
  const nlohmann::json review =
      nlohmann::json::parse(response->body, nullptr, /*allow_exceptions=*/false);
  const nlohmann::json& allowed = kube::At(kube::At(review, "status"), "allowed");
  if (!allowed.is_boolean()) {
    return unavailable(
        fmt::format("its answer has no status.allowed: {}", response->body.substr(0, 200)));
  }
  const nlohmann::json& status = kube::At(review, "status");
  std::string reason = kube::StringAt(status, "reason");
  if (const std::string error = kube::StringAt(status, "evaluationError"); !error.empty()) {
    reason = reason.empty() ? error : fmt::format("{} ({})", reason, error);
  }
  return AccessReviewCache::Answer{allowed.get<bool>(), std::move(reason)};
}

}  // namespace nodemesh::aggregator
