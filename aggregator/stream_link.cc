#include "aggregator/stream_link.h"

#include <utility>

#include "common/base/log.h"

namespace nodemesh::aggregator {
namespace {

// Messages waiting for an agent: subscriptions, cancels, a delta's acknowledgement each
// second. An agent that lets this many pile up is not reading its stream, and it is ended.
constexpr size_t kMaxQueuedForAgent = 4096;

}  // namespace

void StreamLink::Start() {
  writer_ = std::thread([this] { WriteLoop(); });
}

void StreamLink::Send(v1::AggregatorMessage message) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_ || failed_) return;
    if (queue_.size() >= kMaxQueuedForAgent) {
      Log(LogLevel::kWarning, "agent of node {} is not reading its stream; ending it", node_);
      failed_ = true;
      context_->TryCancel();
      return;
    }
    queue_.push_back(std::move(message));
  }
  wake_.notify_one();
}

void StreamLink::Cancel() {
  std::lock_guard lock(mutex_);
  if (!stopped_) context_->TryCancel();
}

void StreamLink::Stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    if (writing_) context_->TryCancel();
  }
  wake_.notify_one();
  if (writer_.joinable()) writer_.join();
}

void StreamLink::WriteLoop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopped_ || !queue_.empty(); });
    if (stopped_) return;
    v1::AggregatorMessage message = std::move(queue_.front());
    queue_.pop_front();
    writing_ = true;
    lock.unlock();
    const bool written = stream_->Write(message);
    lock.lock();
    writing_ = false;
    if (!written) {
      failed_ = true;
      return;
    }
  }
}

}  // namespace nodemesh::aggregator
