#include "aggregator/packed_histogram.h"

#include <algorithm>

namespace nodemesh::aggregator {
namespace {

void PutVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

// Reads one varint at `*position`; false at the end or on a truncated varint (which Pack
// never writes).
bool GetVarint(const std::string& in, size_t* position, uint64_t* value) {
  uint64_t result = 0;
  for (int shift = 0; shift < 64 && *position < in.size(); shift += 7) {
    const auto byte = static_cast<uint8_t>(in[(*position)++]);
    result |= uint64_t{byte & 0x7fu} << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

template <typename Visit>
void ForEachBucket(const std::string& bytes, Visit visit) {
  size_t position = 0;
  uint64_t bucket = 0, gap = 0, count = 0;
  bool first = true;
  while (GetVarint(bytes, &position, &gap) && GetVarint(bytes, &position, &count)) {
    bucket = first ? gap : bucket + gap;
    first = false;
    visit(static_cast<uint16_t>(bucket), count);
  }
}

}  // namespace

PackedHistogram PackedHistogram::Pack(metrics::SparseBuckets buckets) {
  std::sort(buckets.begin(), buckets.end());
  PackedHistogram packed;
  bool first = true;
  uint16_t previous = 0;
  for (size_t i = 0; i < buckets.size();) {
    const uint16_t bucket = buckets[i].first;
    uint64_t count = 0;
    for (; i < buckets.size() && buckets[i].first == bucket; ++i) count += buckets[i].second;
    if (bucket >= metrics::Histogram::kBuckets || count == 0) continue;
    PutVarint(first ? bucket : bucket - previous, &packed.bytes_);
    PutVarint(count, &packed.bytes_);
    previous = bucket;
    first = false;
  }
  return packed;
}

metrics::SparseBuckets PackedHistogram::Unpack() const {
  metrics::SparseBuckets out;
  ForEachBucket(bytes_, [&](uint16_t bucket, uint64_t count) { out.emplace_back(bucket, count); });
  return out;
}

void PackedHistogram::AddTo(metrics::Histogram* histogram, metrics::SparseBuckets* scratch) const {
  scratch->clear();
  ForEachBucket(bytes_,
                [&](uint16_t bucket, uint64_t count) { scratch->emplace_back(bucket, count); });
  histogram->Add(*scratch, 0);
}

void PackedHistogram::Merge(const PackedHistogram& other) {
  if (other.empty()) return;
  if (empty()) {
    bytes_ = other.bytes_;
    return;
  }
  metrics::SparseBuckets both = Unpack();
  ForEachBucket(other.bytes_,
                [&](uint16_t bucket, uint64_t count) { both.emplace_back(bucket, count); });
  *this = Pack(std::move(both));
}

}  // namespace nodemesh::aggregator
