// Replacements of the global allocation functions for the binaries that count allocations
// (see allocation_counter.h); compiled into those binaries only.
#include "test/lib/allocation_counter.h"

#if NODEMESH_COUNT_ALLOCATIONS
namespace nodemesh::testing {
std::atomic<uint64_t> allocations{0};
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
