// Kernel tier for meshctl shell in a terminal, used as a person uses it: the real meshctl
// binary runs interactively inside tmux against the admin socket of a real nodemesh-agent
// on a simulated node; the test types keys with `tmux send-keys` and reads the screen back
// with `tmux capture-pane`, waiting (bounded) for what a person would see.
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test/kernel/kernel_cluster.h"
#include "test/lib/agent_process.h"
#include "test/lib/files.h"
#include "test/lib/peers.h"
#include "test/lib/process.h"
#include "test/lib/test_node.h"
#include "test/lib/tier.h"

namespace nodemesh::testing {
namespace {

using namespace std::chrono_literals;

constexpr auto kScreenWait = 10s;  // how long a person would wait for the screen to change

using Cluster = KernelCluster;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

int Count(const std::string& text, const std::string& needle) {
  int count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

// A terminal of 200x50 running one command: a tmux server of its own (`tmux -L NAME`, its
// socket in `tmux_dir`), with remain-on-exit so that the test sees the command end. The
// destructor kills that server, and with it the command, whatever the test did.
class Terminal {
 public:
  Terminal(const std::string& tmux_dir, const std::vector<std::string>& command)
      : socket_(fmt::format("nodemesh-shell-tty-{}-{}", ::getpid(), ++terminals_)),
        tmux_dir_(tmux_dir) {
    std::vector<std::string> argv = {"start-server", ";",  "set-option",  "-g", "remain-on-exit",
                                     "on",           ";",  "new-session", "-d", "-x",
                                     "200",          "-y", "50",          "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    const CommandResult started = Tmux(argv);
    if (started.exit_code != 0) {
      Tmux({"kill-server"});  // whatever it started: no destructor runs after a throw
      throw std::runtime_error("tmux new-session: " + Describe(started));
    }
  }
  ~Terminal() { Tmux({"kill-server"}); }
  Terminal(const Terminal&) = delete;
  Terminal& operator=(const Terminal&) = delete;

  // Types `text` as it is (no key names).
  void Type(const std::string& text) { SendKeys({"-l", "--", text}); }
  // Presses keys by tmux's names: Enter, Tab, Up, Left, C-c, C-d.
  void Press(const std::vector<std::string>& keys) { SendKeys(keys); }

  // The screen with what scrolled off it, lines right-trimmed as tmux gives them.
  std::string Screen() const { return Tmux({"capture-pane", "-p", "-J", "-S", "-"}).output; }
  // The line the cursor is on, right-trimmed.
  std::string CursorLine() const {
    const std::vector<std::string> lines = Lines(Tmux({"capture-pane", "-p"}).output);
    const int y = Number("#{cursor_y}");
    return y >= 0 && static_cast<size_t>(y) < lines.size() ? lines[y] : "";
  }
  int CursorX() const { return Number("#{cursor_x}"); }
  // The pane's process and the cursor, for messages.
  std::string State() const {
    return Format(
        "pid #{pane_pid}, dead #{pane_dead}, exit status #{pane_dead_status}, cursor at "
        "#{cursor_x},#{cursor_y}");
  }

  // Polls the screen until `condition` holds on it, for at most kScreenWait.
  bool WaitFor(const std::function<bool(const std::string&)>& condition) const {
    return PollUntil([&] { return condition(Screen()); }, kScreenWait, 100ms);
  }
  // Until `text` shows on the screen at least `times` times.
  bool WaitForText(const std::string& text, int times = 1) const {
    return WaitFor([&](const std::string& screen) { return Count(screen, text) >= times; });
  }
  // Until the cursor's line reads `line` (right-trimmed).
  bool WaitForCursorLine(const std::string& line) const {
    return PollUntil([&] { return CursorLine() == line; }, kScreenWait, 100ms);
  }
  // Until the command has ended: tmux saw its terminal close, and its process is gone or a
  // zombie. (tmux 3.3 may leave it unreaped, and without an exit status, when it read the
  // terminal's end first.)
  bool WaitForEnd() const {
    return PollUntil(
        [&] {
          if (Format("#{pane_dead}") != "1") return false;
          const std::string stat = ReadFile("/proc/" + Format("#{pane_pid}") + "/stat");
          const size_t name_end = stat.rfind(')');
          return name_end == std::string::npos || stat.substr(name_end, 4) == ") Z ";
        },
        kScreenWait, 100ms);
  }

 private:
  CommandResult Tmux(std::vector<std::string> args) const {
    args.insert(args.begin(), {"tmux", "-L", socket_, "-f", "/dev/null"});
    return RunCommand(args, 10s, {.env = {{"TMUX_TMPDIR", tmux_dir_}}});
  }
  void SendKeys(const std::vector<std::string>& keys) {
    std::vector<std::string> args = {"send-keys", "-t", "0"};
    args.insert(args.end(), keys.begin(), keys.end());
    const CommandResult sent = Tmux(args);
    if (sent.exit_code != 0) throw std::runtime_error("tmux send-keys: " + Describe(sent));
  }
  std::string Format(const std::string& format) const {
    std::string value = Tmux({"display-message", "-p", "-t", "0", format}).output;
    while (!value.empty() && value.back() == '\n') value.pop_back();
    return value;
  }

  // A number tmux shows, or -1 (its server gone).
  int Number(const std::string& format) const {
    const std::string value = Format(format);
    return !value.empty() && std::all_of(value.begin(), value.end(), ::isdigit) ? std::stoi(value)
                                                                                : -1;
  }

  static inline int terminals_ = 0;
  const std::string socket_;
  const std::string tmux_dir_;
};

// A check of the screen that shows it when it fails.
#define CHECK_SCREEN(terminal, condition)                                 \
  do {                                                                    \
    const bool holds_ = (condition);                                      \
    INFO((terminal).State() << "; the screen:\n" << (terminal).Screen()); \
    CHECK(holds_);                                                        \
  } while (false)
#define REQUIRE_SCREEN(terminal, condition)                               \
  do {                                                                    \
    const bool holds_ = (condition);                                      \
    INFO((terminal).State() << "; the screen:\n" << (terminal).Screen()); \
    REQUIRE(holds_);                                                      \
  } while (false)

// A home of the test's own: HOME and XDG_STATE_HOME for the shell's history (not made:
// meshctl makes what is missing, as the XDG spec asks), and tmux's socket directory.
struct Home {
  TempDir dir;
  const std::string state = dir.path() + "/state";
  const std::string history = state + "/nodemesh/shell_history";
};

constexpr const char* kPrompt = "meshctl@node-a>";

// meshctl shell on the agent's socket, in a terminal of its own; returns once it prompts.
std::unique_ptr<Terminal> StartShell(const Home& home, const AgentProcess& agent,
                                     bool xdg_state_home = true) {
  std::vector<std::string> command = {"env", "HOME=" + home.dir.path()};
  if (xdg_state_home) {
    command.push_back("XDG_STATE_HOME=" + home.state);
  } else {
    command.insert(command.begin() + 1, {"-u", "XDG_STATE_HOME"});
  }
  command.insert(command.end(),
                 {NODEMESH_MESHCTL_BINARY, "shell", "--socket", agent.admin_socket()});
  auto terminal = std::make_unique<Terminal>(home.dir.path(), command);
  REQUIRE_SCREEN(*terminal, terminal->WaitForCursorLine(kPrompt));
  return terminal;
}

// The commands of a libedit history file, its escapes (\040 for a space) decoded.
std::vector<std::string> HistoryFile(const std::string& path) {
  std::vector<std::string> commands;
  for (const std::string& line : Lines(ReadFile(path))) {
    if (line.starts_with("_HiStOrY_")) continue;
    std::string decoded;
    for (size_t i = 0; i < line.size(); ++i) {
      if (line[i] == '\\' && i + 3 < line.size() && std::isdigit(line[i + 1]) &&
          std::isdigit(line[i + 2]) && std::isdigit(line[i + 3])) {
        decoded += static_cast<char>(std::stoi(line.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        decoded += line[i];
      }
    }
    commands.push_back(decoded);
  }
  return commands;
}

// The lines of meshctl tap (req, rsp, end) on `screen` after the last prompt that ran
// `command`.
std::vector<std::string> TapLines(const std::string& screen, const std::string& command) {
  const std::string started = fmt::format("{} {}\n", kPrompt, command);
  const size_t at = screen.rfind(started);
  std::vector<std::string> lines;
  if (at == std::string::npos) return lines;
  for (const std::string& line : Lines(screen.substr(at + started.size()))) {
    if (line.starts_with("req id=") || line.starts_with("rsp id=") || line.starts_with("end id=")) {
      lines.push_back(line);
    }
  }
  return lines;
}

std::string Prompted(const std::string& line) { return fmt::format("{} {}", kPrompt, line); }

TEST_CASE("meshctl shell in a terminal: keys typed and the screen read back") {
  Cluster cluster;
  AgentProcess agent(cluster.node_a, {.binary = NODEMESH_AGENT_BINARY});
  INFO("agent:\n" << agent.output());
  Home home;

  SECTION("typing pods and Enter shows the table of the node's pods") {
    auto shell = StartShell(home, agent);
    shell->Type("pods");
    shell->Press({"Enter"});
    REQUIRE_SCREEN(*shell, shell->WaitForText("emojivoto/vote-bot-1"));
    const std::string screen = shell->Screen();
    INFO(screen);
    for (const std::string& line : Lines(screen)) {
      if (line.starts_with("emojivoto/web-1 ") || line.starts_with("emojivoto/emoji-1 ")) {
        CHECK(line.find("enrolled") != std::string::npos);
        const bool shows_web_cgroup =
            line.find(std::to_string(cluster.client.cgroup_id)) != std::string::npos;
        CHECK(shows_web_cgroup == line.starts_with("emojivoto/web-1 "));
      }
      if (line.starts_with("emojivoto/vote-bot-1 ")) {
        CHECK(line.find("unmeshed") != std::string::npos);
      }
    }
    CHECK(screen.find("\nPOD ") != std::string::npos);
    CHECK(screen.find("\nemojivoto/web-1 ") != std::string::npos);
    CHECK(screen.find("\nemojivoto/emoji-1 ") != std::string::npos);
    CHECK(screen.find("voting-1") == std::string::npos);  // node-b's
    // The prompt again, for the next command.
    CHECK_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
  }

  SECTION("Tab completes a command and a pod and lists the candidates of an ambiguous prefix") {
    auto shell = StartShell(home, agent);
    // A command: the word and a space after it.
    shell->Type("po");
    shell->Press({"Tab"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(Prompted("pods")));
    CHECK(shell->CursorX() == static_cast<int>(Prompted("pods ").size()));
    shell->Press({"C-c"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));

    // A pod after explain: by name alone, and by namespace/name.
    shell->Type("explain we");
    shell->Press({"Tab"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(Prompted("explain web-1")));
    CHECK(shell->CursorX() == static_cast<int>(Prompted("explain web-1 ").size()));
    shell->Press({"C-c"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
    shell->Type("explain emojivoto/v");
    shell->Press({"Tab"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(Prompted("explain emojivoto/vote-bot-1")));
    shell->Press({"C-c"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));

    // Ambiguous: the candidates listed, the line kept as typed.
    shell->Type("explain emojivoto/");
    shell->Press({"Tab"});
    REQUIRE_SCREEN(*shell,
                   shell->WaitForText("emojivoto/emoji-1  emojivoto/vote-bot-1  emojivoto/web-1"));
    CHECK_SCREEN(*shell, shell->WaitForCursorLine(Prompted("explain emojivoto/")));
    // Completed by hand, and run: the completed line is a working command.
    shell->Type("web-1");
    shell->Press({"Enter"});
    CHECK_SCREEN(*shell, shell->WaitForText("Every step passes"));
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));

    // An ambiguous command prefix: the common part first, then the list on a second Tab.
    shell->Type("e");
    shell->Press({"Tab"});
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(Prompted("ex")));
    shell->Press({"Tab"});
    CHECK_SCREEN(*shell, shell->WaitForText("exit  explain"));
    CHECK_SCREEN(*shell, shell->WaitForCursorLine(Prompted("ex")));
  }

  SECTION("Up recalls the last command and the history file keeps it for the next shell") {
    {
      auto shell = StartShell(home, agent);
      shell->Type("pods");
      shell->Press({"Enter"});
      REQUIRE_SCREEN(*shell, shell->WaitForText("emojivoto/vote-bot-1"));
      REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
      shell->Type("explain web-1");
      shell->Press({"Enter"});
      REQUIRE_SCREEN(*shell, shell->WaitForText("Every step passes"));
      REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
      // Up: the last command on the line again; Enter runs it again.
      shell->Press({"Up"});
      REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(Prompted("explain web-1")));
      shell->Press({"Enter"});
      CHECK_SCREEN(*shell, shell->WaitForText("Every step passes", 2));
      REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
      // Up twice: the one before (a command repeated is kept once).
      shell->Press({"Up", "Up"});
      CHECK_SCREEN(*shell, shell->WaitForCursorLine(Prompted("pods")));
      shell->Press({"C-c", "C-d"});
      REQUIRE_SCREEN(*shell, shell->WaitForEnd());
    }
    INFO("history file " << home.history << ":\n" << ReadFile(home.history));
    CHECK(HistoryFile(home.history) == std::vector<std::string>{"pods", "explain web-1"});
    {
      // A new shell recalls the last shell's commands, the newest first.
      auto shell = StartShell(home, agent);
      shell->Press({"Up"});
      CHECK_SCREEN(*shell, shell->WaitForCursorLine(Prompted("explain web-1")));
      shell->Press({"Up"});
      CHECK_SCREEN(*shell, shell->WaitForCursorLine(Prompted("pods")));
      shell->Press({"Enter"});
      CHECK_SCREEN(*shell, shell->WaitForText("emojivoto/vote-bot-1"));
      shell->Type("exit");
      shell->Press({"Enter"});
      REQUIRE_SCREEN(*shell, shell->WaitForEnd());
    }
    // Both shells' commands, in order; exit is kept as any command.
    CHECK(HistoryFile(home.history) ==
          std::vector<std::string>{"pods", "explain web-1", "pods", "exit"});
    // Without XDG_STATE_HOME: ~/.nodemesh_history.
    {
      auto shell = StartShell(home, agent, /*xdg_state_home=*/false);
      shell->Type("version");
      shell->Press({"Enter"});
      CHECK_SCREEN(*shell, shell->WaitForText("meshctl version "));
      shell->Press({"C-d"});
      REQUIRE_SCREEN(*shell, shell->WaitForEnd());
    }
    CHECK(HistoryFile(home.dir.path() + "/.nodemesh_history") ==
          std::vector<std::string>{"version"});
  }

  SECTION("Ctrl-C drops the half-typed line and the shell stays for the next command") {
    auto shell = StartShell(home, agent);
    shell->Type("kernel map enr");
    shell->Press({"Left", "Left"});  // the cursor inside the line: all of it goes all the same
    REQUIRE_SCREEN(*shell, shell->WaitForCursorLine(Prompted("kernel map enr")));
    shell->Press({"C-c"});
    REQUIRE_SCREEN(*shell, shell->WaitForText("^C"));
    CHECK_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
    shell->Type("version");
    shell->Press({"Enter"});
    CHECK_SCREEN(*shell, shell->WaitForText("meshctl version "));
    CHECK_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
    // The dropped line was not run: no map on the screen, and not in the history.
    CHECK(shell->Screen().find("map enrolled_cgroups") == std::string::npos);
    shell->Press({"C-d"});
    REQUIRE_SCREEN(*shell, shell->WaitForEnd());
    CHECK(HistoryFile(home.history) == std::vector<std::string>{"version"});
  }

  SECTION("exit and Ctrl-D end the shell's process") {
    {
      auto shell = StartShell(home, agent);
      shell->Type("exit");
      shell->Press({"Enter"});
      CHECK_SCREEN(*shell, shell->WaitForEnd());
    }
    {
      auto shell = StartShell(home, agent);
      shell->Press({"C-d"});
      CHECK_SCREEN(*shell, shell->WaitForEnd());
    }
  }

  SECTION("tap shows live requests until Ctrl-C and the shell answers the next command") {
    Process http = cluster.remote.Run(
        {kPython, "-u", "-m", "http.server", "8000", "--bind", cluster.remote.ip});
    REQUIRE(http.WaitForOutput("Serving HTTP", 10s));
    // A request from web-1 through the agent to node-b's server, as a person's curl.
    const auto request = [&](const std::string& path) {
      const CommandResult curl =
          cluster.client.RunCommand({"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                     fmt::format("http://{}:8000{}", cluster.remote.ip, path)});
      INFO(Describe(curl));
      CHECK(curl.output == "404");  // no such file: an answer all the same
    };
    auto shell = StartShell(home, agent);

    // Until Ctrl-C: requests are sent until their lines show, as the tap may start
    // listening a moment after Enter; a path it does not match is sent as well.
    const std::string command = "tap web-1 --path /tty-tap";
    shell->Type(command);
    shell->Press({"Enter"});
    int sent = 0;
    const bool shown = PollUntil(
        [&] {
          request(fmt::format("/elsewhere/{}", sent));
          request(fmt::format("/tty-tap/{}", sent++));
          const std::vector<std::string> lines = TapLines(shell->Screen(), command);
          return std::any_of(lines.begin(), lines.end(),
                             [](const std::string& line) { return line.starts_with("end id="); });
        },
        kScreenWait, 200ms);
    REQUIRE_SCREEN(*shell, shown);
    std::vector<std::string> lines = TapLines(shell->Screen(), command);
    INFO("the tap's lines:\n" << fmt::format("{}", fmt::join(lines, "\n")));
    // One request's lines as meshctl tap prints them: req, rsp and end with its id.
    const auto req = std::find_if(lines.begin(), lines.end(), [](const std::string& line) {
      return line.starts_with("req id=");
    });
    REQUIRE(req != lines.end());
    CHECK(req->find(" proxy=out src=emojivoto/web-1 ") != std::string::npos);
    CHECK(req->find(" :method=GET ") != std::string::npos);
    CHECK(req->find(" :path=/tty-tap/") != std::string::npos);
    const std::string id = req->substr(0, req->find(' ', 4)).substr(4);
    INFO("request " << id);
    CHECK(std::count_if(lines.begin(), lines.end(), [&](const std::string& line) {
            return line.starts_with("rsp " + id + " ") &&
                   line.find(" :status=404 ") != std::string::npos;
          }) == 1);
    CHECK(std::count_if(lines.begin(), lines.end(), [&](const std::string& line) {
            return line.starts_with("end " + id + " ");
          }) == 1);
    for (const std::string& line : lines) CHECK(line.find("/elsewhere") == std::string::npos);

    // Ctrl-C: the tap stops and the prompt comes back on a line of its own, below the
    // terminal's echo of ^C; the shell answers the next command.
    shell->Press({"C-c"});
    REQUIRE_SCREEN(*shell,
                   PollUntil([&] { return shell->CursorLine() == kPrompt; }, kScreenWait, 100ms));
    request("/tty-tap/after-ctrl-c");
    shell->Type("version");
    shell->Press({"Enter"});
    CHECK_SCREEN(*shell, shell->WaitForText("meshctl version "));
    CHECK_SCREEN(*shell, shell->WaitForCursorLine(kPrompt));
    CHECK(shell->Screen().find("/tty-tap/after-ctrl-c") == std::string::npos);

    // --max-events: the tap ends by itself after that many lines.
    const std::string counted = "tap web-1 --path /tty-tap --max-events 2";
    shell->Type(counted);
    shell->Press({"Enter"});
    const bool ended = PollUntil(
        [&] {
          request(fmt::format("/tty-tap/{}", sent++));
          return shell->CursorLine() == kPrompt;
        },
        kScreenWait, 200ms);
    REQUIRE_SCREEN(*shell, ended);
    lines = TapLines(shell->Screen(), counted);
    INFO(fmt::format("{}", fmt::join(lines, "\n")));
    CHECK(lines.size() == 2);
    shell->Type("exit");
    shell->Press({"Enter"});
    CHECK_SCREEN(*shell, shell->WaitForEnd());
  }

  // The agent stops cleanly: under the sanitizer build, this is where its reports would show.
  const std::optional<ExitStatus> status = agent.Stop();
  INFO(agent.output());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(agent.output().find("Sanitizer") == std::string::npos);
}

}  // namespace
}  // namespace nodemesh::testing
