#include "common/metrics/histogram.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

namespace nodemesh::metrics {
namespace {

TEST_CASE("histogram: buckets tile the range without gaps or overlaps") {
  for (int bucket = 0; bucket + 1 < Histogram::kBuckets; ++bucket) {
    CAPTURE(bucket);
    REQUIRE(Histogram::UpperBound(bucket) == Histogram::LowerBound(bucket + 1));
    REQUIRE(Histogram::BucketOf(Histogram::LowerBound(bucket)) == bucket);
    REQUIRE(Histogram::BucketOf(Histogram::UpperBound(bucket) - 1) == bucket);
  }
  CHECK(Histogram::BucketOf(0) == 0);
  CHECK(Histogram::BucketOf(int64_t{120} * 1'000'000'000) == Histogram::kBuckets - 1);
}

TEST_CASE("histogram: every value from 1 us to 60 s is reported within 1.6 %") {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> exponent(3, std::log10(60e9));
  for (int i = 0; i < 200000; ++i) {
    const auto value = static_cast<int64_t>(std::pow(10, exponent(rng)));
    const int64_t reported = Histogram::Midpoint(Histogram::BucketOf(value));
    REQUIRE(std::abs(double(reported - value)) / double(value) <= 1.0 / 64 + 1e-12);
  }
}

TEST_CASE("histogram: quantiles of a known distribution are within the stated error") {
  Histogram histogram;
  // 1..10000 us, one each: the true p50 is 5000 us, p99 9900 us, p999 9990 us.
  for (int64_t us = 1; us <= 10000; ++us) histogram.Record(us * 1000);
  CHECK(histogram.count() == 10000);
  for (auto [q, truth] :
       {std::pair{0.5, 5000e3}, {0.99, 9900e3}, {0.999, 9990e3}, {1.0, 10000e3}}) {
    CAPTURE(q);
    CHECK(std::abs(double(histogram.Quantile(q)) - truth) / truth <= 0.02);
  }
  CHECK(histogram.sum_ns() == int64_t{10000} * 10001 / 2 * 1000);
}

TEST_CASE("histogram: merged shards equal one histogram of all values") {
  Histogram all, a, b;
  DeltaHistogram delta;
  std::mt19937_64 rng(3);
  std::lognormal_distribution<double> latency(13, 1.5);  // around 0.5 ms, long tail
  for (int i = 0; i < 50000; ++i) {
    const auto value = static_cast<int64_t>(latency(rng));
    all.Record(value);
    (i % 3 == 0 ? a : b).Record(value);
    if (i % 3 == 0) delta.Record(value);
  }
  Histogram merged;
  merged.Merge(a);
  merged.Merge(b);
  for (double q : {0.5, 0.9, 0.99, 0.999}) CHECK(merged.Quantile(q) == all.Quantile(q));
  CHECK(merged.count() == all.count());
  CHECK(merged.sum_ns() == all.sum_ns());
  // A delta's sparse buckets add up to the same thing.
  Histogram from_sparse;
  from_sparse.Add(delta.NonZero(), static_cast<uint64_t>(delta.sum_ns()));
  from_sparse.Merge(b);
  CHECK(from_sparse.Quantile(0.99) == all.Quantile(0.99));
}

TEST_CASE("histogram: CountAtOrBelow counts a bucket by its midpoint") {
  Histogram histogram;
  histogram.Record(900'000);    // 0.9 ms
  histogram.Record(1'100'000);  // 1.1 ms
  histogram.Record(5'000'000'000);
  CHECK(histogram.CountAtOrBelow(1'000'000) == 1);
  CHECK(histogram.CountAtOrBelow(2'000'000) == 2);
  CHECK(histogram.CountAtOrBelow(int64_t{60} * 1'000'000'000) == 3);
  CHECK(Histogram().Quantile(0.5) == 0);
}

}  // namespace
}  // namespace nodemesh::metrics
