// Latency histogram with log-linear buckets: exact below 64 ns, then 32 linear buckets per
// power of two up to 2^36 ns (68.7 s). A bucket spans at most 1/32 of its lower bound, and a
// value is reported as its bucket's midpoint, so any percentile is within 1/64 (1.6 %) of
// the true value from 1 us to 60 s. Histograms with this layout merge by adding counts,
// which is how agents' shards and the aggregator's windows combine them: percentiles come
// from merged histograms, never from averaged percentiles.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace nodemesh::metrics {

template <typename Count>
class BasicHistogram {
 public:
  static constexpr int kSubBuckets = 32;  // per power of two
  static constexpr int kBuckets = 1024;
  static constexpr int64_t kMaxTrackedNs = int64_t{1} << 36;

  static int BucketOf(int64_t value_ns);
  static int64_t LowerBound(int bucket);
  static int64_t UpperBound(int bucket);  // exclusive
  static int64_t Midpoint(int bucket) { return (LowerBound(bucket) + UpperBound(bucket)) / 2; }

  void Record(int64_t value_ns) {
    if (value_ns < 0) value_ns = 0;
    ++counts_[static_cast<size_t>(BucketOf(value_ns))];
    ++count_;
    sum_ns_ += value_ns;
  }
  template <typename OtherCount>
  void Merge(const BasicHistogram<OtherCount>& other) {
    for (int i = 0; i < kBuckets; ++i)
      counts_[static_cast<size_t>(i)] += static_cast<Count>(other.bucket_count(i));
    count_ += other.count();
    sum_ns_ += other.sum_ns();
  }
  // Adds a sparse delta (as made by NonZero()).
  void Add(const std::vector<std::pair<uint16_t, uint64_t>>& buckets, uint64_t sum_ns);

  uint64_t count() const { return count_; }
  int64_t sum_ns() const { return sum_ns_; }
  uint64_t bucket_count(int bucket) const { return counts_[static_cast<size_t>(bucket)]; }
  // The value at quantile q in [0, 1] (nearest rank), as its bucket's midpoint; 0 if empty.
  int64_t Quantile(double q) const;
  // Recorded values <= `limit_ns`, counting a bucket in when its midpoint is within.
  uint64_t CountAtOrBelow(int64_t limit_ns) const;
  // The buckets that hold values, for compact transfer.
  std::vector<std::pair<uint16_t, uint64_t>> NonZero() const;
  bool empty() const { return count_ == 0; }
  void Clear() { *this = BasicHistogram(); }

 private:
  std::array<Count, kBuckets> counts_{};
  uint64_t count_ = 0;
  int64_t sum_ns_ = 0;
};

// Cumulative totals.
using Histogram = BasicHistogram<uint64_t>;
// What one worker records between two collections (a second): half the memory, and a
// second cannot overflow 32 bits.
using DeltaHistogram = BasicHistogram<uint32_t>;

extern template class BasicHistogram<uint64_t>;
extern template class BasicHistogram<uint32_t>;

}  // namespace nodemesh::metrics
