// Simulated Kubernetes nodes on this machine, for the kernel and end-to-end test tiers.
//
// A PodNetwork is a Linux bridge with its own /24 (10.77.N.0/24, the bridge holds .1).
// A TestNode is a cgroup v2 subtree standing for one node; each pod added to it gets a
// network namespace, a veth pair into the bridge (eth0 inside the pod, default route via
// .1), a cgroup under the node, and an /etc/hosts naming every pod of the network.
// Several nodes may share one network, so traffic between "nodes" is real pod-to-pod
// traffic. Requires root.
//
//   PodNetwork network;
//   TestNode node_a(network, "node-a"), node_b(network, "node-b");
//   const Pod& web = node_a.AddPod({.namespace_name = "emojivoto", .name = "web-1",
//                                   .owner_name = "web", .labels = {{"app", "web"}}});
//   Process server = web.Run({"/usr/bin/python3", "-m", "http.server", "8080"});
//   node_a.WriteInventory(dir + "/pods.json");  // the agent's local inventory
//
// A routed network (PodNetworkOptions::routed) sends pod-to-pod traffic through the host's
// IP stack instead of straight across the bridge, as on a node where kube-proxy's NAT must
// see both directions of a connection; on it, AddService makes kube-proxy-style Services:
// cluster IPs in 10.96.N.0/24 DNATed (nftables, in the host netns) to pods.
//
// Every resource of a run carries the network's id: bridge nmt<id>br, host-side veths
// nmt<id>p<n>, netns nmt<id>-<pod>, /etc/netns/nmt<id>-<pod>/, cgroups under
// <cgroup2 mount>/nodemesh-test-<id>/, the nftables table ip nodemesh-test-<id> (Services),
// and the owner marker
// /run/nodemesh-test/<id>.owner ("pid=<pid> start=<start time in ticks> subnet=<N>").
// Destructors remove all of it, killing whatever still runs in the pods. Runs that died
// before they could clean up are swept when the next PodNetwork is created: any id whose
// marker is missing or names a process that no longer exists is removed. Nothing outside
// these names is touched. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "test/lib/process.h"

namespace nodemesh::testing {

// Holds the allocation lock and the owner markers of all runs on this machine.
inline constexpr std::string_view kTestStateDir = "/run/nodemesh-test";

// Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
// system), read from /proc/self/mountinfo. Throws if there is none.
const std::string& CgroupMount();

// Removes every resource of earlier runs whose owner is gone (see above). PodNetwork's
// constructor does this; it is public for tools and for testing the sweep itself.
void SweepStaleTestResources();

// What the Kubernetes API would say about a pod. Names are DNS labels ([a-z0-9.-]).
struct PodSpec {
  std::string namespace_name = "default";
  std::string name{};
  std::string owner_kind = "Deployment";
  std::string owner_name{};
  std::map<std::string, std::string> labels{};
  std::string service_account = "default";
  bool meshed = true;
  bool ipv6 = false;  // dual-stack: an IPv6 address on eth0 too, listed in the inventory
  // The pod's cgroup relative to the node's, as a kubelet lays it out (for example
  // "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice");
  // empty: "<namespace>_<name>". Parents are made as needed.
  std::string cgroup_subpath{};
  // A sub-cgroup of the pod's where Run starts processes, as a container runtime would
  // ("cri-containerd-<id>.scope"); empty: the pod's cgroup itself.
  std::string container_cgroup{};
};

struct Pod : PodSpec {
  std::string ip;           // 10.77.N.x, on eth0 inside the pod
  std::string ip6;          // fd77:0:0:N::x on eth0 too if PodSpec::ipv6, else empty
  std::string netns_name;   // nmt<id>-<name>, usable with `ip netns exec` / `ip -n`
  std::string netns_path;   // /var/run/netns/<netns_name>
  std::string cgroup_path;  // under the cgroup2 mount, with a leading '/', as in the inventory
  std::string cgroup_dir;   // absolute directory of that cgroup
  std::string process_cgroup_dir;  // where Run starts processes: cgroup_dir or its container
  uint64_t cgroup_id = 0;          // what bpf_get_current_cgroup_id() returns for its processes
  std::string hosts_file;          // /etc/netns/<netns_name>/hosts
  std::string host_veth;           // the veth end on the bridge

  // Starts a process inside the pod: its cgroup first, then its netns, with the pod's
  // /etc/hosts bind-mounted in a private mount namespace (unless options name another).
  Process Run(std::vector<std::string> argv, Process::Options options = {}) const;
  CommandResult RunCommand(std::vector<std::string> argv,
                           std::chrono::milliseconds timeout = std::chrono::seconds(30),
                           Process::Options options = {}) const;
};

struct PodNetworkOptions {
  // Pods reach each other through the host (IPv4): each pod routes the /24 via the gateway
  // (a link route to the gateway, the /24 via it, ICMP redirects ignored inside the pod),
  // and the host forwards on the bridge (net.ipv4.conf.<bridge>.forwarding=1, a setting of
  // the bridge alone: the host's global ip_forward is left as it is). So the host's
  // netfilter sees both directions of every pod-to-pod connection, whether or not the
  // machine has br_netfilter, and a Service's DNAT is undone on the replies even when client
  // and backend share the bridge. Also routes 10.96.N.0/24 (the Services' cluster IPs) to
  // the bridge, so that a cluster IP without NAT never leaves the machine.
  bool routed = false;
};

// A kube-proxy-style Service of a routed network.
struct ServiceSpec {
  std::string namespace_name = "default";
  std::string name{};
  uint16_t port = 80;
  // "ip:port" of each pod it sends connections to, taken in turn (nft numgen inc).
  std::vector<std::string> backends{};
};

struct Service : ServiceSpec {
  std::string cluster_ip;      // 10.96.N.x
  std::string chain;           // its nftables chain in the network's table
  std::string target() const;  // "cluster_ip:port"
};

class PodNetwork {
 public:
  // Sweeps stale runs, picks a free id and subnet, and creates the bridge. Throws
  // std::runtime_error (after cleaning up what it made) if that fails.
  PodNetwork() : PodNetwork(PodNetworkOptions{}) {}
  explicit PodNetwork(PodNetworkOptions options);
  // Every TestNode on this network must be destroyed first.
  ~PodNetwork();
  PodNetwork(const PodNetwork&) = delete;
  PodNetwork& operator=(const PodNetwork&) = delete;

  const std::string& id() const { return id_; }            // 4 hex digits
  const std::string& bridge() const { return bridge_; }    // nmt<id>br
  const std::string& subnet() const { return subnet_; }    // 10.77.N.0/24
  const std::string& gateway() const { return gateway_; }  // 10.77.N.1, on the bridge
  // <cgroup2 mount>/nodemesh-test-<id>: the nodes' subtrees are below it.
  const std::string& cgroup_root() const { return cgroup_root_; }
  bool routed() const { return options_.routed; }

  // Services (routed networks only). AddService gives the next cluster IP of 10.96.N.0/24
  // and DNATs connections to cluster_ip:port (from pods, in the host's prerouting) to the
  // backends in turn. Nodes list the network's Services in their inventories: add them
  // before writing one (or changing it, which rewrites it). Throws std::runtime_error.
  const Service& AddService(ServiceSpec spec);
  // Takes the Service's DNAT away (the Service stays listed): its cluster IP is then dialled
  // as it is, routed to the bridge. RestoreServiceNat puts it back.
  void RemoveServiceNat(const Service& service);
  void RestoreServiceNat(const Service& service);
  const std::vector<std::unique_ptr<Service>>& services() const { return services_; }
  // "nodemesh-test-<id>": the nftables table (family ip) of the Services' NAT.
  std::string nat_table() const;

 private:
  friend class TestNode;

  void CreateBridge();
  void Teardown() noexcept;
  // The next free address and host-side veth name; throws when the /24 is full.
  struct PodAddress {
    std::string ip, ip6, veth;
  };
  PodAddress AllocatePodAddress();
  void AddToHosts(const Pod* pod);
  void RemoveFromHosts(const Pod* pod) noexcept;
  void WriteHostsFiles() const;

  void AddServiceRules(const Service& service);

  const PodNetworkOptions options_;
  std::string id_;
  int subnet_index_ = -1;
  std::string bridge_;
  std::string subnet_;
  std::string gateway_;
  std::string cgroup_root_;
  int next_host_octet_ = 11;
  int next_veth_ = 0;
  std::set<std::string> node_names_;
  std::vector<const Pod*> pods_;  // of every node, for the hosts files
  std::vector<std::unique_ptr<Service>> services_;
  bool nat_table_created_ = false;
};

class TestNode {
 public:
  // Creates the node's cgroup subtree <network.cgroup_root()>/<name>.
  TestNode(PodNetwork& network, std::string name);
  // Kills everything still running in its pods and removes them.
  ~TestNode();
  TestNode(const TestNode&) = delete;
  TestNode& operator=(const TestNode&) = delete;

  const std::string& name() const { return name_; }
  // Absolute cgroup directory of the node: where the agent attaches its cgroup programs.
  const std::string& cgroup_dir() const { return cgroup_dir_; }
  const std::string& cgroup_path() const { return cgroup_path_; }  // under the cgroup2 mount
  PodNetwork& network() const { return network_; }

  // Creates the pod; the reference stays valid for the node's life. Pod names must be
  // unique on the network. Throws std::runtime_error (after cleaning up) if it fails.
  const Pod& AddPod(PodSpec spec);
  const Pod& pod(std::string_view name) const;  // throws std::out_of_range
  std::vector<const Pod*> pods() const;

  // The node's pods in the agent's local inventory format, with the network's Services:
  // {"pods":[{"namespace":…,"name":…,"owner":{"kind":…,"name":…},"labels":{…},
  //   "serviceAccount":…,"ips":[…],"cgroup":…,"netns":…,"meshed":…}],
  //  "services":[{"namespace":…,"name":…,"clusterIPs":[…]}]}
  std::string InventoryJson() const;
  // Writes the inventory to `path` (temp file + rename) and keeps it current: AddPod and
  // SetMeshed rewrite it the same way, so a watcher sees each change as one rename.
  void WriteInventory(const std::string& path);
  void SetMeshed(const Pod& pod, bool meshed);

 private:
  void CreatePodResources(Pod& pod);
  void RemovePod(Pod& pod) noexcept;
  void RewriteInventory() const;

  PodNetwork& network_;
  std::string name_;
  std::string cgroup_path_;
  std::string cgroup_dir_;
  std::vector<std::unique_ptr<Pod>> pods_;
  std::string inventory_path_;
};

}  // namespace nodemesh::testing
