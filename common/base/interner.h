// Values (identities, routes) interned as small integers, so that metric keys hold a few
// integers instead of strings. Each value keeps a stamp, the largest its users marked it
// with (the aggregator: the newest second that refers to it); values their owner no longer
// needs are forgotten and their ids given out again, so churn (pods coming and going) does
// not grow the table without bound. Thread-safe.
#pragma once

#include <cstdint>
#include <limits>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace nodemesh {

template <typename Value>
class Interner {
 public:
  using Id = uint32_t;
  static constexpr size_t kUnbounded = std::numeric_limits<size_t>::max();

  // The id of `value`, marked used at `stamp`; nullopt when the table holds `max_size`
  // values already.
  std::optional<Id> Intern(const Value& value, int64_t stamp = 0, size_t max_size = kUnbounded) {
    std::lock_guard lock(mutex_);
    return InternLocked(value, stamp, max_size);
  }

  // Interns every value of `values` (converted by `convert`) under one lock, marking each
  // used at `stamp`. Fails (returns false) when the table would exceed `max_size`; the ids
  // of the values interned so far, in `ids`, stay valid.
  template <typename Range, typename Convert>
  bool InternAll(const Range& values, Convert convert, int64_t stamp, size_t max_size,
                 std::vector<Id>* ids) {
    std::lock_guard lock(mutex_);
    ids->clear();
    for (const auto& source : values) {
      const std::optional<Id> id = InternLocked(convert(source), stamp, max_size);
      if (!id) return false;
      ids->push_back(*id);
    }
    return true;
  }

  std::optional<Value> Get(Id id) const {
    std::lock_guard lock(mutex_);
    if (id >= entries_.size() || !entries_[id].live) return std::nullopt;
    return entries_[id].value;
  }

  // Forgets every value for which `forget(id, stamp)` is true; returns their ids.
  template <typename Predicate>
  std::vector<Id> ForgetIf(Predicate forget) {
    std::lock_guard lock(mutex_);
    std::vector<Id> forgotten;
    for (Id id = 0; id < entries_.size(); ++id) {
      Entry& entry = entries_[id];
      if (!entry.live || !forget(id, entry.stamp)) continue;
      ids_.erase(entry.value);
      entry = Entry{};
      free_.push_back(id);
      forgotten.push_back(id);
    }
    return forgotten;
  }

  // Forgets the values last marked before `oldest_stamp`; returns how many.
  size_t ForgetUnusedBefore(int64_t oldest_stamp) {
    return ForgetIf([oldest_stamp](Id, int64_t stamp) { return stamp < oldest_stamp; }).size();
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return ids_.size();
  }

 private:
  struct Entry {
    Value value{};
    int64_t stamp = 0;
    bool live = false;
  };

  std::optional<Id> InternLocked(const Value& value, int64_t stamp, size_t max_size) {
    const auto found = ids_.find(value);
    if (found != ids_.end()) {
      Entry& entry = entries_[found->second];
      if (entry.stamp < stamp) entry.stamp = stamp;
      return found->second;
    }
    if (ids_.size() >= max_size) return std::nullopt;
    Id id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
      entries_[id] = Entry{value, stamp, true};
    } else {
      id = static_cast<Id>(entries_.size());
      entries_.push_back(Entry{value, stamp, true});
    }
    ids_.emplace(value, id);
    return id;
  }

  mutable std::mutex mutex_;
  absl::flat_hash_map<Value, Id> ids_;
  std::vector<Entry> entries_;
  std::vector<Id> free_;
};

}  // namespace nodemesh
