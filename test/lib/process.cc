#include "test/lib/process.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace nodemesh::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Where `ip` and friends live when the test runs with a PATH that lacks the sbin dirs.
constexpr const char* kSystemPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The step at which a child failed before exec, reported to the parent over a pipe.
enum class ChildStep : int { kCgroup, kMountNamespace, kHostsFile, kNetns, kCwd, kStdio, kExec };

struct ChildError {
  ChildStep step;
  int error;
};

const char* Describe(ChildStep step) {
  switch (step) {
    case ChildStep::kCgroup:
      return "join cgroup";
    case ChildStep::kMountNamespace:
      return "create a private mount namespace";
    case ChildStep::kHostsFile:
      return "bind-mount the hosts file";
    case ChildStep::kNetns:
      return "enter network namespace";
    case ChildStep::kCwd:
      return "change directory";
    case ChildStep::kStdio:
      return "set up stdin/stdout/stderr";
    case ChildStep::kExec:
      return "exec";
  }
  return "start";
}

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    std::swap(fd_, other.fd_);
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

std::string JoinArgs(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& arg : argv) {
    if (!out.empty()) out += ' ';
    out += arg;
  }
  return out;
}

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// Resolved in the parent, so that the child only makes async-signal-safe calls and a
// missing program is a clear error instead of an exit code.
std::string FindExecutable(const std::string& name, const std::string& search_path) {
  if (name.find('/') != std::string::npos) return name;
  for (const std::string& path : {search_path, std::string(kSystemPath)}) {
    size_t begin = 0;
    while (begin <= path.size()) {
      size_t end = path.find(':', begin);
      if (end == std::string::npos) end = path.size();
      const std::string dir = end == begin ? "." : path.substr(begin, end - begin);
      const std::string candidate = dir + "/" + name;
      if (IsExecutableFile(candidate)) return candidate;
      begin = end + 1;
    }
  }
  throw std::runtime_error(fmt::format("{}: no such program in PATH={}", name, search_path));
}

std::vector<std::string> MergeEnvironment(
    const std::vector<std::pair<std::string, std::string>>& additions) {
  std::vector<std::string> merged;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view variable(*entry);
    const std::string_view name = variable.substr(0, variable.find('='));
    bool replaced = false;
    for (const auto& [added_name, value] : additions) replaced |= added_name == name;
    if (!replaced) merged.emplace_back(variable);
  }
  for (const auto& [name, value] : additions) merged.push_back(name + "=" + value);
  return merged;
}

std::vector<char*> PointersTo(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

int OpenOrThrow(const std::string& path, int flags, const char* what) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    throw std::runtime_error(
        fmt::format("cannot open {} {}: {}", what, path, std::strerror(errno)));
  }
  return fd;
}

// Everything the child needs, prepared before fork: between fork and exec a child of a
// multithreaded parent may only make async-signal-safe calls (no allocation, no locks).
struct ChildSetup {
  const char* executable;
  char** argv;
  char** envp;
  const char* cwd;         // or nullptr
  const char* hosts_file;  // or nullptr
  int cgroup_procs_fd;     // or -1
  int netns_fd;            // or -1
  int stdin_fd;
  int output_fd;  // or -1 to inherit
  int error_fd;
  bool die_with_parent;
  pid_t parent;
};

[[noreturn]] void ChildFail(const ChildSetup& setup, ChildStep step) {
  const ChildError error{step, errno};
  [[maybe_unused]] ssize_t written = ::write(setup.error_fd, &error, sizeof(error));
  ::_exit(127);
}

[[noreturn]] void RunChild(const ChildSetup& setup) {
  // A test runner may block or ignore signals (SIGPIPE in network code); a server under
  // test must start with the defaults.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &default_action, nullptr);

  if (setup.die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != setup.parent) ::_exit(127);  // the parent is already gone
  }
  // The cgroup first: writing 0 moves the writer itself.
  if (setup.cgroup_procs_fd >= 0 && ::write(setup.cgroup_procs_fd, "0", 1) != 1) {
    ChildFail(setup, ChildStep::kCgroup);
  }
  if (setup.hosts_file != nullptr) {
    // Slave propagation keeps the bind mount private to this child while host mounts
    // still show up in it, as `ip netns exec` does.
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
      ChildFail(setup, ChildStep::kMountNamespace);
    }
    if (::mount(setup.hosts_file, "/etc/hosts", nullptr, MS_BIND, nullptr) != 0) {
      ChildFail(setup, ChildStep::kHostsFile);
    }
  }
  if (setup.netns_fd >= 0 && ::setns(setup.netns_fd, CLONE_NEWNET) != 0) {
    ChildFail(setup, ChildStep::kNetns);
  }
  if (setup.cwd != nullptr && ::chdir(setup.cwd) != 0) ChildFail(setup, ChildStep::kCwd);
  if (::dup2(setup.stdin_fd, STDIN_FILENO) < 0) ChildFail(setup, ChildStep::kStdio);
  if (setup.output_fd >= 0 &&
      (::dup2(setup.output_fd, STDOUT_FILENO) < 0 || ::dup2(setup.output_fd, STDERR_FILENO) < 0)) {
    ChildFail(setup, ChildStep::kStdio);
  }
  // Descriptors the test opened without O_CLOEXEC (listening sockets, say) must not
  // leak into the child and keep ports or pipes open after the test closed them.
  ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  ::execve(setup.executable, setup.argv, setup.envp);
  ChildFail(setup, ChildStep::kExec);
}

}  // namespace

std::string ExitStatus::ToString() const {
  if (signal != 0) {
    const char* name = sigabbrev_np(signal);
    return fmt::format("signal {} (SIG{})", signal, name != nullptr ? name : "?");
  }
  return fmt::format("exit {}", code);
}

Process::Process(std::vector<std::string> argv, Options options)
    : kill_grace_(options.kill_grace), command_(JoinArgs(argv)) {
  if (argv.empty()) throw std::invalid_argument("Process: empty argv");

  std::string search_path = ::getenv("PATH") != nullptr ? ::getenv("PATH") : kSystemPath;
  for (const auto& [name, value] : options.env) {
    if (name == "PATH") search_path = value;
  }
  const std::string executable = FindExecutable(argv[0], search_path);
  std::vector<std::string> environment = MergeEnvironment(options.env);
  std::vector<char*> argv_pointers = PointersTo(argv);
  std::vector<char*> env_pointers = PointersTo(environment);

  Fd cgroup_procs;
  if (!options.cgroup_dir.empty()) {
    cgroup_procs =
        Fd(OpenOrThrow(options.cgroup_dir + "/cgroup.procs", O_WRONLY, "cgroup procs file"));
  }
  Fd netns;
  if (!options.netns_path.empty()) {
    netns = Fd(OpenOrThrow(options.netns_path, O_RDONLY, "network namespace"));
  }
  Fd dev_null(OpenOrThrow("/dev/null", O_RDONLY, "stdin"));
  Fd output;
  if (options.output == Output::kCapture) {
    output = Fd(::memfd_create("nodemesh-process-output", MFD_CLOEXEC));
    if (output.get() < 0) {
      throw std::runtime_error(fmt::format("memfd_create: {}", std::strerror(errno)));
    }
  }
  int error_pipe[2];
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) {
    throw std::runtime_error(fmt::format("pipe2: {}", std::strerror(errno)));
  }
  Fd error_read(error_pipe[0]);
  Fd error_write(error_pipe[1]);

  const ChildSetup setup{
      .executable = executable.c_str(),
      .argv = argv_pointers.data(),
      .envp = env_pointers.data(),
      .cwd = options.cwd.empty() ? nullptr : options.cwd.c_str(),
      .hosts_file = options.hosts_file.empty() ? nullptr : options.hosts_file.c_str(),
      .cgroup_procs_fd = cgroup_procs.get(),
      .netns_fd = netns.get(),
      .stdin_fd = dev_null.get(),
      .output_fd = output.get(),
      .error_fd = error_write.get(),
      .die_with_parent = options.die_with_parent,
      .parent = ::getpid(),
  };
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(fmt::format("fork: {}", std::strerror(errno)));
  if (pid == 0) RunChild(setup);

  pid_ = pid;
  output_fd_ = output.release();
  { Fd close_now(error_write.release()); }
  // EOF means the exec succeeded (the close-on-exec write end went away).
  ChildError error{};
  ssize_t got;
  do {
    got = ::read(error_read.get(), &error, sizeof(error));
  } while (got < 0 && errno == EINTR);
  if (got == static_cast<ssize_t>(sizeof(error))) {
    int ignored;
    while (::waitpid(pid_, &ignored, 0) < 0 && errno == EINTR) {
    }
    status_ = ExitStatus{.code = 127};
    ::close(output_fd_);
    output_fd_ = -1;
    throw std::runtime_error(fmt::format("cannot start `{}`: {}: {}", command_,
                                         Describe(error.step), std::strerror(error.error)));
  }
  // Close-on-exec by definition. Without one (kernels before 5.3) Wait() polls waitpid.
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
}

Process::~Process() { Reset(); }

Process::Process(Process&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::exchange(other.pidfd_, -1)),
      output_fd_(std::exchange(other.output_fd_, -1)),
      status_(std::exchange(other.status_, std::nullopt)),
      kill_grace_(other.kill_grace_),
      command_(std::move(other.command_)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    Reset();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::exchange(other.pidfd_, -1);
    output_fd_ = std::exchange(other.output_fd_, -1);
    status_ = std::exchange(other.status_, std::nullopt);
    kill_grace_ = other.kill_grace_;
    command_ = std::move(other.command_);
  }
  return *this;
}

void Process::Reset() noexcept {
  if (pid_ > 0 && !status_ && !Kill(kill_grace_)) {
    std::fprintf(stderr, "process: pid %d (%s) survived SIGKILL; left unreaped\n", pid_,
                 command_.c_str());
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  if (output_fd_ >= 0) ::close(output_fd_);
  pid_ = -1;
  pidfd_ = -1;
  output_fd_ = -1;
}

void Process::Reaped(int wait_status) {
  if (WIFSIGNALED(wait_status)) {
    status_ = ExitStatus{.code = 128 + WTERMSIG(wait_status), .signal = WTERMSIG(wait_status)};
  } else {
    status_ = ExitStatus{.code = WEXITSTATUS(wait_status)};
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  pidfd_ = -1;
}

bool Process::IsRunning() { return pid_ > 0 && !Wait(std::chrono::milliseconds(0)); }

std::optional<ExitStatus> Process::Wait(std::chrono::milliseconds timeout) {
  if (pid_ <= 0 || status_) return status_;
  const Clock::time_point deadline = Clock::now() + timeout;
  while (true) {
    int wait_status = 0;
    const pid_t reaped = ::waitpid(pid_, &wait_status, WNOHANG);
    if (reaped == pid_) {
      Reaped(wait_status);
      return status_;
    }
    if (reaped < 0 && errno == ECHILD) {
      // Someone else reaped it (SIGCHLD set to SIG_IGN): gone, status unknown.
      status_ = ExitStatus{.code = -1};
      return status_;
    }
    if (reaped < 0 && errno == EINTR) continue;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return std::nullopt;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    const int poll_ms = static_cast<int>(std::min<long long>(left, INT_MAX));
    if (pidfd_ >= 0) {
      pollfd exited{.fd = pidfd_, .events = POLLIN, .revents = 0};
      ::poll(&exited, 1, poll_ms);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(poll_ms, 10)));
    }
  }
}

bool Process::Signal(int signal) {
  // An unreaped child keeps its pid, so kill() cannot hit a process that reused it.
  if (pid_ <= 0 || status_) return false;
  return ::kill(pid_, signal) == 0;
}

std::optional<ExitStatus> Process::Kill(std::chrono::milliseconds grace) {
  if (Wait(std::chrono::milliseconds(0))) return status_;
  Signal(SIGTERM);
  if (Wait(grace)) return status_;
  Signal(SIGKILL);
  return Wait(std::chrono::seconds(30));
}

std::string Process::output() const {
  std::string out;
  if (output_fd_ < 0) return out;
  char buffer[16384];
  off_t offset = 0;
  while (true) {
    const ssize_t got = ::pread(output_fd_, buffer, sizeof(buffer), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    out.append(buffer, static_cast<size_t>(got));
    offset += got;
  }
  return out;
}

bool Process::WaitForOutput(std::string_view needle, std::chrono::milliseconds timeout) {
  return PollUntil([&] { return output().find(needle) != std::string::npos; }, timeout);
}

CommandResult RunCommand(std::vector<std::string> argv, std::chrono::milliseconds timeout,
                         Process::Options options) {
  options.kill_grace = std::chrono::milliseconds(500);
  Process process(std::move(argv), std::move(options));
  CommandResult result;
  std::optional<ExitStatus> status = process.Wait(timeout);
  if (!status) {
    result.timed_out = true;
    process.Kill(std::chrono::milliseconds(500));
  } else {
    result.exit_code = status->code;
  }
  result.output = process.output();
  return result;
}

std::string Tail(const std::string& text, size_t max_bytes) {
  return text.size() <= max_bytes ? text : "..." + text.substr(text.size() - max_bytes);
}

bool PollUntil(const std::function<bool()>& condition, std::chrono::milliseconds timeout,
               std::chrono::milliseconds interval) {
  const Clock::time_point deadline = Clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(interval);
  }
}

}  // namespace nodemesh::testing
