// The agent's admin API (JSON on a root-only Unix socket, documented in the README) and its
// /metrics endpoint. Everything they show is read from the running agent and its kernel
// maps at the moment of the request.
#include <google/protobuf/util/json_util.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/numbers.h"
#include "agent/agent.h"
#include "common/base/log.h"
#include "common/base/version.h"
#include "common/wire/convert.h"

namespace nodemesh::agent {
namespace {

constexpr const char* kText = "text/plain; charset=utf-8";

HttpResponse JsonResponse(const nlohmann::json& body) {
  return HttpResponse{200, "application/json", body.dump(2) + "\n"};
}

nlohmann::json ProxyTotals(const std::vector<std::unique_ptr<Worker>>& workers) {
  nlohmann::json totals = nlohmann::json::object();
  const auto add = [&](const char* name, const Counter& counter) {
    totals[name] = totals.value(name, uint64_t{0}) + counter.value();
  };
  for (const auto& worker : workers) {
    const ProxyStats& s = worker->stats();
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
    const ObserverStats& o = worker->observer_stats();
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
    const UpstreamDialer& dialer = worker->upstream_dialer();
    if (const ConntrackStats* c = dialer.conntrack_stats()) {
      add("service_translated", c->translated);
      add("service_not_translated", c->not_translated);
      add("service_lookup_failed", c->failed);
    }
    add("service_lookup_unavailable", dialer.service_lookups_unavailable());
  }
  totals["active"] = totals["accepted_outbound"].get<uint64_t>() +
                     totals["accepted_inbound"].get<uint64_t>() - totals["closed"].get<uint64_t>();
  return totals;
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

}  // namespace

void Agent::ServeMetrics(HttpServer& server) {
  metrics_address_ = server.address();
  server.Handle("/metrics", [this](const HttpRequest&) {
    return HttpResponse{200, "text/plain; version=0.0.4; charset=utf-8",
                        registry_.PrometheusText()};
  });
  server.Handle("/readyz", [this](const HttpRequest&) {
    if (ready_.load(std::memory_order_acquire)) return HttpResponse{200, kText, "ready\n"};
    std::string waiting = "not ready: waiting for the first inventory";
    if (const InventorySource* source = source_.load(std::memory_order_acquire)) {
      const nlohmann::json statuses = source->Status();  // items() must not outlive it
      for (const auto& [what, status] : statuses.items()) {
        if (status.is_object() && !status.value("last_error", std::string()).empty()) {
          waiting += fmt::format("; {}: {}", what, status["last_error"].get<std::string>());
        }
      }
    }
    return HttpResponse{503, kText, waiting + "\n"};
  });
  server.Handle("/healthz", [this](const HttpRequest&) {
    const int64_t silent = SecondsSinceHeartbeat();
    if (silent < kStallSeconds) return HttpResponse{200, kText, "ok\n"};
    return HttpResponse{
        503, kText, fmt::format("unhealthy: the control loop has not turned for {}s\n", silent)};
  });
}

void Agent::ServeAdmin(HttpServer& server) {
  admin_address_ = server.address();
  server.Serve(admin_routes_);
}

HttpResponse Agent::AnswerRelayed(std::string_view target) const {
  return admin_routes_.Serve(HttpRoutes::Request("GET", target));
}

HttpRoutes Agent::AdminRoutes() {
  HttpRoutes api;
  api.Handle("/version", [this](const HttpRequest&) {
    utsname kernel{};
    ::uname(&kernel);
    return JsonResponse(
        {{"node", options_.node}, {"version", kVersion}, {"kernel_release", kernel.release}});
  });
  api.Handle("/config", [this](const HttpRequest&) {
    const bool kubernetes = options_.inventory_path == "kubernetes";
    return JsonResponse({
        {"node", options_.node},
        {"version", kVersion},
        {"inventory",
         {{"source", kubernetes ? "kubernetes" : "file"},
          {"path", kubernetes ? "" : options_.inventory_path}}},
        {"aggregator", options_.aggregator_address},
        {"aggregator_tls",
         {{"ca", options_.aggregator_tls.ca},
          {"cert", options_.aggregator_tls.cert},
          {"server_name", options_.aggregator_tls.server_name}}},
        {"admin_socket", admin_address_},
        {"metrics_address", metrics_address_},
        {"cgroup_root", options_.cgroup_root},
        {"cgroup_mount", cgroup_mount_},
        {"proc_root", options_.proc_root},
        {"workers", workers_.size()},
        {"outbound_port", options_.outbound_port},
        {"inbound_port", options_.inbound_port},
        {"max_pods", options_.max_pods},
        {"excluded_ports", options_.excluded_ports},
        {"marks",
         {{"upstream", Hex(options_.marks.upstream)},
          {"transparent", Hex(options_.marks.transparent)},
          {"transparent_table", Hex(options_.marks.transparent_table)}}},
        {"timeouts_ms",
         {{"connect", Milliseconds(options_.proxy.connect_timeout_ns)},
          {"idle", Milliseconds(options_.proxy.idle_timeout_ns)},
          {"metrics_retain_idle", Milliseconds(options_.observer.retain_idle_ns)}}},
        {"buffers",
         {{"size", options_.proxy.buffer_size}, {"per_worker", options_.proxy.max_buffers}}},
        {"l7", options_.observer.l7 ? "on" : "off"},
        {"tap",
         {{"headers", options_.observer.parser_config.captured_headers},
          {"redact_headers", options_.observer.tap_redaction.headers},
          {"strip_query", options_.observer.tap_redaction.strip_query}}},
        {"max_routes", options_.observer.max_routes_per_workload},
        {"log_level", LogLevelName(CurrentLogLevel())},
    });
  });
  api.Handle("/kernel", [this](const HttpRequest&) {
    nlohmann::json programs = nlohmann::json::array();
    const std::string cgroup_path =
        cgroup_mount_ + (options_.cgroup_root == "/" ? "" : options_.cgroup_root);
    for (const AttachedProgram& program : datapath_->CgroupPrograms()) {
      programs.push_back(ProgramJson(program, "cgroup " + cgroup_path));
    }
    {
      std::lock_guard lock(mutex_);
      for (const PodInfo& info : inventory_.pods) {
        const auto enrolled = enrolled_.find(info.key());
        if (enrolled == enrolled_.end() || enrolled->second->inbound_link() == nullptr) continue;
        absl::StatusOr<AttachedProgram> program =
            DescribeLink(enrolled->second->inbound_link()->fd(), "nm_sk_lookup");
        if (!program.ok()) continue;
        nlohmann::json json = ProgramJson(*program, "netns " + info.netns);
        json["pod"] = info.key();
        programs.push_back(json);
      }
    }
    nlohmann::json maps = nlohmann::json::array();
    for (const MapSummary& map : datapath_->Maps()) {
      maps.push_back({{"name", map.name},
                      {"type", map.type},
                      {"map_id", map.map_id},
                      {"entries", map.entries},
                      {"capacity", map.capacity}});
    }
    nlohmann::json counters = nlohmann::json::object();
    const CounterValues values = datapath_->ReadCounters();
    for (uint32_t i = 0; i < NM_COUNTER_COUNT; ++i) {
      counters[std::string(CounterName(static_cast<nm_counter>(i)))] = values[i];
    }
    return JsonResponse(
        {{"node", options_.node}, {"programs", programs}, {"maps", maps}, {"counters", counters}});
  });
  api.Handle("/kernel/maps/", [this](const HttpRequest& request) {
    const std::string name = request.path.substr(std::string_view("/kernel/maps/").size());
    size_t limit = 1000;
    if (const auto it = request.query.find("limit"); it != request.query.end()) {
      if (!absl::SimpleAtoi(it->second, &limit)) {
        return HttpResponse{400, kText, "limit must be a number of entries\n"};
      }
    }
    absl::StatusOr<nlohmann::json> dump = datapath_->DumpMap(name, limit);
    if (!dump.ok()) return HttpResponse{404, kText, std::string(dump.status().message()) + "\n"};
    // The agent's pod ids, named.
    absl::flat_hash_map<uint32_t, std::string> pods;
    {
      std::lock_guard lock(mutex_);
      for (const auto& [key, enrolment] : enrolled_) pods[enrolment->runtime().id()] = key;
    }
    for (nlohmann::json& entry : (*dump)["entries"]) {
      nlohmann::json* with_id = entry.contains("pod_id")   ? &entry
                                : entry.contains("origin") ? &entry["origin"]
                                                           : nullptr;
      if (with_id == nullptr) continue;
      const auto pod = pods.find((*with_id)["pod_id"].get<uint32_t>());
      if (pod != pods.end()) (*with_id)["pod"] = pod->second;
    }
    (*dump)["node"] = options_.node;
    return JsonResponse(*dump);
  });
  api.Handle("/stats", [this](const HttpRequest&) {
    nlohmann::json proxy = ProxyTotals(workers_);
    proxy["listeners"] = ListenerCount();
    proxy["identities"] = identities_.size();
    nlohmann::json kernel = nlohmann::json::object();
    const CounterValues counters = datapath_->ReadCounters();
    for (uint32_t i = 0; i < NM_COUNTER_COUNT; ++i) {
      kernel[std::string(CounterName(static_cast<nm_counter>(i)))] = counters[i];
    }
    nlohmann::json response = {{"node", options_.node}, {"proxy", proxy}, {"kernel", kernel}};
    if (aggregator_) {
      response["aggregator"] = {{"connected", aggregator_->connected()},
                                {"unacknowledged_deltas", aggregator_->unacknowledged_deltas()},
                                {"dropped_deltas", aggregator_->dropped_deltas()}};
    }
    if (const InventorySource* source = source_.load(std::memory_order_acquire)) {
      if (nlohmann::json status = source->Status(); !status.empty())
        response["kubernetes"] = status;
    }
    return JsonResponse(response);
  });
  api.Handle("/pods", [this](const HttpRequest&) {
    std::lock_guard lock(mutex_);
    nlohmann::json pods = nlohmann::json::array();
    for (const PodInfo& info : inventory_.pods) {
      // A pod of another node (a local inventory may list the whole cluster) is not this
      // agent's to enrol: it only names the far end of connections.
      if (!OnThisNode(info)) continue;
      nlohmann::json pod = {{"namespace", info.namespace_name},
                            {"name", info.name},
                            {"owner", {{"kind", info.owner_kind}, {"name", info.owner_name}}},
                            {"meshed", info.meshed},
                            {"cgroup", info.cgroup},
                            {"netns", info.netns}};
      nlohmann::json ips = nlohmann::json::array();
      for (const IpAddress& ip : info.ips) ips.push_back(ip.ToString());
      pod["ips"] = ips;
      const auto enrolled = enrolled_.find(info.key());
      pod["enrolled"] = enrolled != enrolled_.end();
      if (enrolled != enrolled_.end()) {
        pod["inbound"] = enrolled->second->CapturedPorts();
        pod["cgroup_id"] = enrolled->second->cgroup_id();
        const uint32_t pod_id = enrolled->second->runtime().id();
        pod["pod_id"] = pod_id;
        if (const std::optional<nm_pod_counters> counters = datapath_->PodCounters(pod_id)) {
          pod["kernel_counters"] = PodCountersJson(*counters);
        }
      }
      if (const auto failed = not_enrolled_.find(info.key()); failed != not_enrolled_.end()) {
        pod["enrolment_error"] = failed->second;
      }
      const PodStatus status = StatusOf(info);
      pod["state"] = wire::PodStateName(status.state);
      pod["state_reason"] = status.reason;
      if (!info.uid.empty()) pod["uid"] = info.uid;
      pods.push_back(pod);
    }
    return JsonResponse({{"node", options_.node}, {"pods", pods}});
  });
  api.Handle("/connections", [this](const HttpRequest&) {
    nlohmann::json connections = nlohmann::json::array();
    nlohmann::json closed = nlohmann::json::array();
    for (const auto& worker : workers_) {
      std::vector<ConnectionSummary> live, ended;
      worker->RunAndWait([&] {
        live = worker->ListConnections();
        ended = worker->RecentlyClosed();
      });
      const auto json = [&](const ConnectionSummary& c) {
        return nlohmann::json{{"id", fmt::format("{}-{}", worker->index(), c.id)},
                              {"worker", worker->index()},
                              {"direction", DirectionName(c.direction)},
                              {"pod", c.pod},
                              {"client", c.client.ToString()},
                              {"destination", c.destination.ToString()},
                              {"protocol", c.protocol},
                              {"bytes_to_upstream", c.bytes_to_upstream},
                              {"bytes_to_client", c.bytes_to_client},
                              {"requests", c.requests}};
      };
      for (const ConnectionSummary& c : live) {
        nlohmann::json connection = json(c);
        connection["state"] = c.state;
        connection["age_ms"] = Milliseconds(c.age_ns);
        connection["idle_ms"] = Milliseconds(c.idle_ns);
        connections.push_back(std::move(connection));
      }
      for (const ConnectionSummary& c : ended) {
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
        {{"node", options_.node}, {"connections", connections}, {"recently_closed", closed}});
  });
  api.Handle("/routes", [this](const HttpRequest&) {
    nlohmann::json routes = nlohmann::json::array();
    const auto workload = [this](uint32_t id) {
      const metrics::Identity identity = identities_.Get(id);
      return nlohmann::json{{"namespace", identity.namespace_name},
                            {"pod", identity.pod},
                            {"owner_kind", identity.owner_kind},
                            {"owner_name", identity.owner_name}};
    };
    for (const metrics::Registry::RouteTotals& route : registry_.Routes()) {
      routes.push_back(
          {{"direction", metrics::DirectionName(route.traffic.direction)},
           {"source", workload(route.traffic.source)},
           {"destination", workload(route.traffic.destination)},
           {"route", route.route},
           {"responses", route.responses},
           {"failures", route.failures},
           {"latency_ns", {{"p50", route.p50_ns}, {"p95", route.p95_ns}, {"p99", route.p99_ns}}}});
    }
    return JsonResponse({{"node", options_.node}, {"routes", routes}});
  });
  api.Handle("/tap", [this](const HttpRequest& request) {
    const auto session = request.query.find("session");
    if (session == request.query.end() || !ValidSessionName(session->second)) {
      return TextResponse(400,
                          "GET /tap needs session=NAME (letters, digits, - and _; at most 64), "
                          "the same on every poll of one tap");
    }
    absl::StatusOr<TapFilter> filter = TapFilterOf(request.query);
    if (!filter.ok()) return TextResponse(400, std::string(filter.status().message()));
    absl::StatusOr<LocalTaps::Batch> batch =
        local_taps_->Poll(session->second, *std::move(filter), std::chrono::steady_clock::now());
    if (!batch.ok()) {
      const bool busy = absl::IsResourceExhausted(batch.status());
      return TextResponse(busy ? 503 : 409, std::string(batch.status().message()));
    }
    nlohmann::json events = nlohmann::json::array();
    google::protobuf::util::JsonPrintOptions print;
    print.preserve_proto_field_names = true;
    for (const v1::TapEvent& event : batch->events) {
      std::string text;
      if (google::protobuf::util::MessageToJsonString(event, &text, print).ok()) {
        events.push_back(nlohmann::json::parse(text));
      }
    }
    return JsonResponse({{"node", options_.node},
                         {"session", session->second},
                         {"events", events},
                         {"dropped", batch->dropped}});
  });
  api.Handle("/log-level", [](const HttpRequest& request) {
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
  });
  return api;
}

}  // namespace nodemesh::agent
