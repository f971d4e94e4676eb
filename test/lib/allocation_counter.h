// Counts every allocation of a test binary that links allocation_counter.cc, which replaces
// the global operator new and delete. Under AddressSanitizer, whose runtime owns the
// allocation functions, nothing is replaced and NODEMESH_COUNT_ALLOCATIONS is 0, so that
// tests leave their allocation checks out there.
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
// Allocations since the binary started.
extern std::atomic<uint64_t> allocations;
}  // namespace nodemesh::testing
#endif
