#include "test/lib/proc_stats.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "test/lib/files.h"

namespace nodemesh::testing {
namespace {

// The fields of /proc/<pid>/stat after the parenthesised command name (which may hold
// spaces): the first is field 3, the state.
std::istringstream StatFieldsFromThird(pid_t pid) {
  const std::string stat = ReadFile(fmt::format("/proc/{}/stat", pid));
  const size_t comm_end = stat.rfind(')');
  return std::istringstream(comm_end == std::string::npos ? "" : stat.substr(comm_end + 1));
}

// The line of /proc/<pid>/limits for the open files limit, after its name; "" if none.
std::string OpenFilesLimits(pid_t pid) {
  std::ifstream limits(fmt::format("/proc/{}/limits", pid));
  constexpr std::string_view kName = "Max open files";
  for (std::string line; std::getline(limits, line);) {
    if (line.starts_with(kName)) return line.substr(kName.size());
  }
  return "";
}

}  // namespace

uint64_t StatusKiB(pid_t pid, std::string_view key) {
  std::ifstream status(fmt::format("/proc/{}/status", pid));
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with(key) && line.size() > key.size() && line[key.size()] == ':') {
      std::istringstream fields(line.substr(key.size() + 1));
      uint64_t kib = 0;
      fields >> kib;
      return kib;
    }
  }
  return 0;
}

size_t DescriptorCount(pid_t pid) {
  std::error_code error;
  size_t count = 0;
  for (auto it = std::filesystem::directory_iterator(fmt::format("/proc/{}/fd", pid), error);
       !error && it != std::filesystem::directory_iterator(); it.increment(error)) {
    ++count;
  }
  return count;
}

double ProcessCpuSeconds(pid_t pid) {
  // utime and stime are fields 14 and 15.
  std::istringstream fields = StatFieldsFromThird(pid);
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int index = 3; index < 14; ++index) fields >> field;
  fields >> utime >> stime;
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

uint64_t SoftFileLimit(pid_t pid) {
  return std::strtoull(OpenFilesLimits(pid).c_str(), nullptr, 10);
}

std::string FileLimit(pid_t pid) {
  std::istringstream fields(OpenFilesLimits(pid));
  std::string soft, hard;
  if (!(fields >> soft >> hard)) return "?";
  return soft + " (hard " + hard + ")";
}

std::optional<unsigned long long> ProcessStartTime(pid_t pid) {
  std::istringstream fields = StatFieldsFromThird(pid);
  std::string field;
  for (int index = 3; index <= 22 && fields >> field; ++index) {
    if (index == 22) return std::stoull(field);
  }
  return std::nullopt;
}

}  // namespace nodemesh::testing
