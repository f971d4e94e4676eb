// Counts every allocation of the test binary that includes this header (from exactly one of
// its files): it replaces the global operator new and delete. Under AddressSanitizer, whose
// runtime owns the allocation functions, nothing is replaced and NODEMESH_COUNT_ALLOCATIONS
// is 0, so that tests leave their allocation checks out there.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__)
#define NODEMESH_COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NODEMESH_COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef NODEMESH_COUNT_ALLOCATIONS
#define NODEMESH_COUNT_ALLOCATIONS 1
#endif

#if NODEMESH_COUNT_ALLOCATIONS
namespace nodemesh::testing {
inline std::atomic<uint64_t> allocations{0};
}  // namespace nodemesh::testing

// The plain forms suffice: the code under test allocates nothing over-aligned. GCC sees
// malloc's memory reach free through inlined new/delete and takes it for a mismatch; with
// these replacements it is the matching pair.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  nodemesh::testing::allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#endif  // NODEMESH_COUNT_ALLOCATIONS
