#include "agent/admin.h"

#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/numbers.h"
#include "common/base/log.h"
#include "common/base/version.h"
#include "common/wire/convert.h"

namespace nodemesh::agent {

using http::HttpRequest;
using http::HttpResponse;
using http::HttpRoutes;

namespace {

constexpr const char* kText = "text/plain; charset=utf-8";

HttpResponse JsonResponse(const nlohmann::json& body) {
  return HttpResponse{200, "application/json", body.dump(2) + "\n"};
}

// Every worker's counters, summed.
nlohmann::json ProxyTotals(const std::vector<WorkerCounters>& workers) {
  nlohmann::json totals = nlohmann::json::object();
  const auto add = [&](const char* name, const Counter& counter) {
    totals[name] = totals.value(name, uint64_t{0}) + counter.value();
  };
  for (const WorkerCounters& worker : workers) {
    const ProxyStats& s = worker.proxy;
    add("accepted_outbound", s.accepted[static_cast<size_t>(Direction::kOutbound)]);
    add("accepted_inbound", s.accepted[static_cast<size_t>(Direction::kInbound)]);
    add("closed", s.closed);
    add("origin_missing", s.origin_missing);
    add("upstream_refused", s.upstream_refused);
    add("upstream_failed", s.upstream_failed);
    add("connect_timeouts", s.connect_timeouts);
    add("idle_timeouts", s.idle_timeouts);
    add("resets", s.resets);
    add("accept_errors", s.accept_errors);
    add("same_node_direct", s.same_node_direct);
    const ObserverStats& o = worker.observer;
    add("bytes_to_upstream", o.bytes_to_upstream);
    add("bytes_to_client", o.bytes_to_client);
    for (size_t p = 0; p < parsers::kProtocolCount; ++p) {
      add(std::string(parsers::ProtocolName(static_cast<parsers::Protocol>(p))).c_str(),
          o.protocols[p]);
    }
    add("parse_failures", o.parse_failures);
    add("protocol_switches", o.protocol_switches);
    add("requests", o.requests);
    add("stream_ends", o.stream_ends);
    // Connections dialled to a Service: the pod its NAT chose found, not found, or not asked.
    if (const ConntrackStats* c = worker.conntrack) {
      add("service_translated", c->translated);
      add("service_not_translated", c->not_translated);
      add("service_lookup_failed", c->failed);
    }
    add("service_lookup_unavailable", worker.service_lookups_unavailable);
  }
  totals["active"] = totals["accepted_outbound"].get<uint64_t>() +
                     totals["accepted_inbound"].get<uint64_t>() - totals["closed"].get<uint64_t>();
  return totals;
}

// The kernel programs' counters, by name.
nlohmann::json KernelCounters(const Datapath& datapath) {
  nlohmann::json counters = nlohmann::json::object();
  const CounterValues values = datapath.ReadCounters();
  for (uint32_t i = 0; i < NM_COUNTER_COUNT; ++i) {
    counters[std::string(CounterName(static_cast<nm_counter>(i)))] = values[i];
  }
  return counters;
}

nlohmann::json ProgramJson(const AttachedProgram& program, std::string attach_point) {
  nlohmann::json json = {{"name", program.name},
                         {"type", program.type},
                         {"attach_type", program.attach_type},
                         {"attach_point", std::move(attach_point)},
                         {"program_id", program.program_id},
                         {"link_id", program.link_id}};
  if (program.cgroup_id != 0) json["cgroup_id"] = program.cgroup_id;
  if (program.netns_inode != 0) json["netns_inode"] = program.netns_inode;
  return json;
}

std::string Hex(uint32_t value) { return fmt::format("{:#x}", value); }

int64_t Milliseconds(int64_t nanoseconds) { return nanoseconds / 1'000'000; }

HttpResponse TextResponse(int status, std::string text) {
  return HttpResponse{status, kText, std::move(text) + "\n"};
}

// A local tap's filter from the query of GET /tap; an error names the parameter.
absl::StatusOr<TapFilter> TapFilterOf(const std::map<std::string, std::string>& query) {
  static const std::set<std::string> kKnown = {"session",   "pod",    "method", "path",
                                               "authority", "scheme", "max_rps"};
  for (const auto& [name, value] : query) {
    if (!kKnown.contains(name)) {
      return absl::InvalidArgumentError(fmt::format(
          "unknown parameter '{}': GET /tap takes session, pod, method, path, authority, scheme, "
          "max_rps",
          name));
    }
  }
  const auto get = [&](const char* name) {
    const auto it = query.find(name);
    return it == query.end() ? std::string() : it->second;
  };
  TapFilter filter;
  if (const std::string pod = get("pod"); !pod.empty()) {
    if (pod.find('/') == std::string::npos) {
      return absl::InvalidArgumentError(fmt::format("pod '{}': give NAMESPACE/NAME", pod));
    }
    filter.either.push_back(pod);
  }
  filter.method = get("method");
  filter.path_prefix = get("path");
  filter.authority = get("authority");
  filter.scheme = get("scheme");
  filter.max_rps = kDefaultLocalTapRps;
  if (const std::string rate = get("max_rps"); !rate.empty()) {
    if (!absl::SimpleAtod(rate, &filter.max_rps) || !(filter.max_rps > 0)) {
      return absl::InvalidArgumentError(
          fmt::format("max_rps '{}': give a number of requests a second above 0", rate));
    }
  }
  return filter;
}

// A session name is the client's: short, and safe in a log line.
bool ValidSessionName(std::string_view name) {
  return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  });
}

// ---- /metrics and the probes ----

HttpResponse ServeMetricsText(const AgentView& agent, const HttpRequest&) {
  return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8", agent.PrometheusText()};
}

HttpResponse ServeReadyz(const AgentView& agent, const HttpRequest&) {
  if (agent.ready()) return HttpResponse{200, kText, "ready\n"};
  std::string waiting = "not ready: waiting for the first inventory";
  if (const std::optional<nlohmann::json> statuses = agent.InventoryStatus()) {
    for (const auto& [what, status] : statuses->items()) {
      if (status.is_object() && !status.value("last_error", std::string()).empty()) {
        waiting += fmt::format("; {}: {}", what, status["last_error"].get<std::string>());
      }
    }
  }
  return HttpResponse{503, kText, waiting + "\n"};
}

HttpResponse ServeHealthz(const AgentView& agent, const HttpRequest&) {
  const int64_t silent = agent.SecondsSinceHeartbeat();
  if (silent < kStallSeconds) return HttpResponse{200, kText, "ok\n"};
  return HttpResponse{503, kText,
                      fmt::format("unhealthy: the control loop has not turned for {}s\n", silent)};
}

// ---- the admin API ----

HttpResponse ServeVersion(const AgentView& agent, const HttpRequest&) {
  utsname kernel{};
  ::uname(&kernel);
  return JsonResponse(
      {{"node", agent.options().node}, {"version", kVersion}, {"kernel_release", kernel.release}});
}

HttpResponse ServeConfig(const AgentView& agent, const HttpRequest&) {
  const AgentOptions& options = agent.options();
  const bool kubernetes = options.inventory_path == "kubernetes";
  return JsonResponse({
      {"node", options.node},
      {"version", kVersion},
      {"inventory",
       {{"source", kubernetes ? "kubernetes" : "file"},
        {"path", kubernetes ? "" : options.inventory_path}}},
      {"aggregator", options.aggregator_address},
      {"aggregator_tls",
       {{"ca", options.aggregator_tls.ca},
        {"cert", options.aggregator_tls.cert},
        {"server_name", options.aggregator_tls.server_name}}},
      {"aggregator_token_file", options.aggregator_token_file},
      {"admin_socket", agent.admin_address()},
      {"metrics_address", agent.metrics_address()},
      {"cgroup_root", options.cgroup_root},
      {"cgroup_mount", agent.cgroup_mount()},
      {"proc_root", options.proc_root},
      {"workers", options.workers},
      {"outbound_port", options.outbound_port},
      {"inbound_port", options.inbound_port},
      {"max_pods", options.max_pods},
      {"excluded_ports", options.excluded_ports},
      {"marks",
       {{"upstream", Hex(options.marks.upstream)},
        {"transparent", Hex(options.marks.transparent)},
        {"transparent_table", Hex(options.marks.transparent_table)}}},
      {"timeouts_ms",
       {{"connect", Milliseconds(options.proxy.connect_timeout_ns)},
        {"idle", Milliseconds(options.proxy.idle_timeout_ns)},
        {"quiet_after", Milliseconds(options.proxy.quiet_after_ns)},
        {"metrics_retain_idle", Milliseconds(options.observer.retain_idle_ns)}}},
      {"buffers", {{"size", options.proxy.buffer_size}, {"per_worker", options.proxy.max_buffers}}},
      {"l7", options.observer.l7 ? "on" : "off"},
      {"tap",
       {{"headers", options.observer.parser_config.captured_headers},
        {"redact_headers", options.observer.tap_redaction.headers},
        {"strip_query", options.observer.tap_redaction.strip_query}}},
      {"max_routes", options.observer.max_routes_per_workload},
      {"metrics_export",
       {{"latency_buckets", options.observer.metrics_export.latency_buckets},
        {"dropped_labels", options.observer.metrics_export.dropped_labels}}},
      {"log_level", LogLevelName(CurrentLogLevel())},
  });
}

HttpResponse ServeKernel(const AgentView& agent, const HttpRequest&) {
  const AgentOptions& options = agent.options();
  const Datapath& datapath = agent.datapath();
  nlohmann::json programs = nlohmann::json::array();
  const std::string cgroup_path =
      agent.cgroup_mount() + (options.cgroup_root == "/" ? "" : options.cgroup_root);
  for (const AttachedProgram& program : datapath.CgroupPrograms()) {
    programs.push_back(ProgramJson(program, "cgroup " + cgroup_path));
  }
  for (const PodProgram& pod : agent.PodPrograms()) {
    nlohmann::json json = ProgramJson(pod.program, "netns " + pod.netns);
    json["pod"] = pod.pod;
    programs.push_back(json);
  }
  nlohmann::json maps = nlohmann::json::array();
  for (const MapSummary& map : datapath.Maps()) {
    maps.push_back({{"name", map.name},
                    {"type", map.type},
                    {"map_id", map.map_id},
                    {"entries", map.entries},
                    {"capacity", map.capacity}});
  }
  return JsonResponse({{"node", options.node},
                       {"programs", programs},
                       {"maps", maps},
                       {"counters", KernelCounters(datapath)}});
}

HttpResponse ServeKernelMap(const AgentView& agent, const HttpRequest& request) {
  const std::string name = request.path.substr(std::string_view("/kernel/maps/").size());
  size_t limit = 1000;
  if (const auto it = request.query.find("limit"); it != request.query.end()) {
    if (!absl::SimpleAtoi(it->second, &limit)) {
      return HttpResponse{400, kText, "limit must be a number of entries\n"};
    }
  }
  absl::StatusOr<nlohmann::json> dump = agent.datapath().DumpMap(name, limit);
  if (!dump.ok()) return HttpResponse{404, kText, std::string(dump.status().message()) + "\n"};
  // The agent's pod ids, named.
  const absl::flat_hash_map<uint32_t, std::string> pods = agent.PodNamesById();
  for (nlohmann::json& entry : (*dump)["entries"]) {
    nlohmann::json* with_id = entry.contains("pod_id")   ? &entry
                              : entry.contains("origin") ? &entry["origin"]
                                                         : nullptr;
    if (with_id == nullptr) continue;
    const auto pod = pods.find((*with_id)["pod_id"].get<uint32_t>());
    if (pod != pods.end()) (*with_id)["pod"] = pod->second;
  }
  (*dump)["node"] = agent.options().node;
  return JsonResponse(*dump);
}

HttpResponse ServeStats(const AgentView& agent, const HttpRequest&) {
  nlohmann::json proxy = ProxyTotals(agent.Counters());
  proxy["listeners"] = agent.ListenerCount();
  proxy["identities"] = agent.identity_count();
  proxy["routes"] = agent.route_count();
  nlohmann::json response = {{"node", agent.options().node},
                             {"proxy", proxy},
                             {"kernel", KernelCounters(agent.datapath())}};
  if (const std::optional<AggregatorLinkStatus> link = agent.aggregator()) {
    response["aggregator"] = {{"connected", link->connected},
                              {"replicas", link->replicas},
                              {"connected_replicas", link->connected_replicas},
                              {"unacknowledged_deltas", link->unacknowledged_deltas},
                              {"dropped_deltas", link->dropped_deltas}};
  }
  if (std::optional<nlohmann::json> status = agent.InventoryStatus(); status && !status->empty()) {
    response["kubernetes"] = *std::move(status);
  }
  return JsonResponse(response);
}

HttpResponse ServePods(const AgentView& agent, const HttpRequest&) {
  nlohmann::json pods = nlohmann::json::array();
  for (const PodReport& report : agent.Pods()) {
    const PodInfo& info = report.info;
    nlohmann::json pod = {{"namespace", info.namespace_name},
                          {"name", info.name},
                          {"owner", {{"kind", info.owner_kind}, {"name", info.owner_name}}},
                          {"meshed", info.meshed},
                          {"cgroup", info.cgroup},
                          {"netns", info.netns}};
    nlohmann::json ips = nlohmann::json::array();
    for (const IpAddress& ip : info.ips) ips.push_back(ip.ToString());
    pod["ips"] = ips;
    pod["enrolled"] = report.enrolment.has_value();
    if (const std::optional<PodReport::Enrolment>& enrolment = report.enrolment) {
      pod["inbound"] = enrolment->captured_ports;
      pod["cgroup_id"] = enrolment->cgroup_id;
      pod["pod_id"] = enrolment->pod_id;
      if (const std::optional<nm_pod_counters> counters =
              agent.datapath().PodCounters(enrolment->pod_id)) {
        pod["kernel_counters"] = PodCountersJson(*counters);
      }
    }
    if (report.enrolment_error) pod["enrolment_error"] = *report.enrolment_error;
    pod["state"] = wire::PodStateName(report.state);
    pod["state_reason"] = report.state_reason;
    if (!info.uid.empty()) pod["uid"] = info.uid;
    pods.push_back(pod);
  }
  return JsonResponse({{"node", agent.options().node}, {"pods", pods}});
}

HttpResponse ServeConnections(const AgentView& agent, const HttpRequest&) {
  nlohmann::json connections = nlohmann::json::array();
  nlohmann::json closed = nlohmann::json::array();
  for (const WorkerConnections& worker : agent.Connections()) {
    const auto json = [&](const ConnectionSummary& c) {
      return nlohmann::json{{"id", fmt::format("{}-{}", worker.worker, c.id)},
                            {"worker", worker.worker},
                            {"direction", DirectionName(c.direction)},
                            {"pod", c.pod},
                            {"client", c.client.ToString()},
                            {"destination", c.destination.ToString()},
                            {"protocol", c.protocol},
                            {"bytes_to_upstream", c.bytes_to_upstream},
                            {"bytes_to_client", c.bytes_to_client},
                            {"requests", c.requests},
                            {"same_node_direct", c.same_node_direct}};
    };
    for (const ConnectionSummary& c : worker.live) {
      nlohmann::json connection = json(c);
      connection["state"] = c.state;
      connection["age_ms"] = Milliseconds(c.age_ns);
      connection["idle_ms"] = Milliseconds(c.idle_ns);
      connections.push_back(std::move(connection));
    }
    for (const ConnectionSummary& c : worker.recently_closed) {
      nlohmann::json connection = json(c);
      connection["end"] = c.state;
      connection["duration_ms"] = Milliseconds(c.age_ns);
      connection["ended_ms_ago"] = Milliseconds(c.idle_ns);
      closed.push_back(std::move(connection));
    }
  }
  // The latest first, whichever worker had them.
  std::stable_sort(closed.begin(), closed.end(), [](const auto& a, const auto& b) {
    return a["ended_ms_ago"].template get<int64_t>() < b["ended_ms_ago"].template get<int64_t>();
  });
  return JsonResponse(
      {{"node", agent.options().node}, {"connections", connections}, {"recently_closed", closed}});
}

HttpResponse ServeRoutes(const AgentView& agent, const HttpRequest&) {
  nlohmann::json routes = nlohmann::json::array();
  const auto workload = [&agent](metrics::IdentityTable::Id id) {
    const metrics::Identity identity = agent.LookupIdentity(id);
    return nlohmann::json{{"namespace", identity.namespace_name},
                          {"pod", identity.pod},
                          {"owner_kind", identity.owner_kind},
                          {"owner_name", identity.owner_name}};
  };
  for (const metrics::Registry::RouteTotals& route : agent.Routes()) {
    routes.push_back(
        {{"direction", metrics::DirectionName(route.traffic.direction)},
         {"source", workload(route.traffic.source)},
         {"destination", workload(route.traffic.destination)},
         {"route", route.route},
         {"responses", route.responses},
         {"failures", route.failures},
         {"latency_ns", {{"p50", route.p50_ns}, {"p95", route.p95_ns}, {"p99", route.p99_ns}}}});
  }
  return JsonResponse({{"node", agent.options().node}, {"routes", routes}});
}

HttpResponse ServeTap(const AgentView& agent, const HttpRequest& request) {
  const auto session = request.query.find("session");
  if (session == request.query.end() || !ValidSessionName(session->second)) {
    return TextResponse(400,
                        "GET /tap needs session=NAME (letters, digits, - and _; at most 64), "
                        "the same on every poll of one tap");
  }
  absl::StatusOr<TapFilter> filter = TapFilterOf(request.query);
  if (!filter.ok()) return TextResponse(400, std::string(filter.status().message()));
  absl::StatusOr<LocalTaps::Batch> batch = agent.PollTap(session->second, *std::move(filter));
  if (!batch.ok()) {
    const bool busy = absl::IsResourceExhausted(batch.status());
    return TextResponse(busy ? 503 : 409, std::string(batch.status().message()));
  }
  return JsonResponse({{"node", agent.options().node},
                       {"session", session->second},
                       {"events", TapEventsJson(batch->events)},
                       {"dropped", batch->dropped}});
}

// The process's log level: the one endpoint that changes anything, so POST (or PUT) only; a
// GET, as the aggregator relays every request, is refused.
HttpResponse ServeLogLevel(const AgentView&, const HttpRequest& request) {
  if (request.method != "POST" && request.method != "PUT") {
    return HttpResponse{405, "text/plain; charset=utf-8", "use POST /log-level?level=debug\n"};
  }
  LogLevel level;
  const auto it = request.query.find("level");
  if (it == request.query.end() || !ParseLogLevel(it->second, &level)) {
    return HttpResponse{400, "text/plain; charset=utf-8",
                        "level must be debug, info, warning or error\n"};
  }
  SetLogLevel(level);
  Log(LogLevel::kInfo, "log level set to {}", it->second);
  return HttpResponse{200, "text/plain; charset=utf-8", "ok\n"};
}

// An endpoint's handler: its answer to `request`, read from `agent`.
using Handler = HttpResponse (*)(const AgentView& agent, const HttpRequest& request);

HttpRoutes RoutesOf(const AgentView& agent,
                    std::initializer_list<std::pair<const char*, Handler>> handlers) {
  HttpRoutes routes;
  for (const std::pair<const char*, Handler>& route : handlers) {
    const Handler handler = route.second;
    routes.Handle(route.first, [&agent, handler](const HttpRequest& request) {
      return handler(agent, request);
    });
  }
  return routes;
}

}  // namespace

HttpRoutes AdminRoutes(const AgentView& agent) {
  return RoutesOf(agent, {{"/version", ServeVersion},
                          {"/config", ServeConfig},
                          {"/kernel", ServeKernel},
                          {"/kernel/maps/", ServeKernelMap},
                          {"/stats", ServeStats},
                          {"/pods", ServePods},
                          {"/connections", ServeConnections},
                          {"/routes", ServeRoutes},
                          {"/tap", ServeTap},
                          {"/log-level", ServeLogLevel}});
}

HttpRoutes MetricsRoutes(const AgentView& agent) {
  return RoutesOf(
      agent,
      {{"/metrics", ServeMetricsText}, {"/readyz", ServeReadyz}, {"/healthz", ServeHealthz}});
}

}  // namespace nodemesh::agent
