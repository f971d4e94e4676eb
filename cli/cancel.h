// Stops long-running commands (tap, top) cleanly: Ctrl-C in meshctl, a call in tests.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>

namespace nodemesh::cli {

class CancelSource {
 public:
  // Calls every registered callback once and wakes every WaitFor. Returns whether anything
  // was listening: when nothing was, the caller may just exit.
  bool Cancel() {
    std::map<uint64_t, std::function<void()>> callbacks;
    bool listening;
    {
      std::lock_guard lock(mutex_);
      cancelled_ = true;
      listening = !callbacks_.empty() || waiters_ > 0;
      callbacks.swap(callbacks_);
      running_callbacks_ = true;
    }
    changed_.notify_all();
    for (auto& [id, callback] : callbacks) callback();
    {
      std::lock_guard lock(mutex_);
      running_callbacks_ = false;
    }
    changed_.notify_all();
    return listening;
  }

  // Arms the source again after a Cancel(), for the next command of an interactive shell.
  // Only when nothing is registered (the last command is over).
  void Reset() {
    std::lock_guard lock(mutex_);
    cancelled_ = false;
  }

  bool cancelled() const {
    std::lock_guard lock(mutex_);
    return cancelled_;
  }

  // Waits up to `timeout`; returns true when cancelled.
  bool WaitFor(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    ++waiters_;
    const bool cancelled = changed_.wait_for(lock, timeout, [this] { return cancelled_; });
    --waiters_;
    return cancelled;
  }

  // While the returned object lives, Cancel() calls `callback` (at once if already
  // cancelled). Its destructor waits for a callback already running, so that whatever the
  // callback touches may be destroyed right after it.
  class Registration {
   public:
    Registration(CancelSource* source, uint64_t id) : source_(source), id_(id) {}
    Registration(const Registration&) = delete;
    Registration& operator=(const Registration&) = delete;
    ~Registration() {
      if (source_ == nullptr) return;
      std::unique_lock lock(source_->mutex_);
      source_->callbacks_.erase(id_);
      source_->changed_.wait(lock, [this] { return !source_->running_callbacks_; });
    }

   private:
    CancelSource* source_;
    uint64_t id_;
  };

  [[nodiscard]] Registration OnCancel(std::function<void()> callback) {
    std::unique_lock lock(mutex_);
    if (cancelled_) {
      lock.unlock();
      callback();
      return Registration(nullptr, 0);
    }
    const uint64_t id = next_id_++;
    callbacks_.emplace(id, std::move(callback));
    return Registration(this, id);
  }

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool cancelled_ = false;
  bool running_callbacks_ = false;
  int waiters_ = 0;
  uint64_t next_id_ = 0;
  std::map<uint64_t, std::function<void()>> callbacks_;
};

}  // namespace nodemesh::cli
