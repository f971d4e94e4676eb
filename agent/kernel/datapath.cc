#include "agent/kernel/datapath.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

}  // namespace

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

absl::Status Datapath::AddCapturedPort(const Endpoint& endpoint) {
  const nm_endpoint key = ToKey(endpoint);
  const uint8_t yes = 1;
  return MapStatus("adding a meshed port",
                   bpf_map__update_elem(skeleton_->maps.meshed_ports, &key, sizeof key, &yes,
                                        sizeof yes, BPF_ANY));
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

}  // namespace nodemesh::agent
