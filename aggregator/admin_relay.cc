#include "aggregator/admin_relay.h"

#include <fmt/format.h>

namespace nodemesh::aggregator {
namespace {

// How often a waiting call looks whether its caller left.
constexpr auto kCancelPollInterval = std::chrono::milliseconds(100);

}  // namespace

absl::StatusOr<v1::AdminResponse> AdminRelay::Call(AgentLink& link, const std::string& node,
                                                   const std::string& target,
                                                   const std::function<bool()>& cancelled) {
  uint64_t id;
  {
    std::lock_guard lock(mutex_);
    if (pending_.size() >= options_.max_pending) {
      return absl::ResourceExhaustedError(fmt::format(
          "{} admin requests are waiting for agents already; try again shortly", pending_.size()));
    }
    id = next_id_++;
    pending_.emplace(id, Pending{&link, std::nullopt, false});
  }
  v1::AggregatorMessage message;
  message.mutable_admin_request()->set_id(id);
  message.mutable_admin_request()->set_target(target);
  link.Send(std::move(message));

  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  std::unique_lock lock(mutex_);
  for (;;) {
    Pending& pending = pending_.at(id);
    if (pending.answer || pending.stream_ended) break;
    if (std::chrono::steady_clock::now() >= deadline || cancelled()) break;
    answered_.wait_for(lock, kCancelPollInterval);
  }
  Pending done = std::move(pending_.at(id));
  pending_.erase(id);
  if (done.answer) return *std::move(done.answer);
  if (done.stream_ended) {
    return absl::UnavailableError(
        fmt::format("the stream of node {}'s agent ended before it answered", node));
  }
  if (cancelled()) return absl::CancelledError("the caller went away");
  return absl::DeadlineExceededError(
      fmt::format("node {}'s agent did not answer {} within {:g} s", node, target,
                  std::chrono::duration<double>(options_.timeout).count()));
}

void AdminRelay::Deliver(const AgentLink& link, v1::AdminResponse response) {
  {
    std::lock_guard lock(mutex_);
    const auto found = pending_.find(response.id());
    // An id is only taken from the stream it was sent down.
    if (found == pending_.end() || found->second.link != &link) return;
    found->second.answer = std::move(response);
  }
  answered_.notify_all();
}

void AdminRelay::StreamEnded(const AgentLink& link) {
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, pending] : pending_) {
      if (pending.link == &link) pending.stream_ended = true;
    }
  }
  answered_.notify_all();
}

}  // namespace nodemesh::aggregator
