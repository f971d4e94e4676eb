// A counter one thread writes and any thread reads (the admin API, the metrics collector):
// a relaxed load and store, with no locked instruction on the data path.
#pragma once

#include <atomic>
#include <cstdint>

namespace nodemesh::agent {

class Counter {
 public:
  void Add(uint64_t n = 1) {
    value_.store(value_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

}  // namespace nodemesh::agent
