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

// The (bucket, count) pairs of packed bytes, in order, one at a time.
class BucketReader {
 public:
  explicit BucketReader(const std::string& bytes) : bytes_(bytes) { Next(); }
  bool done() const { return done_; }
  uint16_t bucket() const { return static_cast<uint16_t>(bucket_); }
  uint64_t count() const { return count_; }
  void Next() {
    uint64_t gap = 0;
    if (!GetVarint(bytes_, &position_, &gap) || !GetVarint(bytes_, &position_, &count_)) {
      done_ = true;
      return;
    }
    bucket_ = first_ ? gap : bucket_ + gap;
    first_ = false;
  }

 private:
  const std::string& bytes_;
  size_t position_ = 0;
  uint64_t bucket_ = 0;
  uint64_t count_ = 0;
  bool first_ = true;
  bool done_ = false;
};

template <typename Visit>
void ForEachBucket(const std::string& bytes, Visit visit) {
  for (BucketReader reader(bytes); !reader.done(); reader.Next()) {
    visit(reader.bucket(), reader.count());
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
  // Both are ascending by bucket: one pass over the two, as a merge of sorted lists, with no
  // unpacking and no sort (the store merges every series of every delta twice: into its
  // second and its minute).
  BucketReader mine(bytes_), theirs(other.bytes_);
  std::string merged;
  merged.reserve(bytes_.size() + other.bytes_.size());
  uint16_t previous = 0;
  bool first = true;
  while (!mine.done() || !theirs.done()) {
    uint16_t bucket;
    uint64_t count = 0;
    if (theirs.done() || (!mine.done() && mine.bucket() < theirs.bucket())) {
      bucket = mine.bucket();
      count = mine.count();
      mine.Next();
    } else if (mine.done() || theirs.bucket() < mine.bucket()) {
      bucket = theirs.bucket();
      count = theirs.count();
      theirs.Next();
    } else {
      bucket = mine.bucket();
      count = mine.count() + theirs.count();
      mine.Next();
      theirs.Next();
    }
    PutVarint(first ? bucket : bucket - previous, &merged);
    PutVarint(count, &merged);
    previous = bucket;
    first = false;
  }
  bytes_ = std::move(merged);
}

}  // namespace nodemesh::aggregator
