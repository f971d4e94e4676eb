#include "agent/kernel/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "agent/kernel/system.h"
#include "bpf/nodemesh.skel.h"
#include "common/base/format.h"

namespace nodemesh::agent {
namespace {

nm_endpoint ToKey(const Endpoint& endpoint) {
  nm_endpoint key{};
  std::memcpy(key.addr, endpoint.ip.bytes.data(), 16);
  key.port = endpoint.port;
  return key;
}

nm_tuple FlowKey(const Endpoint& source, const Endpoint& destination) {
  nm_tuple key{};
  std::memcpy(key.src_addr, source.ip.bytes.data(), 16);
  std::memcpy(key.dst_addr, destination.ip.bytes.data(), 16);
  key.src_port = source.port;
  key.dst_port = destination.port;
  return key;
}

absl::Status MapStatus(std::string_view what, int result) {
  // libbpf returns -errno and sets errno.
  return result == 0 ? absl::OkStatus() : ErrnoStatus(what, -result);
}

// The address of a shared-header struct: v4-mapped shown as IPv4, all zero as null.
nlohmann::json AddressJson(const __u8 (&bytes)[16]) {
  IpAddress ip;
  std::memcpy(ip.bytes.data(), bytes, 16);
  if (ip == IpAddress{}) return nullptr;
  return ip.ToString();
}

std::string EndpointString(const __u8 (&bytes)[16], uint16_t port) {
  Endpoint endpoint;
  std::memcpy(endpoint.ip.bytes.data(), bytes, 16);
  endpoint.port = port;
  return endpoint.ToString();
}

nlohmann::json OriginJson(const nm_origin& origin) {
  return {{"destination", EndpointString(origin.addr, origin.port)},
          {"family", origin.family == AF_INET6 ? "ipv6" : "ipv4"},
          {"pod_id", origin.pod_id},
          {"cgroup_id", origin.cgroup_id}};
}

nlohmann::json TupleJson(const nm_tuple& tuple) {
  nlohmann::json key = {{"source", EndpointString(tuple.src_addr, tuple.src_port)},
                        {"destination", EndpointString(tuple.dst_addr, tuple.dst_port)}};
  if (tuple.netns_cookie != 0) key["netns_cookie"] = tuple.netns_cookie;
  return key;
}

bool IsArray(bpf_map_type type) {
  return type == BPF_MAP_TYPE_ARRAY || type == BPF_MAP_TYPE_PERCPU_ARRAY;
}

bool IsPerCpu(bpf_map_type type) {
  return type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

// Calls `visit(key, value)` for each entry of `map` until it returns false; an array's
// all-zero elements are skipped (they are not set). A per-CPU value comes as every CPU's,
// each in 8 bytes.
template <typename Visit>
void ForEachEntry(const bpf_map* map, Visit visit) {
  const int fd = bpf_map__fd(map);
  const bpf_map_type type = bpf_map__type(map);
  const size_t key_size = bpf_map__key_size(map);
  size_t value_size = bpf_map__value_size(map);
  if (IsPerCpu(type)) {
    value_size = ((value_size + 7) / 8 * 8) * static_cast<size_t>(libbpf_num_possible_cpus());
  }
  std::vector<uint8_t> key(key_size), next(key_size), value(value_size);
  bool first = true;
  // A hash map's walk starts again from its first key when the key it stands on is deleted
  // meanwhile: bounded, so that churn cannot keep a request going.
  uint64_t steps = 2 * static_cast<uint64_t>(bpf_map__max_entries(map)) + 1024;
  while (steps-- > 0 && bpf_map_get_next_key(fd, first ? nullptr : key.data(), next.data()) == 0) {
    first = false;
    key.swap(next);
    // An entry removed between the two calls is skipped.
    if (bpf_map_lookup_elem(fd, key.data(), value.data()) != 0) continue;
    if (IsArray(type) && std::all_of(value.begin(), value.end(), [](uint8_t b) { return b == 0; }))
      continue;
    if (!visit(key.data(), value.data())) return;
  }
}

std::string TypeName(const char* name) { return name != nullptr ? name : "unknown"; }

// A per-CPU pod_counters value (every possible CPU's, in order) summed.
nm_pod_counters SumOverCpus(const nm_pod_counters* per_cpu) {
  nm_pod_counters total{};
  for (int cpu = 0; cpu < libbpf_num_possible_cpus(); ++cpu) {
    total.redirected += per_cpu[cpu].redirected;
    total.origin_save_failed += per_cpu[cpu].origin_save_failed;
    total.inbound_steered += per_cpu[cpu].inbound_steered;
    total.inbound_no_listener += per_cpu[cpu].inbound_no_listener;
    total.inbound_assign_failed += per_cpu[cpu].inbound_assign_failed;
  }
  return total;
}

}  // namespace

nlohmann::json PodCountersJson(const nm_pod_counters& counters) {
  return {{"redirected", counters.redirected},
          {"origin_save_failed", counters.origin_save_failed},
          {"inbound_steered", counters.inbound_steered},
          {"inbound_no_listener", counters.inbound_no_listener},
          {"inbound_assign_failed", counters.inbound_assign_failed}};
}

std::string_view CounterName(nm_counter counter) {
  switch (counter) {
    case NM_REDIRECTED_V4:
      return "redirected_ipv4";
    case NM_REDIRECTED_V6:
      return "redirected_ipv6";
    case NM_ORIGIN_SAVE_FAILED:
      return "origin_save_failed";
    case NM_ESTABLISHED_WITHOUT_ORIGIN:
      return "established_without_origin";
    case NM_TUPLE_SAVE_FAILED:
      return "tuple_save_failed";
    case NM_INBOUND_STEERED:
      return "inbound_steered";
    case NM_INBOUND_NO_LISTENER:
      return "inbound_no_listener";
    case NM_INBOUND_ASSIGN_FAILED:
      return "inbound_assign_failed";
    case NM_PEERNAME_REWRITTEN:
      return "peername_rewritten";
    case NM_SOCKNAME_REWRITTEN:
      return "sockname_rewritten";
    case NM_COUNTER_COUNT:
      break;
  }
  return "unknown";
}

NetnsLink::~NetnsLink() { bpf_link__destroy(link_); }

int NetnsLink::fd() const { return bpf_link__fd(link_); }

absl::StatusOr<AttachedProgram> DescribeLink(int link_fd, std::string name) {
  bpf_link_info link{};
  uint32_t length = sizeof link;
  if (bpf_obj_get_info_by_fd(link_fd, &link, &length) != 0) {
    return ErrnoStatus(fmt::format("reading the link of {}", name), errno);
  }
  AttachedProgram program;
  program.name = std::move(name);
  program.program_id = link.prog_id;
  program.link_id = link.id;
  bpf_prog_info info{};
  length = sizeof info;
  const int prog_fd = bpf_prog_get_fd_by_id(link.prog_id);
  if (prog_fd >= 0) {
    if (bpf_obj_get_info_by_fd(prog_fd, &info, &length) == 0) {
      program.type = TypeName(libbpf_bpf_prog_type_str(static_cast<bpf_prog_type>(info.type)));
    }
    ::close(prog_fd);
  }
  switch (link.type) {
    case BPF_LINK_TYPE_CGROUP:
      program.cgroup_id = link.cgroup.cgroup_id;
      program.attach_type = TypeName(
          libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(link.cgroup.attach_type)));
      break;
    case BPF_LINK_TYPE_NETNS:
      program.netns_inode = link.netns.netns_ino;
      program.attach_type = TypeName(
          libbpf_bpf_attach_type_str(static_cast<bpf_attach_type>(link.netns.attach_type)));
      break;
    default:
      program.attach_type =
          TypeName(libbpf_bpf_link_type_str(static_cast<bpf_link_type>(link.type)));
      break;
  }
  return program;
}

absl::StatusOr<std::unique_ptr<Datapath>> Datapath::Load(const AgentOptions& options,
                                                         const std::string& cgroup_dir) {
  std::unique_ptr<Datapath> datapath(new Datapath());
  datapath->skeleton_ = nodemesh_bpf__open();
  if (datapath->skeleton_ == nullptr) return ErrnoStatus("opening the BPF programs", errno);
  nodemesh_bpf* skel = datapath->skeleton_;
  skel->rodata->outbound_port = options.outbound_port;
  skel->rodata->upstream_mark = options.marks.upstream;
  skel->rodata->transparent_mark = options.marks.transparent;
  for (const auto& [map, entries] :
       {std::pair{skel->maps.enrolled_cgroups, options.max_pods},
        std::pair{skel->maps.pod_counters, options.max_pods},
        std::pair{skel->maps.inbound_listeners, options.max_pods * NM_MAX_POD_ADDRESSES}}) {
    if (const int err = bpf_map__set_max_entries(map, entries); err != 0) {
      return ErrnoStatus(fmt::format("sizing {} for {} pods", bpf_map__name(map), options.max_pods),
                         -err);
    }
  }
  if (const int err = nodemesh_bpf__load(datapath->skeleton_); err != 0) {
    const absl::Status status = ErrnoStatus("loading the BPF programs", -err);
    if (absl::IsPermissionDenied(status)) {
      return absl::PermissionDeniedError(fmt::format(
          "{} (run the agent as root, or with CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_SYS_PTRACE)",
          status.message()));
    }
    return status;
  }
  datapath->cgroup_fd_ = ::open(cgroup_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (datapath->cgroup_fd_ < 0) return ErrnoStatus(fmt::format("cgroup {}", cgroup_dir), errno);
  for (bpf_program* program :
       {skel->progs.nm_connect4, skel->progs.nm_connect6, skel->progs.nm_sockops,
        skel->progs.nm_getpeername4, skel->progs.nm_getpeername6, skel->progs.nm_getsockname4,
        skel->progs.nm_getsockname6}) {
    bpf_link* link = bpf_program__attach_cgroup(program, datapath->cgroup_fd_);
    if (link == nullptr) {
      return ErrnoStatus(
          fmt::format("attaching {} to cgroup {}", bpf_program__name(program), cgroup_dir), errno);
    }
    datapath->cgroup_links_.push_back(link);
    datapath->cgroup_link_programs_.emplace_back(bpf_program__name(program));
  }
  return datapath;
}

Datapath::~Datapath() {
  for (bpf_link* link : cgroup_links_) bpf_link__destroy(link);
  if (cgroup_fd_ >= 0) ::close(cgroup_fd_);
  nodemesh_bpf__destroy(skeleton_);
}

absl::Status Datapath::EnrolCgroup(uint64_t cgroup_id, uint32_t pod_id, bool has_ipv6_listener,
                                   const std::vector<IpAddress>& pod_ips) {
  nm_pod pod{};
  pod.pod_id = pod_id;
  pod.flags = has_ipv6_listener ? NM_POD_IPV6 : 0u;
  // The first address of each family, as the pod's network has it.
  bool ipv4 = false, ipv6 = false;
  for (const IpAddress& ip : pod_ips) {
    bool& set = ip.is_v4() ? ipv4 : ipv6;
    if (set) continue;
    std::memcpy(ip.is_v4() ? pod.ipv4 : pod.ipv6, ip.bytes.data(), 16);
    set = true;
  }
  return MapStatus("enrolling a cgroup",
                   bpf_map__update_elem(skeleton_->maps.enrolled_cgroups, &cgroup_id,
                                        sizeof cgroup_id, &pod, sizeof pod, BPF_ANY));
}

void Datapath::ReleaseCgroup(uint64_t cgroup_id) {
  bpf_map__delete_elem(skeleton_->maps.enrolled_cgroups, &cgroup_id, sizeof cgroup_id, 0);
}

absl::StatusOr<std::unique_ptr<NetnsLink>> Datapath::AttachInbound(int netns_fd) {
  bpf_link* link = bpf_program__attach_netns(skeleton_->progs.nm_sk_lookup, netns_fd);
  if (link == nullptr) return ErrnoStatus("attaching sk_lookup to a pod netns", errno);
  return std::make_unique<NetnsLink>(link);
}

absl::Status Datapath::SetInboundListener(const IpAddress& pod_ip, int listener_fd) {
  const nm_endpoint key = ToKey(Endpoint{pod_ip, 0});
  const uint64_t fd = static_cast<uint64_t>(listener_fd);
  return MapStatus("registering an inbound listener",
                   bpf_map__update_elem(skeleton_->maps.inbound_listeners, &key, sizeof key, &fd,
                                        sizeof fd, BPF_ANY));
}

void Datapath::RemoveInboundListener(const IpAddress& pod_ip) {
  const nm_endpoint key = ToKey(Endpoint{pod_ip, 0});
  bpf_map__delete_elem(skeleton_->maps.inbound_listeners, &key, sizeof key, 0);
}

absl::Status Datapath::AddCapturedPort(const Endpoint& endpoint, uint32_t pod_id) {
  const nm_endpoint key = ToKey(endpoint);
  return MapStatus("adding a meshed port",
                   bpf_map__update_elem(skeleton_->maps.meshed_ports, &key, sizeof key, &pod_id,
                                        sizeof pod_id, BPF_ANY));
}

absl::Status Datapath::TrackPod(uint32_t pod_id) {
  // A per-CPU value is written as every CPU's: all zero.
  const std::vector<nm_pod_counters> zero(static_cast<size_t>(libbpf_num_possible_cpus()));
  return MapStatus(
      "making a pod's kernel counters",
      bpf_map__update_elem(skeleton_->maps.pod_counters, &pod_id, sizeof pod_id, zero.data(),
                           zero.size() * sizeof(nm_pod_counters), BPF_ANY));
}

void Datapath::ForgetPod(uint32_t pod_id) {
  bpf_map__delete_elem(skeleton_->maps.pod_counters, &pod_id, sizeof pod_id, 0);
}

std::optional<nm_pod_counters> Datapath::PodCounters(uint32_t pod_id) const {
  std::vector<nm_pod_counters> per_cpu(static_cast<size_t>(libbpf_num_possible_cpus()));
  if (bpf_map__lookup_elem(skeleton_->maps.pod_counters, &pod_id, sizeof pod_id, per_cpu.data(),
                           per_cpu.size() * sizeof(nm_pod_counters), 0) != 0) {
    return std::nullopt;
  }
  return SumOverCpus(per_cpu.data());
}

void Datapath::RemoveCapturedPort(const Endpoint& endpoint) {
  const nm_endpoint key = ToKey(endpoint);
  bpf_map__delete_elem(skeleton_->maps.meshed_ports, &key, sizeof key, 0);
}

absl::Status Datapath::AllowPassthrough(const Endpoint& caller, const Endpoint& pod) {
  const nm_tuple key = FlowKey(caller, pod);
  const uint8_t yes = 1;
  return MapStatus("allowing a connection through",
                   bpf_map__update_elem(skeleton_->maps.passthrough, &key, sizeof key, &yes,
                                        sizeof yes, BPF_ANY));
}

void Datapath::ForgetPassthrough(const Endpoint& caller, const Endpoint& pod) {
  const nm_tuple key = FlowKey(caller, pod);
  bpf_map__delete_elem(skeleton_->maps.passthrough, &key, sizeof key, 0);
}

absl::Status Datapath::SetExcludedPort(uint16_t port, bool excluded) {
  const uint32_t key = port;
  const uint8_t value = excluded ? 1 : 0;
  return MapStatus("excluding a port",
                   bpf_map__update_elem(skeleton_->maps.excluded_ports, &key, sizeof key, &value,
                                        sizeof value, BPF_ANY));
}

std::optional<OriginalDestination> Datapath::TakeOriginalDestination(uint64_t netns_cookie,
                                                                     const Endpoint& app,
                                                                     const Endpoint& listener) {
  nm_tuple key = FlowKey(app, listener);
  key.netns_cookie = netns_cookie;
  nm_origin origin{};
  if (bpf_map__lookup_and_delete_elem(skeleton_->maps.origins_by_tuple, &key, sizeof key, &origin,
                                      sizeof origin, 0) != 0) {
    return std::nullopt;
  }
  OriginalDestination destination;
  std::memcpy(destination.endpoint.ip.bytes.data(), origin.addr, 16);
  destination.endpoint.port = origin.port;
  destination.pod_id = origin.pod_id;
  destination.cgroup_id = origin.cgroup_id;
  return destination;
}

CounterValues Datapath::ReadCounters() const {
  CounterValues totals{};
  const int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return totals;
  std::vector<uint64_t> per_cpu(static_cast<size_t>(cpus));
  for (uint32_t counter = 0; counter < NM_COUNTER_COUNT; ++counter) {
    if (bpf_map__lookup_elem(skeleton_->maps.counters, &counter, sizeof counter, per_cpu.data(),
                             per_cpu.size() * sizeof(uint64_t), 0) != 0) {
      continue;
    }
    for (uint64_t value : per_cpu) totals[counter] += value;
  }
  return totals;
}

std::vector<AttachedProgram> Datapath::CgroupPrograms() const {
  std::vector<AttachedProgram> programs;
  for (size_t i = 0; i < cgroup_links_.size(); ++i) {
    absl::StatusOr<AttachedProgram> described =
        DescribeLink(bpf_link__fd(cgroup_links_[i]), cgroup_link_programs_[i]);
    if (described.ok()) programs.push_back(*std::move(described));
  }
  return programs;
}

std::vector<MapSummary> Datapath::Maps() const {
  std::vector<MapSummary> maps;
  bpf_map* map;
  bpf_object__for_each_map(map, skeleton_->obj) {
    // The programs' read-only globals (.rodata) are no map of the data path.
    if (bpf_map__is_internal(map)) continue;
    MapSummary& summary = maps.emplace_back();
    summary.name = bpf_map__name(map);
    summary.type = TypeName(libbpf_bpf_map_type_str(bpf_map__type(map)));
    summary.capacity = bpf_map__max_entries(map);
    bpf_map_info info{};
    uint32_t length = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_map__fd(map), &info, &length) == 0) summary.map_id = info.id;
    ForEachEntry(map, [&](const void*, const void*) {
      ++summary.entries;
      return true;
    });
  }
  return maps;
}

absl::StatusOr<nlohmann::json> Datapath::DumpMap(std::string_view name, size_t limit) const {
  const bpf_map* map = nullptr;
  std::vector<std::string> names;
  const bpf_map* each;
  bpf_object__for_each_map(each, skeleton_->obj) {
    if (bpf_map__is_internal(each)) continue;
    names.emplace_back(bpf_map__name(each));
    if (names.back() == name) map = each;
  }
  if (map == nullptr) {
    return absl::NotFoundError(
        fmt::format("no map named {}: the maps are {}", name, fmt::join(names, ", ")));
  }
  nlohmann::json entries = nlohmann::json::array();
  uint64_t count = 0;
  const std::string map_name = bpf_map__name(map);
  const auto decode = [&](const void* key, const void* value) -> nlohmann::json {
    if (map_name == "enrolled_cgroups") {
      nm_pod pod;
      std::memcpy(&pod, value, sizeof pod);
      nlohmann::json flags = nlohmann::json::array();
      if (pod.flags & NM_POD_IPV6) flags.push_back("ipv6_listener");
      return {{"cgroup_id", *static_cast<const uint64_t*>(key)},
              {"pod_id", pod.pod_id},
              {"flags", flags},
              {"ipv4", AddressJson(pod.ipv4)},
              {"ipv6", AddressJson(pod.ipv6)}};
    }
    if (map_name == "excluded_ports") return {{"port", *static_cast<const uint32_t*>(key)}};
    if (map_name == "origins_by_cookie") {
      nm_origin origin;
      std::memcpy(&origin, value, sizeof origin);
      nlohmann::json entry = {{"socket_cookie", *static_cast<const uint64_t*>(key)}};
      entry.update(OriginJson(origin));
      return entry;
    }
    if (map_name == "origins_by_tuple" || map_name == "passthrough") {
      nm_tuple tuple;
      std::memcpy(&tuple, key, sizeof tuple);
      nlohmann::json entry = TupleJson(tuple);
      if (map_name == "origins_by_tuple") {
        nm_origin origin;
        std::memcpy(&origin, value, sizeof origin);
        entry["origin"] = OriginJson(origin);
      }
      return entry;
    }
    if (map_name == "meshed_ports" || map_name == "inbound_listeners") {
      nm_endpoint endpoint;
      std::memcpy(&endpoint, key, sizeof endpoint);
      if (map_name == "meshed_ports") {
        return {{"endpoint", EndpointString(endpoint.addr, endpoint.port)},
                {"pod_id", *static_cast<const uint32_t*>(value)}};
      }
      // A sockhash read from user space answers with the socket's cookie.
      return {{"pod_address", AddressJson(endpoint.addr)},
              {"socket_cookie", *static_cast<const uint64_t*>(value)}};
    }
    if (map_name == "pod_counters") {
      nlohmann::json entry =
          PodCountersJson(SumOverCpus(static_cast<const nm_pod_counters*>(value)));
      entry["pod_id"] = *static_cast<const uint32_t*>(key);
      return entry;
    }
    if (map_name == "counters") {
      const uint32_t index = *static_cast<const uint32_t*>(key);
      uint64_t total = 0;
      const int cpus = libbpf_num_possible_cpus();
      for (int cpu = 0; cpu < cpus; ++cpu) total += static_cast<const uint64_t*>(value)[cpu];
      return {{"counter", index < NM_COUNTER_COUNT
                              ? std::string(CounterName(static_cast<nm_counter>(index)))
                              : std::to_string(index)},
              {"value", total}};
    }
    return {{"unknown", true}};
  };
  ForEachEntry(map, [&](const void* key, const void* value) {
    ++count;
    if (entries.size() < limit) entries.push_back(decode(key, value));
    return true;
  });
  return nlohmann::json{{"map", map_name},
                        {"type", TypeName(libbpf_bpf_map_type_str(bpf_map__type(map)))},
                        {"capacity", bpf_map__max_entries(map)},
                        {"count", count},
                        {"entries", entries},
                        {"truncated", count > entries.size()}};
}

}  // namespace nodemesh::agent
