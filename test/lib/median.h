// The median of a benchmark's rounds, which one busy spell of the machine cannot move.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace nodemesh::testing {

// The middle value of `values` (not empty), or the mean of the two middle ones.
template <typename T>
T Median(std::vector<T> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

}  // namespace nodemesh::testing
