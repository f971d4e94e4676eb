// The descriptor limit (endurance.h): the connections of a concurrency round fitted to the
// agent's open files limit, and the concurrency run past that limit (--beyond-file-limit),
// reported as what the agent does there.
#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "bench/endurance/endurance.h"
#include "test/lib/files.h"
#include "test/lib/proc_stats.h"

namespace nodemesh::testing::endurance {

using Json = nlohmann::json;

void RaiseFileLimit(uint64_t wanted) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  const uint64_t ceiling = std::stoull(ReadFile("/proc/sys/fs/nr_open"));
  const uint64_t target = std::min<uint64_t>(std::max<uint64_t>(wanted, limit.rlim_max), ceiling);
  rlimit raised{.rlim_cur = target, .rlim_max = target};
  if (setrlimit(RLIMIT_NOFILE, &raised) == 0) return;
  fmt::print("cannot raise the hard open files limit from {} to {} ({}): kept\n", limit.rlim_max,
             target, std::strerror(errno));
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

uint64_t ConnectionsThatFit(const Settings& settings, const AgentProcess& agent, pid_t agent_pid) {
  // Two of the agent's descriptors per connection, on top of what it holds idle (and a
  // margin for the admin API and what a worker opens meanwhile): more connections than that
  // would test the limit, not the agent.
  WaitUntilIdle(agent);
  constexpr uint64_t kDescriptorMargin = 64;
  const uint64_t agent_limit = SoftFileLimit(agent_pid);
  const uint64_t idle_fds = DescriptorCount(agent_pid);
  const uint64_t fitting = agent_limit > idle_fds + kDescriptorMargin
                               ? (agent_limit - idle_fds - kDescriptorMargin) / 2
                               : 0;
  uint64_t n = static_cast<uint64_t>(settings.connections);
  if (n > fitting && !settings.beyond_file_limit) {
    fmt::print(
        "NOTE: {} connections need {} of the agent's descriptors; its limit is {} and it holds "
        "{} idle: running {} connections, the most that fit\n",
        n, 2 * n + idle_fds, agent_limit, idle_fds, fitting);
    n = fitting;
  }
  std::fflush(stdout);
  return n;
}

void ReportAtDescriptorLimit(const AgentProcess& agent, pid_t agent_pid, double agent_cpu_before,
                             double open_seconds, size_t descriptors) {
  // The admin API needs a descriptor of its own to answer: it may not.
  const std::optional<Json> stats = agent.TryGet("/stats");
  const std::string log = agent.output();
  fmt::print(
      "opening took the agent {:.1f} s of CPU in {:.1f} s; {} descriptors; /stats {}; its "
      "log: {} lines naming a failed accept, {:.1f} MiB\n",
      ProcessCpuSeconds(agent_pid) - agent_cpu_before, open_seconds, descriptors,
      stats ? fmt::format("accept_errors {}", (*stats)["proxy"]["accept_errors"].dump())
            : std::string("did not answer"),
      CountLinesWith(log, ": cannot accept connections") + CountLinesWith(log, ": accept in "),
      static_cast<double>(log.size()) / (1 << 20));
  std::fflush(stdout);
}

}  // namespace nodemesh::testing::endurance
