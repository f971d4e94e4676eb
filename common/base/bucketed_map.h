// An immutable-by-sharing map for large collections that change a little at a time (the
// cluster's Services, their cluster IPs): its entries are spread over a fixed number of
// buckets held by shared pointers, so a copy costs the bucket array, and changing one key
// copies that key's bucket only. Versions of one map share the buckets neither changed:
// a new version is O(buckets + entries / buckets) to make, whatever the map's size.
//
// Not thread-safe as an object: one thread changes its own copy, then hands copies over (an
// atomic shared pointer, a queue). A copy handed over never changes, so any thread may read
// it while the owner goes on changing its own.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"

namespace nodemesh {

template <typename Key, typename Value>
class BucketedMap {
 public:
  static constexpr size_t kBuckets = 256;
  using Bucket = absl::flat_hash_map<Key, Value>;

  const Value* Find(const Key& key) const {
    const Bucket& bucket = *(*buckets_)[BucketOf(key)];
    const auto it = bucket.find(key);
    return it == bucket.end() ? nullptr : &it->second;
  }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // Sets `key` to `value`, copying its bucket (and the bucket array) if shared.
  void Set(const Key& key, Value value) {
    Bucket& bucket = Own(BucketOf(key));
    const auto [it, inserted] = bucket.insert_or_assign(key, std::move(value));
    if (inserted) ++size_;
  }
  // Removes `key`; returns whether it was there.
  bool Erase(const Key& key) {
    const size_t index = BucketOf(key);
    if (!(*buckets_)[index]->contains(key)) return false;
    Own(index).erase(key);
    --size_;
    return true;
  }

  // Calls `visit(key, value)` for every entry, in no particular order.
  template <typename Visit>
  void ForEach(Visit visit) const {
    for (const auto& bucket : *buckets_) {
      for (const auto& [key, value] : *bucket) visit(key, value);
    }
  }

  // Calls `changed(key, before, after)` for every key whose value differs between `before`
  // and `after` (nullptr where a side does not hold it). Buckets the two versions share are
  // skipped: the cost follows what changed, not the size of the map.
  template <typename Changed>
  static void Diff(const BucketedMap& before, const BucketedMap& after, Changed changed) {
    if (before.buckets_ == after.buckets_) return;
    for (size_t i = 0; i < kBuckets; ++i) {
      const Bucket& old_bucket = *(*before.buckets_)[i];
      const Bucket& new_bucket = *(*after.buckets_)[i];
      if (&old_bucket == &new_bucket) continue;
      for (const auto& [key, value] : old_bucket) {
        const auto it = new_bucket.find(key);
        if (it == new_bucket.end()) {
          changed(key, &value, nullptr);
        } else if (!(it->second == value)) {
          changed(key, &value, &it->second);
        }
      }
      for (const auto& [key, value] : new_bucket) {
        if (!old_bucket.contains(key)) changed(key, nullptr, &value);
      }
    }
  }

  bool operator==(const BucketedMap& other) const {
    if (buckets_ == other.buckets_) return true;
    if (size_ != other.size_) return false;
    for (size_t i = 0; i < kBuckets; ++i) {
      const auto& mine = (*buckets_)[i];
      const auto& theirs = (*other.buckets_)[i];
      if (mine != theirs && !(*mine == *theirs)) return false;
    }
    return true;
  }

 private:
  using Buckets = std::array<std::shared_ptr<Bucket>, kBuckets>;

  static std::shared_ptr<Buckets> EmptyBuckets() {
    static const std::shared_ptr<Bucket> empty = std::make_shared<Bucket>();
    auto buckets = std::make_shared<Buckets>();
    buckets->fill(empty);
    return buckets;
  }
  // The top bits of the hash: the buckets' own tables use the low ones.
  static size_t BucketOf(const Key& key) {
    return static_cast<size_t>(static_cast<uint64_t>(absl::Hash<Key>{}(key)) >> 56) % kBuckets;
  }
  // The bucket at `index`, this map's own. A use count of 1 means no other copy holds it,
  // and none can get it but from this object: it may be changed in place.
  Bucket& Own(size_t index) {
    if (buckets_.use_count() > 1) buckets_ = std::make_shared<Buckets>(*buckets_);
    std::shared_ptr<Bucket>& bucket = (*buckets_)[index];
    if (bucket.use_count() > 1) bucket = std::make_shared<Bucket>(*bucket);
    return *bucket;
  }

  std::shared_ptr<Buckets> buckets_ = EmptyBuckets();
  size_t size_ = 0;
};

}  // namespace nodemesh
