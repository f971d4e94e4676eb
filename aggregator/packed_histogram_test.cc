#include "aggregator/packed_histogram.h"

#include <catch2/catch.hpp>
#include <random>

namespace nodemesh::aggregator {
namespace {

TEST_CASE("Packed histograms keep every bucket and merge by adding counts", "[unit]") {
  std::mt19937_64 random(7);
  metrics::Histogram a, b, both;
  std::lognormal_distribution<double> latency(13.0, 2.0);  // around 0.5 ms, wide
  for (int i = 0; i < 5000; ++i) {
    const auto value = static_cast<int64_t>(latency(random));
    (i % 3 == 0 ? a : b).Record(value);
    both.Record(value);
  }
  PackedHistogram packed_a = PackedHistogram::Pack(a.NonZero());
  const PackedHistogram packed_b = PackedHistogram::Pack(b.NonZero());
  CHECK(packed_a.Unpack() == a.NonZero());

  packed_a.Merge(packed_b);
  CHECK(packed_a.Unpack() == both.NonZero());

  metrics::Histogram unpacked;
  metrics::SparseBuckets scratch;
  packed_a.AddTo(&unpacked, &scratch);
  CHECK(unpacked.count() == both.count());
  for (double q : {0.5, 0.95, 0.99, 1.0}) CHECK(unpacked.Quantile(q) == both.Quantile(q));
}

TEST_CASE("Packing sorts, sums duplicates and skips what the layout cannot hold", "[unit]") {
  const PackedHistogram packed =
      PackedHistogram::Pack({{900, 1}, {3, 2}, {900, 4}, {70, 0}, {5000, 9}});
  CHECK(packed.Unpack() == metrics::SparseBuckets{{3, 2}, {900, 5}});
  CHECK(PackedHistogram::Pack({}).empty());
  PackedHistogram empty;
  empty.Merge(packed);
  CHECK(empty.Unpack() == packed.Unpack());
}

TEST_CASE("Merging packs exactly the union: interleaved, shared and leading buckets", "[unit]") {
  std::mt19937_64 random(11);
  for (int round = 0; round < 200; ++round) {
    metrics::SparseBuckets a, b;
    for (int i = static_cast<int>(random() % 8); i > 0; --i) {
      a.emplace_back(random() % metrics::Histogram::kBuckets, 1 + random() % 1000);
    }
    for (int i = static_cast<int>(random() % 8); i > 0; --i) {
      b.emplace_back(random() % metrics::Histogram::kBuckets, 1 + random() % 100'000);
    }
    metrics::SparseBuckets both = a;
    both.insert(both.end(), b.begin(), b.end());
    PackedHistogram merged = PackedHistogram::Pack(a);
    merged.Merge(PackedHistogram::Pack(b));
    CHECK(merged.Unpack() == PackedHistogram::Pack(both).Unpack());
  }
}

}  // namespace
}  // namespace nodemesh::aggregator
