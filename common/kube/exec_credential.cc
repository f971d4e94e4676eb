#include "common/kube/exec_credential.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_join.h"
#include "common/base/file.h"
#include "common/base/format.h"
#include "common/base/log.h"
#include "common/base/unique_fd.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace nodemesh::kube {
namespace {

using Clock = std::chrono::steady_clock;
using OrderedJson = nlohmann::ordered_json;

// More on stdout than any credential needs is a broken plugin, not a credential.
constexpr size_t kMaxStdout = 1u << 20;
// The end of a failing plugin's stderr put into the error.
constexpr size_t kStderrTail = 4096;
// After SIGTERM a plugin past its time gets this long before SIGKILL.
constexpr std::chrono::milliseconds kKillGrace{2000};
constexpr std::string_view kPluginHelp =
    "https://kubernetes.io/docs/reference/access-authn-authz/authentication/"
    "#client-go-credential-plugins";

// How one run went: what it printed and how it ended.
struct RunResult {
  std::string out;
  std::string err_tail;  // non-interactive runs only
  int wait_status = 0;
  bool timed_out = false;
  bool too_much_output = false;
};

// The plugin's command line, for messages.
std::string CommandLine(const ExecConfig& exec) {
  return fmt::format("{} {}", exec.command, absl::StrJoin(exec.args, " "));
}

std::string Prefix(const Config& config) {
  return fmt::format("getting credentials for user {} of {}", config.exec->user, config.source);
}

// client-go's isInteractive: whether stdin goes to the plugin, or why the mode cannot be met.
absl::StatusOr<bool> Interactive(ExecConfig::InteractiveMode mode,
                                 const ExecEnvironment& environment) {
  switch (mode) {
    case ExecConfig::InteractiveMode::kNever:
      return false;
    case ExecConfig::InteractiveMode::kIfAvailable:
      return environment.stdin_is_terminal && !environment.stdin_unavailable;
    case ExecConfig::InteractiveMode::kAlways:
      if (!environment.stdin_is_terminal) {
        return absl::FailedPreconditionError(
            "exec plugin cannot support interactive mode: standard input is not a terminal");
      }
      if (environment.stdin_unavailable) {
        return absl::FailedPreconditionError(
            "exec plugin cannot support interactive mode: standard input is unavailable");
      }
      return true;
  }
  return false;
}

// KUBERNETES_EXEC_INFO: an ExecCredential of the configured version with spec.interactive,
// and spec.cluster when the kubeconfig asks for it, keys in the order client-go writes them.
absl::StatusOr<std::string> ExecInfo(const Config& config, bool interactive) {
  const ExecConfig& exec = *config.exec;
  OrderedJson spec = OrderedJson::object();
  if (exec.provide_cluster_info) {
    OrderedJson cluster = OrderedJson::object();
    cluster["server"] = config.server;
    if (!config.tls_server_name.empty()) cluster["tls-server-name"] = config.tls_server_name;
    if (config.insecure_skip_tls_verify) cluster["insecure-skip-tls-verify"] = true;
    std::string ca = config.ca_data;
    if (ca.empty() && !config.ca_file.empty()) {
      absl::StatusOr<std::string> file = ReadFile(config.ca_file);
      if (!file.ok()) {
        return absl::FailedPreconditionError(
            fmt::format("{}: cannot read the cluster's CA {} for the exec plugin's cluster info "
                        "({})",
                        Prefix(config), config.ca_file, file.status().message()));
      }
      ca = *std::move(file);
    }
    // A Go []byte: base64 of the PEM bytes.
    if (!ca.empty()) cluster["certificate-authority-data"] = absl::Base64Escape(ca);
    if (!config.proxy_url.empty()) cluster["proxy-url"] = config.proxy_url;
    if (!exec.cluster_config_json.empty()) {
      cluster["config"] = OrderedJson::parse(exec.cluster_config_json, nullptr, false);
    }
    spec["cluster"] = std::move(cluster);
  }
  spec["interactive"] = interactive;
  OrderedJson info = {{"kind", "ExecCredential"}, {"apiVersion", exec.api_version}};
  info["spec"] = std::move(spec);
  return info.dump();
}

// The caller's environment, the kubeconfig's `env` over it, KUBERNETES_EXEC_INFO over both.
std::vector<std::string> PluginEnvironment(const ExecConfig& exec, const std::string& info) {
  std::map<std::string, std::string> overrides;
  for (const auto& [name, value] : exec.env) overrides[name] = value;
  overrides["KUBERNETES_EXEC_INFO"] = info;
  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view variable(*entry);
    if (!overrides.contains(std::string(variable.substr(0, variable.find('='))))) {
      environment.emplace_back(variable);
    }
  }
  for (const auto& [name, value] : overrides) environment.push_back(name + "=" + value);
  return environment;
}

// An install hint without its ANSI escape sequences (as client-go shows it).
std::string WithoutEscapes(std::string_view text) {
  std::string plain;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      i += 2;
      while (i < text.size() && !(text[i] >= '@' && text[i] <= '~')) ++i;
      continue;
    }
    plain += text[i];
  }
  return plain;
}

absl::Status NotFound(const Config& config, std::string_view where) {
  const ExecConfig& exec = *config.exec;
  std::string message = fmt::format(
      "{}: exec plugin {} not found{}. It looks like you are trying to use a client-go "
      "credential plugin that is not installed",
      Prefix(config), exec.command, where);
  if (!exec.install_hint.empty()) {
    message += fmt::format("; the kubeconfig says: {}", WithoutEscapes(exec.install_hint));
  }
  message += fmt::format(". See {}", kPluginHelp);
  return absl::FailedPreconditionError(message);
}

// The program to run: a command with a '/' as it is (the kubeconfig made it absolute), else
// the first executable of that name in the caller's PATH, as Go's exec.LookPath finds it.
absl::StatusOr<std::string> FindCommand(const Config& config) {
  const std::string& command = config.exec->command;
  const auto refused = [&](const std::string& path) {
    return absl::FailedPreconditionError(fmt::format("{}: exec plugin {} cannot be run: {}: {}",
                                                     Prefix(config), command, path,
                                                     std::strerror(EACCES)));
  };
  if (command.find('/') != std::string::npos) {
    if (::access(command.c_str(), F_OK) != 0) return NotFound(config, "");
    if (::access(command.c_str(), X_OK) != 0) return refused(command);
    return command;
  }
  const char* path_variable = std::getenv("PATH");
  const std::string path_list = path_variable == nullptr ? "" : path_variable;
  std::optional<std::string> not_executable;
  std::string_view rest = path_list;
  while (true) {
    const size_t colon = rest.find(':');
    // An empty entry is the current directory.
    const std::string_view directory = colon == 0 || rest.empty() ? "." : rest.substr(0, colon);
    const std::string candidate = fmt::format("{}/{}", directory, command);
    struct stat file_stat;
    if (::stat(candidate.c_str(), &file_stat) == 0 && S_ISREG(file_stat.st_mode)) {
      if (::access(candidate.c_str(), X_OK) == 0) return candidate;
      if (!not_executable.has_value()) not_executable = candidate;
    }
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  if (not_executable.has_value()) return refused(*not_executable);
  return NotFound(config, fmt::format(" (looked in PATH={})", path_list));
}

// Reads what the plugin writes until it closes both pipes, keeping its stdout and the end
// of its stderr; gives up past `deadline` (if any) or past kMaxStdout.
void ReadOutput(int out_fd, int err_fd, std::optional<Clock::time_point> deadline,
                RunResult& result) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  const int count = err_fd >= 0 ? 2 : 1;
  std::string err;
  char buffer[16384];
  while (fds[0].fd >= 0 || (count == 2 && fds[1].fd >= 0)) {
    int timeout_ms = -1;
    if (deadline.has_value()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
      if (left.count() <= 0) {
        result.timed_out = true;
        break;
      }
      timeout_ms = static_cast<int>(left.count());
    }
    const int ready = ::poll(fds, count, timeout_ms);
    if (ready < 0 && errno != EINTR) break;
    for (int i = 0; i < count; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t bytes = ::read(fds[i].fd, buffer, sizeof(buffer));
      if (bytes <= 0) {
        if (bytes < 0 && errno == EINTR) continue;
        fds[i].fd = -1;  // closed (or broken): poll ignores negative descriptors
        continue;
      }
      if (i == 0) {
        result.out.append(buffer, static_cast<size_t>(bytes));
        if (result.out.size() > kMaxStdout) {
          result.too_much_output = true;
          return;
        }
      } else {
        err.append(buffer, static_cast<size_t>(bytes));
        if (err.size() > 2 * kStderrTail) err.erase(0, err.size() - kStderrTail);
      }
    }
  }
  result.err_tail = err.size() > kStderrTail ? err.substr(err.size() - kStderrTail) : err;
}

// Ends a plugin that ran too long or wrote too much: SIGTERM to it (to its process group when
// it has one of its own), SIGKILL after kKillGrace. Returns its wait status.
int Stop(pid_t pid, bool own_group) {
  const pid_t target = own_group ? -pid : pid;
  ::kill(target, SIGTERM);
  const Clock::time_point give_up = Clock::now() + kKillGrace;
  int status = 0;
  while (Clock::now() < give_up) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(target, SIGKILL);
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Spawns `program` with `environment`, stdin from the caller or /dev/null, stdout (and, when
// not interactive, stderr) to pipes, and waits for it.
absl::StatusOr<RunResult> Spawn(const Config& config, const std::string& program,
                                const std::vector<std::string>& environment, bool interactive,
                                std::chrono::milliseconds timeout) {
  UniqueFd out_read, out_write, err_read, err_write;
  const auto make_pipe = [](UniqueFd& read_end, UniqueFd& write_end) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    read_end.Reset(fds[0]);
    write_end.Reset(fds[1]);
    return true;
  };
  if (!make_pipe(out_read, out_write) || (!interactive && !make_pipe(err_read, err_write))) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: cannot make a pipe for the exec plugin: {}", Prefix(config), std::strerror(errno)));
  }

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  if (!interactive) {
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, err_write.get(), STDERR_FILENO);
  }
  posix_spawn_file_actions_adddup2(&actions, out_write.get(), STDOUT_FILENO);
  // The caller may block signals (meshctl takes SIGINT on a thread of its own): the plugin
  // starts with none blocked and default actions, as any program expects. A non-interactive
  // plugin gets a process group of its own, so that stopping it stops what it started.
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (const int signal_number : {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP}) {
    sigaddset(&defaults, signal_number);
  }
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (!interactive) flags |= POSIX_SPAWN_SETPGROUP;
  posix_spawnattr_setflags(&attributes, flags);
  posix_spawnattr_setpgroup(&attributes, 0);

  std::vector<std::string> arguments = {config.exec->command};
  arguments.insert(arguments.end(), config.exec->args.begin(), config.exec->args.end());
  std::vector<char*> argv, envp;
  for (std::string& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  std::vector<std::string> environment_copy = environment;
  for (std::string& variable : environment_copy) envp.push_back(variable.data());
  envp.push_back(nullptr);

  pid_t pid = 0;
  const int spawn_error =
      posix_spawn(&pid, program.c_str(), &actions, &attributes, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawn_error != 0) {
    if (spawn_error == ENOENT) return NotFound(config, "");
    return absl::FailedPreconditionError(fmt::format("{}: exec plugin {} cannot be run: {}",
                                                     Prefix(config), program,
                                                     std::strerror(spawn_error)));
  }
  out_write.Reset();
  err_write.Reset();

  RunResult result;
  std::optional<Clock::time_point> deadline;
  if (!interactive) deadline = Clock::now() + timeout;
  ReadOutput(out_read.get(), err_read.get(), deadline, result);
  if (result.timed_out || result.too_much_output) {
    result.wait_status = Stop(pid, /*own_group=*/!interactive);
    return result;
  }
  while (::waitpid(pid, &result.wait_status, 0) < 0 && errno == EINTR) {
  }
  return result;
}

// The end of a plugin's stderr, indented, after "; its stderr:" (nothing if it wrote none).
std::string StderrSuffix(std::string_view tail) {
  std::string_view text = tail;
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  if (text.empty()) return {};
  std::string suffix = "; its stderr:";
  size_t at = 0;
  while (at <= text.size()) {
    const size_t newline = text.find('\n', at);
    const size_t end = newline == std::string_view::npos ? text.size() : newline;
    suffix += fmt::format("\n  {}", text.substr(at, end - at));
    if (newline == std::string_view::npos) break;
    at = newline + 1;
  }
  return suffix;
}

// What client-go's tls.X509KeyPair would say of a certificate and key, "" if they parse and
// belong together. An encrypted key is refused rather than asked a passphrase for.
std::string KeyPairProblem(const std::string& certificate_pem, const std::string& key_pem) {
  using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
  const Bio certificate_bio(
      BIO_new_mem_buf(certificate_pem.data(), static_cast<int>(certificate_pem.size())), BIO_free);
  const Bio key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())), BIO_free);
  const std::unique_ptr<X509, decltype(&X509_free)> certificate(
      PEM_read_bio_X509(certificate_bio.get(), nullptr, nullptr, nullptr), X509_free);
  const auto no_passphrase = [](char*, int, int, void*) { return 0; };
  const std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr), EVP_PKEY_free);
  std::string problem;
  if (certificate == nullptr) {
    problem = "tls: failed to find any PEM data in certificate input";
  } else if (key == nullptr) {
    problem = "tls: failed to find any PEM data in key input";
  } else if (X509_check_private_key(certificate.get(), key.get()) != 1) {
    problem = "tls: private key does not match public key";
  }
  // Leave this thread's OpenSSL error queue empty for the next TLS handshake.
  ERR_clear_error();
  return problem;
}

// What the plugin printed, checked in client-go's order with its messages.
absl::StatusOr<ExecCredential> Parse(const Config& config, std::string_view out) {
  const ExecConfig& exec = *config.exec;
  const auto invalid = [&](std::string_view what) {
    return absl::FailedPreconditionError(
        fmt::format("{}: exec plugin {}: {}", Prefix(config), exec.command, what));
  };
  nlohmann::json credential;
  try {
    credential = nlohmann::json::parse(out);
  } catch (const nlohmann::json::exception& error) {
    return invalid(fmt::format("decoding stdout: couldn't get version/kind; json parse error: {}",
                               error.what()));
  }
  if (!credential.is_object()) {
    return invalid("decoding stdout: couldn't get version/kind; json parse error: not an object");
  }
  const std::string kind = credential.value("kind", "");
  const std::string api_version = credential.value("apiVersion", "");
  if (kind.empty())
    return invalid(fmt::format("decoding stdout: Object 'Kind' is missing in '{}'", out));
  if (kind != "ExecCredential" || (api_version != "client.authentication.k8s.io/v1" &&
                                   api_version != "client.authentication.k8s.io/v1beta1")) {
    return invalid(fmt::format("decoding stdout: no kind \"{}\" is registered for version \"{}\"",
                               kind, api_version));
  }
  if (api_version != exec.api_version) {
    return invalid(
        fmt::format("exec plugin is configured to use API version {}, plugin returned version {}",
                    exec.api_version, api_version));
  }
  const auto status = credential.find("status");
  if (status == credential.end() || !status->is_object()) {
    return invalid("exec plugin didn't return a status field");
  }
  ExecCredential result;
  const auto text = [&](const char* key) -> std::string {
    const auto value = status->find(key);
    return value != status->end() && value->is_string() ? value->get<std::string>() : "";
  };
  result.token = text("token");
  result.client_certificate_pem = text("clientCertificateData");
  result.client_key_pem = text("clientKeyData");
  if (result.token.empty() && result.client_certificate_pem.empty() &&
      result.client_key_pem.empty()) {
    return invalid("exec plugin didn't return a token or cert/key pair");
  }
  if (result.client_certificate_pem.empty() != result.client_key_pem.empty()) {
    return invalid("exec plugin returned only certificate or key, not both");
  }
  if (!result.client_certificate_pem.empty()) {
    if (const std::string problem =
            KeyPairProblem(result.client_certificate_pem, result.client_key_pem);
        !problem.empty()) {
      return invalid(fmt::format("failed parsing client key/certificate: {}", problem));
    }
  }
  if (const std::string expiry = text("expirationTimestamp"); !expiry.empty()) {
    absl::Time time;
    std::string error;
    if (!absl::ParseTime(absl::RFC3339_full, expiry, &time, &error)) {
      return invalid(
          fmt::format("decoding stdout: expirationTimestamp \"{}\" is not an RFC 3339 "
                      "time: {}",
                      expiry, error));
    }
    result.expiry = time;
  }
  return result;
}

}  // namespace

absl::StatusOr<ExecCredential> RunExecPlugin(const Config& config,
                                             const ExecEnvironment& environment) {
  const ExecConfig& exec = *config.exec;
  const absl::StatusOr<bool> interactive = Interactive(exec.interactive_mode, environment);
  if (!interactive.ok()) {
    return absl::FailedPreconditionError(
        fmt::format("{}: {}", Prefix(config), interactive.status().message()));
  }
  const absl::StatusOr<std::string> info = ExecInfo(config, *interactive);
  if (!info.ok()) return info.status();
  const absl::StatusOr<std::string> program = FindCommand(config);
  if (!program.ok()) return program.status();
  const absl::StatusOr<RunResult> run = Spawn(config, *program, PluginEnvironment(exec, *info),
                                              *interactive, environment.non_interactive_timeout);
  if (!run.ok()) return run.status();

  const std::string plugin =
      exec.args.empty() ? fmt::format("exec plugin {}", exec.command)
                        : fmt::format("exec plugin {} ({})", exec.command, CommandLine(exec));
  if (run->timed_out) {
    return absl::FailedPreconditionError(
        fmt::format("{}: {} did not finish within {} ms and was stopped{}", Prefix(config), plugin,
                    environment.non_interactive_timeout.count(), StderrSuffix(run->err_tail)));
  }
  if (run->too_much_output) {
    return absl::FailedPreconditionError(
        fmt::format("{}: {} wrote more than {} bytes to stdout and was stopped", Prefix(config),
                    plugin, kMaxStdout));
  }
  if (WIFSIGNALED(run->wait_status)) {
    return absl::FailedPreconditionError(fmt::format(
        "{}: {} was killed by signal {} ({}){}", Prefix(config), plugin, WTERMSIG(run->wait_status),
        strsignal(WTERMSIG(run->wait_status)), StderrSuffix(run->err_tail)));
  }
  if (WEXITSTATUS(run->wait_status) != 0) {
    return absl::FailedPreconditionError(
        fmt::format("{}: {} failed with exit code {}{}", Prefix(config), plugin,
                    WEXITSTATUS(run->wait_status), StderrSuffix(run->err_tail)));
  }
  absl::StatusOr<ExecCredential> credential = Parse(config, run->out);
  if (!credential.ok()) {
    return absl::Status(
        credential.status().code(),
        fmt::format("{}{}", credential.status().message(), StderrSuffix(run->err_tail)));
  }
  if (!run->err_tail.empty()) {
    if (environment.plugin_stderr) {
      environment.plugin_stderr(run->err_tail);
    } else {
      Log(LogLevel::kWarning, "kube: {} wrote to stderr: {}", plugin,
          absl::StripTrailingAsciiWhitespace(run->err_tail));
    }
  }
  return credential;
}

}  // namespace nodemesh::kube
