// Child processes for kernel and end-to-end tests: real servers and clients started
// (optionally) inside a pod's cgroup and network namespace, with their output captured
// so a failing test can show it.
//
// A Process owns its child: the destructor stops it (SIGTERM, then SIGKILL after a grace
// period) and reaps it, so a test that fails or throws leaves no process and no zombie
// behind. Only the child's own pid is ever signalled. Not thread-safe: use one Process
// from one thread at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nodemesh::testing {

// How a child ended.
struct ExitStatus {
  int code = 0;    // the exit code, or 128 + signal as a shell reports it
  int signal = 0;  // the signal that ended it, or 0

  bool ok() const { return signal == 0 && code == 0; }
  std::string ToString() const;  // "exit 3", "signal 9 (SIGKILL)"
};

enum class ProcessOutput {
  kCapture,  // stdout and stderr go to one anonymous temp file, read with output()
  kInherit,  // stdout and stderr are the test's own
};

// How a Process is started. Every member has a default, so designated initializers may
// name any subset: Process({"sleep", "9"}, {.cwd = "/tmp"}).
struct ProcessOptions {
  // Added to the test's environment (a name already set is replaced).
  std::vector<std::pair<std::string, std::string>> env{};
  std::string cwd{};  // empty: the test's working directory
  ProcessOutput output = ProcessOutput::kCapture;
  // An absolute cgroup v2 directory the child joins first, while it still sees the
  // host's /sys (docs/ARCHITECTURE.md section 8, simulated nodes).
  std::string cgroup_dir{};
  // A network namespace file (/var/run/netns/<name>) the child enters with setns()
  // after joining the cgroup. Unlike `ip netns exec`, /sys is not remounted.
  std::string netns_path{};
  // Bind-mounted over /etc/hosts in a private mount namespace of the child, so names
  // resolve as in that pod (what `ip netns exec` does with /etc/netns/<name>/hosts).
  std::string hosts_file{};
  // The child gets SIGKILL when the thread that started it exits, so a test killed by a
  // timeout does not leave servers running. Turn off for processes started from a
  // thread that ends before them.
  bool die_with_parent = true;
  // How long the destructor waits after SIGTERM before SIGKILL.
  std::chrono::milliseconds kill_grace{2000};
};

class Process {
 public:
  using Output = ProcessOutput;
  using Options = ProcessOptions;

  // Starts argv[0] (searched in PATH, or the env's PATH if Options::env sets one) and
  // returns once it has been exec'd. Throws std::runtime_error, with the step that
  // failed and errno text, if it cannot be started.
  explicit Process(std::vector<std::string> argv, Options options = {});
  ~Process();

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  // The command line, for messages.
  const std::string& command() const { return command_; }

  bool IsRunning();
  // Waits up to `timeout` for the child to end and reaps it. nullopt if it still runs.
  std::optional<ExitStatus> Wait(std::chrono::milliseconds timeout);
  // Sends `signal` unless the child has already been reaped. True if it was sent.
  bool Signal(int signal);
  // SIGTERM, then SIGKILL if it is still running after `grace`; reaps the child.
  // nullopt only if it survived SIGKILL for 30 s (stuck in the kernel).
  std::optional<ExitStatus> Kill(std::chrono::milliseconds grace = std::chrono::seconds(2));

  // Everything the child wrote to stdout and stderr so far (empty with Output::kInherit).
  std::string output() const;
  // Polls output() until it contains `needle`, for at most `timeout`.
  bool WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout);

 private:
  void Reset() noexcept;  // stops and reaps the child, closes descriptors
  void Reaped(int wait_status);

  pid_t pid_ = -1;
  int pidfd_ = -1;  // readable once the child has exited
  int output_fd_ = -1;
  std::optional<ExitStatus> status_;  // set once reaped
  std::chrono::milliseconds kill_grace_{2000};
  std::string command_;
};

struct CommandResult {
  int exit_code = -1;  // 128 + signal if killed; -1 if it timed out
  bool timed_out = false;
  std::string output;  // stdout and stderr
};

// Runs a short command to completion. On timeout it is killed and timed_out is set.
CommandResult RunCommand(std::vector<std::string> argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30),
                         Process::Options options = {});

// The end of a process's output, for exception messages: enough to see why it failed.
std::string Tail(const std::string& text, size_t max_bytes = 8192);

// Calls `condition` every `interval` until it returns true or `timeout` has passed; the
// bounded replacement for sleeping in tests. Returns the last result.
bool PollUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds interval = std::chrono::milliseconds(20));

}  // namespace nodemesh::testing
