#include "common/metrics/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace nodemesh::metrics {
namespace {

constexpr int kExactBuckets = 64;  // 0..63 ns, one bucket each
constexpr int kSubBucketBits = 5;  // log2(kSubBuckets)
constexpr int kFirstOctave = 6;    // 64 = 2^6

}  // namespace

template <typename Count>
int BasicHistogram<Count>::BucketOf(int64_t value_ns) {
  if (value_ns < kExactBuckets) return static_cast<int>(value_ns < 0 ? 0 : value_ns);
  if (value_ns >= kMaxTrackedNs) return kBuckets - 1;
  const int octave = 63 - std::countl_zero(static_cast<uint64_t>(value_ns));
  const int shift = octave - kSubBucketBits;
  const int sub = static_cast<int>(value_ns >> shift) - kSubBuckets;
  return kExactBuckets + (octave - kFirstOctave) * kSubBuckets + sub;
}

template <typename Count>
int64_t BasicHistogram<Count>::LowerBound(int bucket) {
  if (bucket < kExactBuckets) return bucket;
  const int octave = (bucket - kExactBuckets) / kSubBuckets + kFirstOctave;
  const int sub = (bucket - kExactBuckets) % kSubBuckets;
  return int64_t{kSubBuckets + sub} << (octave - kSubBucketBits);
}

template <typename Count>
int64_t BasicHistogram<Count>::UpperBound(int bucket) {
  if (bucket < kExactBuckets) return bucket + 1;
  const int octave = (bucket - kExactBuckets) / kSubBuckets + kFirstOctave;
  return LowerBound(bucket) + (int64_t{1} << (octave - kSubBucketBits));
}

template <typename Count>
void BasicHistogram<Count>::Add(const std::vector<std::pair<uint16_t, uint64_t>>& buckets,
                                uint64_t sum_ns) {
  for (const auto& [bucket, count] : buckets) {
    if (bucket >= kBuckets) continue;
    counts_[bucket] += static_cast<Count>(count);
    count_ += count;
  }
  sum_ns_ += static_cast<int64_t>(sum_ns);
}

template <typename Count>
int64_t BasicHistogram<Count>::Quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // Nearest rank: the smallest value with at least ceil(q * n) values at or below it.
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(std::ceil(q * double(count_))));
  uint64_t seen = 0;
  for (int bucket = 0; bucket < kBuckets; ++bucket) {
    seen += counts_[static_cast<size_t>(bucket)];
    if (seen >= rank) return Midpoint(bucket);
  }
  return Midpoint(kBuckets - 1);
}

template <typename Count>
uint64_t BasicHistogram<Count>::CountAtOrBelow(int64_t limit_ns) const {
  uint64_t total = 0;
  for (int bucket = 0; bucket < kBuckets && Midpoint(bucket) <= limit_ns; ++bucket) {
    total += counts_[static_cast<size_t>(bucket)];
  }
  return total;
}

template <typename Count>
std::vector<std::pair<uint16_t, uint64_t>> BasicHistogram<Count>::NonZero() const {
  std::vector<std::pair<uint16_t, uint64_t>> out;
  for (int bucket = 0; bucket < kBuckets; ++bucket) {
    if (counts_[static_cast<size_t>(bucket)] != 0) {
      out.emplace_back(static_cast<uint16_t>(bucket), counts_[static_cast<size_t>(bucket)]);
    }
  }
  return out;
}

template class BasicHistogram<uint64_t>;
template class BasicHistogram<uint32_t>;

}  // namespace nodemesh::metrics
