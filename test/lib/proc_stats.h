// What /proc says about a process, for tests and benchmarks that watch one: its memory, its
// descriptors, its CPU time, its open files limit, and its start time. Each reads the
// process's files once; a process that is gone reads as 0 (or nullopt).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nodemesh::testing {

// A value in KiB of /proc/<pid>/status ("VmRSS": resident now, "VmHWM": the peak); 0 if it
// cannot be read.
uint64_t StatusKiB(pid_t pid, std::string_view key);

// Descriptors the process holds now (entries of /proc/<pid>/fd).
size_t DescriptorCount(pid_t pid);

// CPU time of the process, all its threads, user and system, in seconds (/proc/<pid>/stat).
double ProcessCpuSeconds(pid_t pid);

// "Max open files" of /proc/<pid>/limits: the soft limit (0 if unreadable), and both as
// "SOFT (hard HARD)" for a report ("?" if unreadable).
uint64_t SoftFileLimit(pid_t pid);
std::string FileLimit(pid_t pid);

// Field 22 of /proc/<pid>/stat, the start time in clock ticks: with the pid, it names one
// process across pid reuse.
std::optional<unsigned long long> ProcessStartTime(pid_t pid);

}  // namespace nodemesh::testing
