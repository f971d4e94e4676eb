// The aggregator's notion of now, injectable so that tests place deltas at known seconds and
// move time forward without sleeping.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace nodemesh::aggregator {

using Clock = std::function<std::chrono::system_clock::time_point()>;

inline Clock SystemClock() {
  return [] { return std::chrono::system_clock::now(); };
}

inline int64_t UnixSeconds(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::seconds>(time.time_since_epoch()).count();
}

}  // namespace nodemesh::aggregator
