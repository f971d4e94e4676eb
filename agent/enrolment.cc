#include "agent/enrolment.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_join.h"
#include "agent/kernel/pod_routing.h"
#include "common/base/log.h"

namespace nodemesh::agent {
namespace {

// Connections a listener's kernel queue holds before the worker accepts them.
constexpr int kListenBacklog = 4096;

}  // namespace

absl::StatusOr<std::unique_ptr<PodEnrolment>> PodEnrolment::Enrol(const Context& context,
                                                                  uint32_t pod_id, PodView view) {
  const PodInfo& info = view.info;
  absl::StatusOr<uint64_t> cgroup_id = CgroupId(context.cgroup_mount + info.cgroup);
  if (!cgroup_id.ok()) return cgroup_id.status();
  absl::StatusOr<Netns> netns = Netns::Open(info.netns);
  if (!netns.ok()) return netns.status();
  std::unique_ptr<PodEnrolment> pod(new PodEnrolment(
      context, std::make_shared<PodRuntime>(pod_id, std::move(view), *std::move(netns)),
      *cgroup_id));
  // On failure `pod` goes here, and its destructor undoes the steps that were taken.
  if (absl::Status status = pod->Build(); !status.ok()) return status;
  return pod;
}

absl::Status PodEnrolment::Build() {
  const PodInfo& info = runtime_->view()->info;
  const AgentOptions& options = context_.options;
  // Its counters before anything the programs would count. They explain, they do not
  // decide: a pod without them is enrolled all the same (explain shows the node's then).
  if (absl::Status status = context_.datapath.TrackPod(runtime_->id()); status.ok()) {
    counters_tracked_ = true;
  } else {
    Log(LogLevel::kWarning, "pod {}: no kernel counters of its own: {}", info.key(),
        status.message());
  }
  // Listeners first: once the kernel redirects, something must be there to accept.
  absl::StatusOr<std::vector<UniqueFd>> outbound4 =
      MakeListeners(Endpoint{IpAddress::Loopback4(), options.outbound_port});
  if (!outbound4.ok()) return outbound4.status();
  // IPv6 where the pod has it; without ::1 the kernel keeps IPv6 connects direct.
  absl::StatusOr<std::vector<UniqueFd>> outbound6 =
      MakeListeners(Endpoint{IpAddress::Loopback6(), options.outbound_port});
  ipv6_ = outbound6.ok();

  // One inbound listener group per address family serves every address of that family.
  struct InboundListeners {
    bool v4;
    std::vector<UniqueFd> fds;
  };
  std::vector<InboundListeners> inbound;
  for (const bool v4 : {true, false}) {
    if (std::none_of(info.ips.begin(), info.ips.end(),
                     [v4](const IpAddress& ip) { return ip.is_v4() == v4; })) {
      continue;
    }
    absl::StatusOr<std::vector<UniqueFd>> fds = MakeListeners(
        Endpoint{v4 ? IpAddress::Loopback4() : IpAddress::Loopback6(), options.inbound_port});
    if (!fds.ok()) return fds.status();
    inbound.push_back({v4, *std::move(fds)});
  }
  if (absl::Status status =
          PrepareTransparentInbound(runtime_->netns(), context_.home, options.marks.transparent,
                                    options.marks.transparent_table, options.proc_root);
      !status.ok()) {
    return status;
  }
  if (!info.inbound_ports) {
    absl::StatusOr<ListeningPorts> listening =
        ListeningPorts::Open(runtime_->netns(), context_.home);
    if (!listening.ok()) return listening.status();
    listening_.emplace(*std::move(listening));
  }
  absl::StatusOr<std::unique_ptr<NetnsLink>> link =
      context_.datapath.AttachInbound(runtime_->netns().fd());
  if (!link.ok()) return link.status();
  inbound_link_ = *std::move(link);

  // The sockhash keeps a reference to the listener's socket, so it is filled while the fds
  // are still ours, before they go to the workers.
  for (const IpAddress& ip : info.ips) {
    for (const InboundListeners& group : inbound) {
      if (group.v4 != ip.is_v4()) continue;
      if (absl::Status status = context_.datapath.SetInboundListener(ip, group.fds[0].get());
          !status.ok()) {
        return status;
      }
      inbound_listener_ips_.push_back(ip);
    }
  }
  listeners_given_ = true;
  GiveListeners(*std::move(outbound4), Direction::kOutbound);
  if (ipv6_) GiveListeners(*std::move(outbound6), Direction::kOutbound);
  for (InboundListeners& group : inbound) GiveListeners(std::move(group.fds), Direction::kInbound);
  RefreshCapturedPorts();
  // Last: from here on the pod's connects are redirected.
  if (absl::Status status =
          context_.datapath.EnrolCgroup(cgroup_id_, runtime_->id(), ipv6_, info.ips);
      !status.ok()) {
    return status;
  }
  cgroup_enrolled_ = true;
  Log(LogLevel::kInfo, "enrolled {} (cgroup {}, netns {}): outbound via port {}{}, inbound {}",
      info.key(), info.cgroup, info.netns, options.outbound_port, ipv6_ ? " (IPv4 and IPv6)" : "",
      captured_.empty() ? std::string("on no port yet") : absl::StrJoin(CapturedPorts(), " "));
  return absl::OkStatus();
}

PodEnrolment::~PodEnrolment() {
  // In reverse: new connects go direct first; connections already proxied carry on.
  if (cgroup_enrolled_) context_.datapath.ReleaseCgroup(cgroup_id_);
  for (const Endpoint& endpoint : captured_) context_.datapath.RemoveCapturedPort(endpoint);
  for (const IpAddress& ip : inbound_listener_ips_) context_.datapath.RemoveInboundListener(ip);
  inbound_link_.reset();
  if (listeners_given_) {
    const uint32_t pod_id = runtime_->id();
    for (const std::unique_ptr<Worker>& worker : context_.workers) {
      worker->RunAndWait([&] { worker->RemoveListeners(pod_id); });
    }
  }
  if (counters_tracked_) context_.datapath.ForgetPod(runtime_->id());
}

absl::StatusOr<std::vector<UniqueFd>> PodEnrolment::MakeListeners(const Endpoint& address) const {
  std::vector<UniqueFd> listeners;
  ScopedNetns in_pod(runtime_->netns(), context_.home);
  if (!in_pod.status().ok()) return in_pod.status();
  for (size_t i = 0; i < context_.workers.size(); ++i) {
    UniqueFd fd(socket(address.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) return ErrnoStatus("listener socket", errno);
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (address.family() == AF_INET6) {
      setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    sockaddr_storage storage;
    const socklen_t length = address.ToSockaddr(&storage);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&storage), length) != 0) {
      return ErrnoStatus(
          fmt::format("listening on {} in {}", address.ToString(), runtime_->netns().path()),
          errno);
    }
    if (listen(fd.get(), kListenBacklog) != 0) return ErrnoStatus("listen", errno);
    listeners.push_back(std::move(fd));
  }
  return listeners;
}

void PodEnrolment::GiveListeners(std::vector<UniqueFd> listeners, Direction direction) {
  for (size_t i = 0; i < context_.workers.size(); ++i) {
    Worker& worker = *context_.workers[i];
    UniqueFd fd = std::move(listeners[i]);
    worker.RunAndWait([&] { worker.AddListener(std::move(fd), runtime_, direction); });
  }
}

std::vector<std::string> PodEnrolment::CapturedPorts() const {
  std::vector<std::string> ports;
  for (const Endpoint& endpoint : captured_) ports.push_back(endpoint.ToString());
  std::sort(ports.begin(), ports.end());
  return ports;
}

bool PodEnrolment::RefreshCapturedPorts() {
  const std::shared_ptr<const PodView> snapshot = runtime_->view();
  const PodInfo& info = snapshot->info;
  absl::flat_hash_set<Endpoint> wanted;
  if (info.inbound_ports) {
    for (const IpAddress& ip : info.ips) {
      for (uint16_t port : *info.inbound_ports) wanted.insert(Endpoint{ip, port});
    }
  } else {
    absl::StatusOr<std::vector<Endpoint>> listening = listening_->List();
    if (!listening.ok()) {
      Log(LogLevel::kWarning, "pod {}: listing its ports: {}", info.key(),
          listening.status().message());
      return false;
    }
    for (const Endpoint& endpoint : *listening) {
      if (endpoint.ip.is_loopback()) continue;  // unreachable from outside the pod anyway
      const bool wildcard = endpoint.ip == IpAddress{} || endpoint.ip == IpAddress::V4(0);
      for (const IpAddress& ip : info.ips) {
        if (endpoint.ip == ip ||
            (wildcard && (endpoint.ip.is_v4() == ip.is_v4() || endpoint.ip == IpAddress{}))) {
          wanted.insert(Endpoint{ip, endpoint.port});
        }
      }
    }
  }
  bool changed = false;
  for (auto it = captured_.begin(); it != captured_.end();) {
    if (!wanted.contains(*it)) {
      context_.datapath.RemoveCapturedPort(*it);
      captured_.erase(it++);
      changed = true;
    } else {
      ++it;
    }
  }
  for (const Endpoint& endpoint : wanted) {
    if (captured_.contains(endpoint)) continue;
    if (absl::Status status = context_.datapath.AddCapturedPort(endpoint, runtime_->id());
        !status.ok()) {
      Log(LogLevel::kWarning, "pod {}: capturing {}: {}", info.key(), endpoint.ToString(),
          status.message());
      continue;
    }
    captured_.insert(endpoint);
    changed = true;
    Log(LogLevel::kDebug, "pod {}: capturing inbound {}", info.key(), endpoint.ToString());
  }
  return changed;
}

}  // namespace nodemesh::agent
