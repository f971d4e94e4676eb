#include "cli/views/shell.h"

#include <algorithm>
#include <cctype>
#include <vector>

#include "cli/views/format.h"
#include "common/base/format.h"

namespace nodemesh::cli {
namespace {

// The admin API's answers, as the shell fetched them.
using AdminJson = nlohmann::json;

std::string Text(const AdminJson& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) return value.get<std::string>().empty() ? "-" : value.get<std::string>();
  if (value.is_boolean()) return value.get<bool>() ? "yes" : "no";
  if (value.is_array()) {
    if (value.empty()) return "-";
    std::vector<std::string> items;
    for (const AdminJson& item : value) items.push_back(Text(item));
    return fmt::format("{}", fmt::join(items, ","));
  }
  return value.dump();
}

std::string Field(const AdminJson& object, const char* key) {
  const auto it = object.find(key);
  return it == object.end() ? "-" : Text(*it);
}

uint64_t Number(const AdminJson& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<uint64_t>() : 0;
}

// "origin.pod_id" -> "ORIGIN POD ID"
std::string Header(std::string_view key) {
  std::string header;
  for (char c : key) {
    header += (c == '_' || c == '.') ? ' ' : static_cast<char>(std::toupper(c));
  }
  return header;
}

// Counters as NAME VALUE rows, in the order of the object (sorted by name).
std::string CounterTable(const AdminJson& counters, std::string_view heading) {
  Table table({{std::string(heading), Align::kLeft}, {"VALUE"}});
  for (const auto& [name, value] : counters.items()) {
    if (value.is_number()) table.AddRow({name, value.dump()});
  }
  return table.Render();
}

void Flatten(const AdminJson& value, const std::string& prefix,
             std::vector<std::pair<std::string, std::string>>* out) {
  if (value.is_object()) {
    for (const auto& [key, inner] : value.items()) {
      Flatten(inner, prefix.empty() ? key : prefix + "." + key, out);
    }
    return;
  }
  out->emplace_back(prefix, Text(value));
}

// Live and ended connections share a table but for three columns: how each stands (state,
// age, idle time) or how it ended (the end, how long it lasted, how long ago).
std::string ConnectionsTable(const AdminJson& connections, bool ended, std::string_view none) {
  Table table({{"ID", Align::kLeft},
               {"POD", Align::kLeft},
               {"DIRECTION", Align::kLeft},
               {"CLIENT", Align::kLeft},
               {"DESTINATION", Align::kLeft},
               {"PROTOCOL", Align::kLeft},
               {ended ? "END" : "STATE", Align::kLeft},
               {ended ? "LASTED" : "AGE"},
               {ended ? "ENDED" : "IDLE"},
               {"BYTES OUT"},
               {"BYTES IN"},
               {"REQUESTS"}});
  for (const AdminJson& c : connections) {
    const auto age = [&](const char* field) {
      return FormatAge(static_cast<int64_t>(Number(c, field)));
    };
    table.AddRow({Field(c, "id"), Field(c, "pod"), Field(c, "direction"), Field(c, "client"),
                  Field(c, "destination"), Field(c, "protocol"), Field(c, ended ? "end" : "state"),
                  age(ended ? "duration_ms" : "age_ms"),
                  ended ? age("ended_ms_ago") + " ago" : age("idle_ms"),
                  FormatBytes(Number(c, "bytes_to_upstream")),
                  FormatBytes(Number(c, "bytes_to_client")),
                  std::to_string(Number(c, "requests"))});
  }
  if (table.rows() == 0) return std::string(none) + "\n";
  return table.Render();
}

}  // namespace

std::string FormatAge(int64_t milliseconds) {
  if (milliseconds < 1000) return fmt::format("{}ms", std::max<int64_t>(milliseconds, 0));
  return FormatSeconds(milliseconds / 1000);
}

std::string RenderShellPods(const AdminJson& pods) {
  Table table({{"POD", Align::kLeft},
               {"MESHED", Align::kLeft},
               {"STATE", Align::kLeft},
               {"IPS", Align::kLeft},
               {"CGROUP ID"},
               {"CGROUP", Align::kLeft},
               {"NETNS", Align::kLeft},
               {"CAPTURED", Align::kLeft},
               {"REASON", Align::kLeft}});
  for (const AdminJson& pod : pods.value("pods", AdminJson::array())) {
    table.AddRow({Field(pod, "namespace") + "/" + Field(pod, "name"), Field(pod, "meshed"),
                  Field(pod, "state"), Field(pod, "ips"), Field(pod, "cgroup_id"),
                  Field(pod, "cgroup"), Field(pod, "netns"), Field(pod, "inbound"),
                  Field(pod, "state_reason")});
  }
  if (table.rows() == 0) return "no pods in this node's inventory\n";
  return table.Render();
}

std::string RenderShellConnections(const AdminJson& connections) {
  return ConnectionsTable(connections, /*ended=*/false, "no live connections");
}

std::string RenderShellClosedConnections(const AdminJson& connections) {
  return ConnectionsTable(connections, /*ended=*/true, "none");
}

std::string RenderShellRoutes(const AdminJson& routes) {
  Table table({{"DIRECTION", Align::kLeft},
               {"SOURCE", Align::kLeft},
               {"DESTINATION", Align::kLeft},
               {"ROUTE", Align::kLeft},
               {"RESPONSES"},
               {"FAILURES"},
               {"SUCCESS"},
               {"P50"},
               {"P95"},
               {"P99"}});
  const auto workload = [](const AdminJson& end) {
    const std::string pod = end.value("pod", "");
    if (pod.empty()) return std::string("external");
    return end.value("namespace", "") + "/" + pod;
  };
  for (const AdminJson& r : routes) {
    const uint64_t responses = Number(r, "responses");
    const uint64_t failures = Number(r, "failures");
    const AdminJson latency = r.value("latency_ns", AdminJson::object());
    const auto percentile = [&](const char* name) {
      return responses == 0 ? std::string("-") : FormatLatency(latency.value(name, int64_t{0}));
    };
    table.AddRow({Field(r, "direction"), workload(r.value("source", AdminJson::object())),
                  workload(r.value("destination", AdminJson::object())), Field(r, "route"),
                  std::to_string(responses), std::to_string(failures),
                  responses == 0 ? std::string("-")
                                 : FormatSuccessRate(static_cast<double>(responses - failures) /
                                                     static_cast<double>(responses)),
                  percentile("p50"), percentile("p95"), percentile("p99")});
  }
  if (table.rows() == 0) return "no routes yet (HTTP and gRPC requests through the agent)\n";
  return table.Render();
}

std::string RenderShellStats(const AdminJson& stats) {
  return fmt::format("{}\n{}", CounterTable(stats.value("proxy", AdminJson::object()), "PROXY"),
                     CounterTable(stats.value("kernel", AdminJson::object()), "KERNEL"));
}

std::string RenderShellKernel(const AdminJson& kernel) {
  Table programs({{"PROGRAM", Align::kLeft},
                  {"TYPE", Align::kLeft},
                  {"ATTACH TYPE", Align::kLeft},
                  {"ATTACH POINT", Align::kLeft},
                  {"PROG ID"},
                  {"LINK ID"}});
  for (const AdminJson& p : kernel.value("programs", AdminJson::array())) {
    std::string point = Field(p, "attach_point");
    if (p.contains("pod")) point += " (" + Field(p, "pod") + ")";
    programs.AddRow({Field(p, "name"), Field(p, "type"), Field(p, "attach_type"), point,
                     Field(p, "program_id"), Field(p, "link_id")});
  }
  Table maps(
      {{"MAP", Align::kLeft}, {"TYPE", Align::kLeft}, {"ENTRIES"}, {"CAPACITY"}, {"MAP ID"}});
  for (const AdminJson& m : kernel.value("maps", AdminJson::array())) {
    maps.AddRow({Field(m, "name"), Field(m, "type"), Field(m, "entries"), Field(m, "capacity"),
                 Field(m, "map_id")});
  }
  return fmt::format("{}\n{}\n{}", programs.Render(), maps.Render(),
                     CounterTable(kernel.value("counters", AdminJson::object()), "COUNTER"));
}

std::string RenderShellKernelMap(const AdminJson& map) {
  std::string text = fmt::format("map {} ({}): {} of {} entries", Field(map, "map"),
                                 Field(map, "type"), Number(map, "count"), Number(map, "capacity"));
  const AdminJson entries = map.value("entries", AdminJson::array());
  if (map.value("truncated", false)) text += fmt::format(", the first {} shown", entries.size());
  text += "\n";
  if (entries.empty()) return text;
  // A column per field any entry has, in the order they first appear.
  std::vector<std::string> keys;
  std::vector<std::vector<std::pair<std::string, std::string>>> rows;
  for (const AdminJson& entry : entries) {
    auto& row = rows.emplace_back();
    Flatten(entry, "", &row);
    for (const auto& [key, value] : row) {
      if (std::find(keys.begin(), keys.end(), key) == keys.end()) keys.push_back(key);
    }
  }
  // Keys first, then what they map to; the agent's JSON has its fields sorted by name.
  static const std::vector<std::string_view> kOrder = {"cgroup_id",
                                                       "socket_cookie",
                                                       "netns_cookie",
                                                       "source",
                                                       "destination",
                                                       "endpoint",
                                                       "pod_address",
                                                       "port",
                                                       "counter",
                                                       "value",
                                                       "pod_id",
                                                       "pod",
                                                       "flags",
                                                       "ipv4",
                                                       "ipv6",
                                                       "family",
                                                       "origin.destination",
                                                       "origin.family",
                                                       "origin.pod_id",
                                                       "origin.pod",
                                                       "origin.cgroup_id"};
  const auto rank = [](const std::string& key) {
    return std::find(kOrder.begin(), kOrder.end(), key) - kOrder.begin();
  };
  std::stable_sort(keys.begin(), keys.end(),
                   [&](const std::string& a, const std::string& b) { return rank(a) < rank(b); });
  std::vector<Table::Column> columns;
  for (const std::string& key : keys) columns.push_back({Header(key), Align::kLeft});
  Table table(columns);
  for (const auto& row : rows) {
    std::vector<std::string> cells(keys.size(), "-");
    for (const auto& [key, value] : row) {
      cells[static_cast<size_t>(std::find(keys.begin(), keys.end(), key) - keys.begin())] = value;
    }
    table.AddRow(std::move(cells));
  }
  return text + "\n" + table.Render();
}

std::string RenderShellConfig(const AdminJson& config) {
  std::vector<std::pair<std::string, std::string>> settings;
  Flatten(config, "", &settings);
  Table table({{"SETTING", Align::kLeft}, {"VALUE", Align::kLeft}});
  for (const auto& [key, value] : settings) table.AddRow({key, value});
  return table.Render();
}

std::string RenderShellVersion(std::string_view meshctl_version, const AdminJson& agent) {
  return fmt::format("meshctl version {}\nagent version {} on node {} (kernel {})\n",
                     meshctl_version, Field(agent, "version"), Field(agent, "node"),
                     Field(agent, "kernel_release"));
}

std::string RenderShellExplain(const AdminJson& explanation) {
  std::string text = fmt::format("explain {} on node {}", explanation.value("target", ""),
                                 explanation.value("node", ""));
  if (explanation["pod"].is_string() && explanation["pod"] != explanation["target"]) {
    text += fmt::format(" (pod {})", explanation["pod"].get<std::string>());
  }
  text += "\n\n";
  for (const AdminJson& step : explanation["steps"]) {
    const AdminJson& ok = step["ok"];
    const std::string mark = ok.is_null() ? "  -  " : ok.get<bool>() ? " ok  " : "FAIL ";
    text += fmt::format("{} {}: {}\n", mark, step.value("check", ""), step.value("detail", ""));
    if (step.contains("fix")) text += fmt::format("      -> {}\n", step.value("fix", ""));
  }
  if (explanation["first_failure"].is_null()) {
    text += "\nEvery step passes: this traffic goes through the agent.\n";
  } else {
    text += "\nSteps marked - were not reached: fix the first failure first.\n";
  }
  const std::string counters_of = explanation.value("counters_of", "node");
  if (counters_of == "node") {
    text += "\nKernel counters (the node's, all pods):";
    for (const auto& [name, value] : explanation["counters"].items()) {
      if (name == "redirected_ipv4" || name == "redirected_ipv6" || name == "inbound_steered" ||
          name == "origin_save_failed" || name == "tuple_save_failed" ||
          name == "inbound_no_listener") {
        text += fmt::format(" {}={}", name, value.dump());
      }
    }
  } else {
    text += fmt::format("\nKernel counters of {}:", counters_of);
    for (const char* name : {"redirected", "origin_save_failed", "inbound_steered",
                             "inbound_no_listener", "inbound_assign_failed"}) {
      text += fmt::format(" {}={}", name, explanation["counters"].value(name, AdminJson(0)).dump());
    }
  }
  text += "\n\nLive connections that match:\n";
  text += RenderShellConnections(explanation["connections"]);
  text += "\nThe last connections that ended:\n";
  text += RenderShellClosedConnections(explanation.value("recently_closed", AdminJson::array()));
  return text;
}

}  // namespace nodemesh::cli
