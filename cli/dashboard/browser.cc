#include "cli/dashboard/browser.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>
#include <vector>

extern char** environ;

namespace nodemesh::cli::dashboard {
namespace {

// `program` found on `path` (a PATH value), or "".
std::string FindOnPath(const std::string& program, const std::string& path) {
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) {
      const std::string candidate = path.substr(start, end - start) + "/" + program;
      if (access(candidate.c_str(), X_OK) == 0) return candidate;
    }
    start = end + 1;
  }
  return "";
}

}  // namespace

std::string OpenInBrowser(
    const std::string& url,
    const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  const auto set = [&](const char* name) {
    const std::optional<std::string> value = getenv(name);
    return value.has_value() && !value->empty();
  };
  if (!set("DISPLAY") && !set("WAYLAND_DISPLAY")) return "";
  const std::string opener = FindOnPath("xdg-open", getenv("PATH").value_or(""));
  if (opener.empty()) return "";

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // Its chatter (and the browser's) would mix with meshctl's; stdin is not its either.
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  // A session of its own: Ctrl-C in meshctl's terminal stops meshctl, not the browser.
  // Signals meshctl blocks (SIGINT, SIGTERM: main.cc) are unblocked for it.
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
  std::vector<char*> argv = {const_cast<char*>(opener.c_str()), const_cast<char*>(url.c_str()),
                             nullptr};
  pid_t pid = 0;
  const int error = posix_spawn(&pid, opener.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) return std::strerror(error);
  // xdg-open may last as long as the browser it starts: reaped whenever it ends, so that it
  // never lingers as a zombie while meshctl serves.
  std::thread([pid] { waitpid(pid, nullptr, 0); }).detach();
  return "";
}

}  // namespace nodemesh::cli::dashboard
