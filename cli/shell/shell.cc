#include "cli/shell/shell.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <cctype>
#include <functional>
#include <random>
#include <set>

#include "cli/shell/command_line.h"
#include "cli/shell/explain.h"
#include "cli/views/format.h"
#include "cli/views/shell.h"
#include "common/base/format.h"
#include "common/base/percent_encoding.h"
#include "common/base/version.h"

namespace nodemesh::cli {
namespace {

// The admin API's answers, as the shell fetched them.
using AdminJson = nlohmann::json;

struct CommandSpec {
  std::string_view name;
  std::string_view usage;
  std::string_view summary;
  size_t max_args;
  std::vector<std::string_view> flags;  // besides -o, which every command takes
};

const std::vector<CommandSpec>& Commands() {
  static const std::vector<CommandSpec> commands = {
      {"pods",
       "pods",
       "the node's pods: meshed, state (enrolled, pending, failed, unmeshed) and why, "
       "addresses, cgroup and its id, netns, ports captured inbound",
       0,
       {}},
      {"conns",
       "conns [POD|ID] [--proto P]",
       "live proxied connections (of one pod, or one connection by id): both addresses, "
       "direction, protocol detected, bytes each way, age, idle time, requests, state",
       1,
       {"proto"}},
      {"explain",
       "explain POD|IP[:PORT]",
       "the fate of a pod's traffic, or of traffic to an address, as a checklist: inventory, "
       "meshed, enrolled, its cgroup in the kernel map, programs attached, ports captured, "
       "excluded ports, loopback; the first failing step marked with what to do; the kernel "
       "counters and the live connections that match",
       1,
       {}},
      {"tap",
       "tap [POD] [--method M] [--path PREFIX] [--authority A] [--scheme S] [--max-rps N] "
       "[--max-events N]",
       "live requests on this node (of one pod, made or served), the lines of meshctl tap, "
       "until Ctrl-C or --max-events",
       1,
       {"method", "path", "authority", "scheme", "max-rps", "max-events"}},
      {"routes",
       "routes [POD]",
       "per-route figures since the agent started (of one pod's calls, made or served): "
       "responses, failures, success rate, latency p50/p95/p99",
       1,
       {}},
      {"stats", "stats", "the agent's proxy counters and the kernel programs' counters", 0, {}},
      {"kernel",
       "kernel [map NAME [--limit N]]",
       "the attached programs (type, attach point, kernel ids), the maps with entry counts "
       "and capacity, the kernel counters; `kernel map NAME` shows one map's entries decoded",
       2,
       {"limit"}},
      {"config", "config", "the agent's effective settings (its flags and their defaults)", 0, {}},
      {"log-level", "log-level debug|info|warning|error", "set the agent's log level", 1, {}},
      {"version", "version", "meshctl's version and the agent's", 0, {}},
      {"help", "help [COMMAND]", "the commands, or one command's usage", 1, {}},
      {"exit", "exit", "leave the shell (Ctrl-D does too)", 0, {}},
  };
  return commands;
}

const CommandSpec* FindCommand(std::string_view name) {
  for (const CommandSpec& spec : Commands()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

std::string CommandList() {
  std::vector<std::string_view> names;
  for (const CommandSpec& spec : Commands()) names.push_back(spec.name);
  return fmt::format("{}", fmt::join(names, ", "));
}

std::string HelpText(const CommandSpec* only) {
  Table table({{"COMMAND", Table::Align::kLeft}, {"WHAT IT SHOWS OR DOES", Table::Align::kLeft}});
  for (const CommandSpec& spec : Commands()) {
    if (only == nullptr || only == &spec) {
      table.AddRow({std::string(spec.usage), std::string(spec.summary)});
    }
  }
  std::string text = table.Render();
  if (only == nullptr) {
    text +=
        "\nEvery command takes -o json for its result as JSON. Tab completes commands, pod "
        "names and connection ids.\n";
  }
  return text;
}

AdminJson HelpJson(const CommandSpec* only) {
  AdminJson commands = AdminJson::array();
  for (const CommandSpec& spec : Commands()) {
    if (only == nullptr || only == &spec) {
      commands.push_back({{"name", spec.name}, {"usage", spec.usage}, {"summary", spec.summary}});
    }
  }
  return {{"commands", commands}};
}

// A pod's key matches "ns/name", or "name" alone.
bool PodMatches(const std::string& key, std::string_view wanted) {
  if (key == wanted) return true;
  const size_t slash = key.find('/');
  return slash != std::string::npos && std::string_view(key).substr(slash + 1) == wanted;
}

struct Failure {
  int code;
  std::string message;
};

bool IsCount(const std::string& text) {
  return !text.empty() && text.size() <= 18 && std::all_of(text.begin(), text.end(), ::isdigit);
}

// How often a live tap asks the agent for what it saw.
constexpr auto kTapPollInterval = std::chrono::milliseconds(250);

class Execution {
 public:
  Execution(AdminClient& agent, OutputFormat format, CancelSource& cancel, const ShellLine& line,
            std::ostream& out, std::ostream& err)
      : agent_(agent), format_(format), cancel_(cancel), line_(line), out_(out), err_(err) {}

  // nullopt on success.
  std::optional<Failure> Execute(const CommandSpec& spec) {
    const std::string_view name = spec.name;
    if (name == "help") return Help();
    if (name == "version") return Version();
    if (name == "config") return Show("/config", RenderShellConfig);
    if (name == "pods") return Show("/pods", RenderShellPods);
    if (name == "stats") return Show("/stats", RenderShellStats);
    if (name == "conns") return Conns();
    if (name == "kernel") return Kernel();
    if (name == "explain") return ExplainTarget();
    if (name == "routes") return Routes();
    if (name == "tap") return Tap();
    if (name == "log-level") return LogLevel();
    return std::nullopt;
  }

 private:
  const std::string& Arg(size_t i) const { return line_.words[i + 1]; }
  size_t ArgCount() const { return line_.words.size() - 1; }

  void Print(const AdminJson& json, const std::function<std::string(const AdminJson&)>& render) {
    out_ << (format_ == OutputFormat::kJson ? json.dump(2) + "\n" : render(json));
  }

  std::optional<Failure> Fetch(const std::string& path, AdminJson* json) {
    absl::StatusOr<AdminJson> answer = agent_.Get(path);
    if (!answer.ok()) return Failure{1, std::string(answer.status().message())};
    *json = *std::move(answer);
    return std::nullopt;
  }

  std::optional<Failure> Show(const std::string& path,
                              const std::function<std::string(const AdminJson&)>& render) {
    AdminJson json;
    if (auto failure = Fetch(path, &json)) return failure;
    Print(json, render);
    return std::nullopt;
  }

  std::optional<Failure> Help() {
    const CommandSpec* only = nullptr;
    if (ArgCount() == 1) {
      only = FindCommand(Arg(0));
      if (only == nullptr) {
        return Failure{2,
                       fmt::format("no command '{}': the commands are {}", Arg(0), CommandList())};
      }
    }
    Print(HelpJson(only), [only](const AdminJson&) { return HelpText(only); });
    return std::nullopt;
  }

  std::optional<Failure> Version() {
    AdminJson agent;
    if (auto failure = Fetch("/version", &agent)) return failure;
    const AdminJson json = {{"meshctl", {{"version", kVersion}}}, {"agent", agent}};
    Print(json, [&](const AdminJson&) { return RenderShellVersion(kVersion, agent); });
    return std::nullopt;
  }

  std::optional<Failure> Conns() {
    AdminJson all;
    if (auto failure = Fetch("/connections", &all)) return failure;
    AdminJson connections = all.value("connections", AdminJson::array());
    if (ArgCount() == 1) {
      const std::string& wanted = Arg(0);
      AdminJson matched = AdminJson::array();
      bool is_id = false;
      for (const AdminJson& c : connections) {
        if (c.value("id", "") == wanted) is_id = true;
      }
      for (const AdminJson& c : connections) {
        if (is_id ? c.value("id", "") == wanted : PodMatches(c.value("pod", ""), wanted)) {
          matched.push_back(c);
        }
      }
      if (matched.empty()) {
        // An unknown name is a typo more often than a quiet pod: say which.
        AdminJson pods;
        if (auto failure = Fetch("/pods", &pods)) return failure;
        bool known = false;
        for (const AdminJson& pod : pods.value("pods", AdminJson::array())) {
          known |= PodMatches(pod.value("namespace", "") + "/" + pod.value("name", ""), wanted);
        }
        if (!known) {
          return Failure{1, fmt::format("no pod and no live connection '{}' on node {}: see "
                                        "`pods` and `conns`",
                                        wanted, all.value("node", "?"))};
        }
      }
      connections = matched;
    }
    if (const auto proto = line_.flags.find("proto"); proto != line_.flags.end()) {
      AdminJson matched = AdminJson::array();
      for (const AdminJson& c : connections) {
        if (c.value("protocol", "") == proto->second) matched.push_back(c);
      }
      connections = matched;
    }
    const AdminJson json = {{"node", all.value("node", "")}, {"connections", connections}};
    Print(json, [&](const AdminJson&) { return RenderShellConnections(connections); });
    return std::nullopt;
  }

  std::optional<Failure> Kernel() {
    if (ArgCount() == 0) {
      if (line_.flags.contains("limit")) return Failure{2, "--limit goes with `kernel map NAME`"};
      return Show("/kernel", RenderShellKernel);
    }
    if (Arg(0) != "map" || ArgCount() != 2) {
      return Failure{2, "use `kernel` or `kernel map NAME` (the names: see `kernel`)"};
    }
    std::string path = "/kernel/maps/" + Arg(1);
    if (const auto limit = line_.flags.find("limit"); limit != line_.flags.end()) {
      if (limit->second.empty() ||
          !std::all_of(limit->second.begin(), limit->second.end(), ::isdigit)) {
        return Failure{2, fmt::format("--limit {}: give a number of entries", limit->second)};
      }
      path += "?limit=" + limit->second;
    }
    return Show(path, RenderShellKernelMap);
  }

  std::optional<Failure> Routes() {
    AdminJson all;
    if (auto failure = Fetch("/routes", &all)) return failure;
    AdminJson routes = all.value("routes", AdminJson::array());
    if (ArgCount() == 1) {
      const auto key = [](const AdminJson& end) {
        return end.value("namespace", "") + "/" + end.value("pod", "");
      };
      AdminJson matched = AdminJson::array();
      for (const AdminJson& r : routes) {
        if (PodMatches(key(r.value("source", AdminJson::object())), Arg(0)) ||
            PodMatches(key(r.value("destination", AdminJson::object())), Arg(0))) {
          matched.push_back(r);
        }
      }
      routes = matched;
    }
    const AdminJson json = {{"node", all.value("node", "")}, {"routes", routes}};
    Print(json, [&](const AdminJson&) { return RenderShellRoutes(routes); });
    return std::nullopt;
  }

  // The pod `wanted` names on this node, as NAMESPACE/NAME.
  std::optional<Failure> ResolvePod(const std::string& wanted, std::string* key) {
    AdminJson pods;
    if (auto failure = Fetch("/pods", &pods)) return failure;
    std::vector<std::string> matches;
    for (const AdminJson& pod : pods.value("pods", AdminJson::array())) {
      const std::string candidate = pod.value("namespace", "") + "/" + pod.value("name", "");
      if (PodMatches(candidate, wanted)) matches.push_back(candidate);
    }
    if (matches.empty()) {
      return Failure{
          1, fmt::format("no pod '{}' on node {}: see `pods`", wanted, pods.value("node", "?"))};
    }
    if (matches.size() > 1) {
      return Failure{2, fmt::format("'{}' names pods in several namespaces ({}): give "
                                    "NAMESPACE/NAME",
                                    wanted, fmt::join(matches, ", "))};
    }
    *key = matches[0];
    return std::nullopt;
  }

  std::optional<Failure> Tap() {
    const auto flag = [&](const char* name) {
      const auto it = line_.flags.find(name);
      return it == line_.flags.end() ? std::string() : it->second;
    };
    std::string pod;
    if (ArgCount() == 1) {
      if (auto failure = ResolvePod(Arg(0), &pod)) return failure;
    }
    const std::string path = flag("path");
    if (!path.empty() && path[0] != '/') {
      return Failure{2, fmt::format("--path '{}' must start with /: e.g. --path /api", path)};
    }
    const std::string max_events = flag("max-events");
    if (!max_events.empty() && !IsCount(max_events)) {
      return Failure{2, fmt::format("--max-events {}: give a number of events", max_events)};
    }
    const std::string max_rps = flag("max-rps");
    if (!max_rps.empty() && (!IsCount(max_rps) || std::stoull(max_rps) == 0)) {
      return Failure{2, fmt::format("--max-rps {}: give a number of requests a second above 0 "
                                    "(default 100)",
                                    max_rps)};
    }
    // The session is this tap's name on the agent: it ends when we stop asking.
    std::random_device random;
    std::string target = fmt::format("/tap?session=shell-{:08x}{:08x}", random(), random());
    for (const auto& [parameter, value] :
         {std::pair{"pod", pod}, std::pair{"method", flag("method")}, std::pair{"path", path},
          std::pair{"authority", flag("authority")}, std::pair{"scheme", flag("scheme")},
          std::pair{"max_rps", max_rps}}) {
      if (!value.empty()) target += fmt::format("&{}={}", parameter, PercentEncode(value, "/"));
    }
    const uint64_t limit = max_events.empty() ? 0 : std::stoull(max_events);
    uint64_t shown = 0;
    // Ctrl-C is heard while we listen, rather than ending meshctl.
    const CancelSource::Registration listening = cancel_.OnCancel([] {});
    // Until Ctrl-C: the REPL (or meshctl) turns SIGINT into cancel_.
    while (!cancel_.cancelled()) {
      AdminJson batch;
      if (auto failure = Fetch(target, &batch)) return failure;
      if (const uint64_t dropped = batch.value("dropped", uint64_t{0}); dropped != 0) {
        v1::TapDrops drops;
        drops.set_agent_dropped(dropped);
        err_ << RenderTapDrops(drops) << std::flush;
      }
      for (const AdminJson& event_json : batch.value("events", AdminJson::array())) {
        v1::TapEvent event;
        if (!google::protobuf::util::JsonStringToMessage(event_json.dump(), &event).ok()) continue;
        out_ << RenderTapEvent(event, format_ == OutputFormat::kJson ? OutputFormat::kJson
                                                                     : OutputFormat::kTable)
             << std::flush;
        if (limit != 0 && ++shown >= limit) return std::nullopt;
      }
      cancel_.WaitFor(kTapPollInterval);
    }
    return std::nullopt;
  }

  std::optional<Failure> ExplainTarget() {
    if (ArgCount() != 1) return Failure{2, "give a pod (NAMESPACE/NAME or NAME) or IP[:PORT]"};
    absl::StatusOr<ExplainInputs> inputs = FetchExplainInputs(agent_);
    if (!inputs.ok()) return Failure{1, std::string(inputs.status().message())};
    absl::StatusOr<AdminJson> explanation = Explain(Arg(0), *inputs);
    if (!explanation.ok()) return Failure{1, std::string(explanation.status().message())};
    Print(*explanation, RenderShellExplain);
    // As `meshctl check` does: a failing step is a non-zero exit, for scripts.
    if (!(*explanation)["first_failure"].is_null()) return Failure{1, ""};
    return std::nullopt;
  }

  std::optional<Failure> LogLevel() {
    static const std::set<std::string> kLevels = {"debug", "info", "warning", "error"};
    if (ArgCount() != 1 || !kLevels.contains(Arg(0))) {
      return Failure{2, "give a level: log-level debug|info|warning|error"};
    }
    absl::StatusOr<std::string> done = agent_.Post("/log-level?level=" + Arg(0));
    if (!done.ok()) return Failure{1, std::string(done.status().message())};
    const AdminJson json = {{"log_level", Arg(0)}};
    Print(json, [&](const AdminJson&) { return fmt::format("log level set to {}\n", Arg(0)); });
    return std::nullopt;
  }

  AdminClient& agent_;
  OutputFormat format_;
  CancelSource& cancel_;
  const ShellLine& line_;
  std::ostream& out_;
  std::ostream& err_;
};

}  // namespace

std::vector<std::string> ShellCommandNames() {
  std::vector<std::string> names;
  for (const CommandSpec& spec : Commands()) names.emplace_back(spec.name);
  return names;
}

Shell::Outcome Shell::Run(std::string_view text, std::ostream& out, std::ostream& err) {
  absl::StatusOr<ShellLine> line = ParseShellLine(text);
  if (!line.ok()) {
    err << fmt::format("error: {}\n", line.status().message());
    return {2, false};
  }
  if (line->words.empty()) return {};
  const std::string& name = line->words[0];
  const CommandSpec* spec = FindCommand(name);
  if (spec == nullptr) {
    err << fmt::format(
        "error: unknown command '{}': the commands are {} (help COMMAND says more)\n", name,
        CommandList());
    return {2, false};
  }
  if (name == "exit") return {0, true};
  const auto usage = [&](std::string_view problem) {
    err << fmt::format("error: {}: {} (usage: {})\n", name, problem, spec->usage);
    return Outcome{2, false};
  };
  if (line->words.size() - 1 > spec->max_args) return usage("too many arguments");
  OutputFormat format = format_;
  for (const auto& [flag, value] : line->flags) {
    if (flag == "output") {
      absl::StatusOr<OutputFormat> parsed =
          ParseOutputFormat(value, "shell", {OutputFormat::kTable, OutputFormat::kJson});
      if (!parsed.ok()) return usage(std::string(parsed.status().message()));
      format = *parsed;
    } else if (std::find(spec->flags.begin(), spec->flags.end(), flag) == spec->flags.end()) {
      return usage(fmt::format("--{} is not one of its flags", flag));
    }
  }
  std::optional<Failure> failure =
      Execution(agent_, format, cancel_, *line, out, err).Execute(*spec);
  if (!failure) return {};
  if (failure->code == 2) return usage(failure->message);
  if (!failure->message.empty()) err << fmt::format("error: {}: {}\n", name, failure->message);
  return {failure->code, false};
}

std::string Shell::Node() {
  absl::StatusOr<AdminJson> version = agent_.Get("/version");
  return version.ok() ? version->value("node", "") : "";
}

std::vector<std::string> Shell::Complete(const std::vector<std::string>& before,
                                         std::string_view prefix) {
  std::set<std::string> words;
  const auto pods = [&] {
    if (absl::StatusOr<AdminJson> answer = agent_.Get("/pods"); answer.ok()) {
      for (const AdminJson& pod : answer->value("pods", AdminJson::array())) {
        words.insert(pod.value("namespace", "") + "/" + pod.value("name", ""));
        words.insert(pod.value("name", ""));
      }
    }
  };
  if (before.empty() || (before.size() == 1 && before[0] == "help")) {
    for (const CommandSpec& spec : Commands()) words.emplace(spec.name);
  } else if (prefix.starts_with("-")) {
    words.insert("-o");
    if (const CommandSpec* spec = FindCommand(before[0])) {
      for (std::string_view flag : spec->flags) words.insert(fmt::format("--{}", flag));
    }
  } else if (before.back() == "-o" || before.back() == "--output") {
    words = {"table", "json"};
  } else if (before.back() == "--proto") {
    words = {"detecting", "http1", "http2", "tls", "opaque"};
  } else if ((before[0] == "explain" || before[0] == "routes" || before[0] == "tap") &&
             before.size() == 1) {
    pods();
  } else if (before[0] == "conns" && before.size() == 1) {
    pods();
    if (absl::StatusOr<AdminJson> answer = agent_.Get("/connections"); answer.ok()) {
      for (const AdminJson& c : answer->value("connections", AdminJson::array())) {
        words.insert(c.value("id", ""));
      }
    }
  } else if (before[0] == "kernel" && before.size() == 1) {
    words.insert("map");
  } else if (before[0] == "kernel" && before.size() == 2 && before[1] == "map") {
    if (absl::StatusOr<AdminJson> answer = agent_.Get("/kernel"); answer.ok()) {
      for (const AdminJson& map : answer->value("maps", AdminJson::array())) {
        words.insert(map.value("name", ""));
      }
    }
  } else if (before[0] == "log-level" && before.size() == 1) {
    words = {"debug", "info", "warning", "error"};
  }
  std::vector<std::string> matches;
  for (const std::string& word : words) {
    if (!word.empty() && word.starts_with(prefix)) matches.push_back(word);
  }
  return matches;
}

}  // namespace nodemesh::cli
