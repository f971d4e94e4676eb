// One series' latency histogram for one second, packed: the non-empty buckets of the
// agents' log-linear layout (common/metrics/histogram.h) as varint pairs (gap from the previous
// bucket, count). A second of a busy series takes a few dozen bytes where the dense form
// takes 8 KiB, which is what makes an hour of per-second histograms affordable. Queries
// unpack into a metrics::Histogram and merge there.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/metrics/histogram.h"
#include "common/metrics/sample.h"

namespace nodemesh::aggregator {

class PackedHistogram {
 public:
  // From (bucket, count) pairs in any order, duplicates allowed; buckets outside the layout
  // and zero counts are skipped.
  static PackedHistogram Pack(metrics::SparseBuckets buckets);

  metrics::SparseBuckets Unpack() const;
  // Adds the counts into `histogram` (its sum is not touched); `scratch` is reused storage.
  void AddTo(metrics::Histogram* histogram, metrics::SparseBuckets* scratch) const;
  void Merge(const PackedHistogram& other);

  bool empty() const { return bytes_.empty(); }
  size_t memory_bytes() const { return bytes_.capacity() > 15 ? bytes_.capacity() : 0; }

 private:
  std::string bytes_;
};

}  // namespace nodemesh::aggregator
