// Values (identities, routes) interned as small integers, so that an hour of per-second series
// stores a few integers per key instead of strings. Each value remembers the newest second
// that referred to it; values no retained second refers to are forgotten and their ids
// reused, so churn (pods coming and going) does not grow the table without bound.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace nodemesh::aggregator {

template <typename Value>
class Interner {
 public:
  using Id = uint32_t;

  // Interns every value of `values` under one lock (one delta's table at a time), marking
  // each used at `second`. Fails (returns false) when the table would exceed `max_size`;
  // the ids of the values interned so far stay valid.
  template <typename Range, typename Convert>
  bool InternAll(const Range& values, Convert convert, int64_t second, size_t max_size,
                 std::vector<Id>* ids) {
    std::lock_guard lock(mutex_);
    ids->clear();
    for (const auto& source : values) {
      Value value = convert(source);
      const auto found = ids_.find(value);
      if (found != ids_.end()) {
        Entry& entry = entries_[found->second];
        if (entry.last_used < second) entry.last_used = second;
        ids->push_back(found->second);
        continue;
      }
      if (ids_.size() >= max_size) return false;
      Id id;
      if (!free_.empty()) {
        id = free_.back();
        free_.pop_back();
        entries_[id] = Entry{value, second, true};
      } else {
        id = static_cast<Id>(entries_.size());
        entries_.push_back(Entry{value, second, true});
      }
      ids_.emplace(std::move(value), id);
      ids->push_back(id);
    }
    return true;
  }

  std::optional<Value> Get(Id id) const {
    std::lock_guard lock(mutex_);
    if (id >= entries_.size() || !entries_[id].live) return std::nullopt;
    return entries_[id].value;
  }

  // Forgets the values last used before `oldest_second`; returns how many.
  size_t ForgetUnusedBefore(int64_t oldest_second) {
    std::lock_guard lock(mutex_);
    size_t forgotten = 0;
    for (Id id = 0; id < entries_.size(); ++id) {
      Entry& entry = entries_[id];
      if (!entry.live || entry.last_used >= oldest_second) continue;
      ids_.erase(entry.value);
      entry = Entry{};
      free_.push_back(id);
      ++forgotten;
    }
    return forgotten;
  }

  size_t size() const {
    std::lock_guard lock(mutex_);
    return ids_.size();
  }

 private:
  struct Entry {
    Value value{};
    int64_t last_used = 0;
    bool live = false;
  };
  mutable std::mutex mutex_;
  absl::flat_hash_map<Value, Id> ids_;
  std::vector<Entry> entries_;
  std::vector<Id> free_;
};

}  // namespace nodemesh::aggregator
