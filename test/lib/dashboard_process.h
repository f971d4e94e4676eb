// `meshctl dashboard` run as a user runs it (with --no-browser unless told otherwise), for
// end-to-end tests of the dashboard: ready when constructed (it has printed its address), its
// page's requests made with curl sharing one cookie jar, as a browser's tab does. The destructor
// stops it (the Process's SIGTERM). Not thread-safe.
//
//   DashboardProcess dashboard({.binary = NODEMESH_MESHCTL_BINARY,
//                               .args = {"--aggregator", aggregator.address()}});
//   dashboard.Curl("/?token=" + dashboard.token());  // the session cookie, as a browser
//   CommandResult view = dashboard.Curl("/api/v1alpha1/views/namespaces");
#pragma once

#include <chrono>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test/lib/files.h"
#include "test/lib/process.h"

namespace nodemesh::testing {

struct DashboardProcessOptions {
  std::string binary{};             // path of meshctl
  std::vector<std::string> args{};  // after `dashboard` (and --no-browser)
  bool no_browser = true;
  std::vector<std::pair<std::string, std::string>> env{};  // added to the test's environment
  std::chrono::milliseconds ready_timeout{std::chrono::seconds(15)};
};

class DashboardProcess {
 public:
  // Throws std::runtime_error, with meshctl's output, if it exits or prints no address in time.
  explicit DashboardProcess(DashboardProcessOptions options)
      : process_(Command(options), {.env = std::move(options.env)}) {
    const std::regex printed(
        R"re(Dashboard: (http://127\.0\.0\.1:\d+)/\?token=([0-9a-f]{32})(#\S*)?\n)re");
    std::smatch match;
    std::string output;
    PollUntil(
        [&] {
          output = process_.output();
          return std::regex_search(output, match, printed) || !process_.IsRunning();
        },
        options.ready_timeout);
    output = process_.output();
    if (!std::regex_search(output, match, printed)) {
      throw std::runtime_error("meshctl dashboard printed no address:\n" + Tail(output));
    }
    origin_ = match[1];
    token_ = match[2];
    fragment_ = match[3];
  }

  // "http://127.0.0.1:PORT", the token and the fragment ("" or "#/...") of the printed address.
  const std::string& origin() const { return origin_; }
  const std::string& token() const { return token_; }
  const std::string& fragment() const { return fragment_; }
  Process& process() { return process_; }
  // The session's cookie jar, for a curl of the test's own (a stream it stops).
  std::string cookie_jar() const { return jar_.path() + "/cookies"; }

  // curl of `path` with the session's cookies; `args` are curl's, after the URL. Its output
  // ends with a line holding the HTTP status (BodyAndStatus splits them).
  CommandResult Curl(const std::string& path, const std::vector<std::string>& args = {}) const {
    std::vector<std::string> argv = {"curl",        "-sS", "--max-time", "20", "-c",
                                     cookie_jar(),  "-b",  cookie_jar(), "-w", "\n%{http_code}",
                                     origin_ + path};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommand(argv, std::chrono::seconds(30));
  }

  // A Curl result's body and HTTP status; throws when curl itself failed.
  static std::pair<std::string, int> BodyAndStatus(const CommandResult& result) {
    const size_t newline = result.output.rfind('\n');
    if (result.exit_code != 0 || newline == std::string::npos) {
      throw std::runtime_error("curl failed:\n" + result.output);
    }
    return {result.output.substr(0, newline), std::stoi(result.output.substr(newline + 1))};
  }

 private:
  static std::vector<std::string> Command(const DashboardProcessOptions& options) {
    std::vector<std::string> argv = {options.binary, "dashboard"};
    if (options.no_browser) argv.push_back("--no-browser");
    argv.insert(argv.end(), options.args.begin(), options.args.end());
    return argv;
  }

  Process process_;
  TempDir jar_;
  std::string origin_, token_, fragment_;
};

}  // namespace nodemesh::testing
