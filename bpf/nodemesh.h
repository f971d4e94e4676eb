/* Types shared by the kernel programs (nodemesh.bpf.c) and the agent that loads them.
 * One definition for both sides: fixed-width types, explicit padding, no hand-synced copy.
 * Addresses are 16 bytes, IPv4 as v4-mapped IPv6 (::ffff:a.b.c.d), ports in host order. */
#ifndef NODEMESH_BPF_NODEMESH_H_
#define NODEMESH_BPF_NODEMESH_H_

#include <linux/types.h>

/* Deepest cgroup level searched for an enrolled ancestor (a pod cgroup, whose containers
 * may sit in child cgroups). */
#define NM_MAX_CGROUP_DEPTH 12

/* nm_pod.flags */
#define NM_POD_IPV6 1 /* the agent listens on [::1] in this pod: IPv6 connects go there too */

/* Value of enrolled_cgroups: the pod a cgroup belongs to. */
struct nm_pod {
  __u32 pod_id; /* the agent's handle for the pod */
  __u32 flags;
  __u8 ipv4[16]; /* the pod's IPv4 address, v4-mapped; all zero if it has none */
  __u8 ipv6[16]; /* its IPv6 address; all zero if it has none */
};

/* Where a redirected socket was going. Kept by socket cookie while the socket lives (so
 * that getpeername can answer with it) and copied under the connection's tuple. */
struct nm_origin {
  __u8 addr[16];
  __u16 port;
  __u16 family; /* AF_INET or AF_INET6, as the application asked */
  __u32 pod_id;
  __u64 cgroup_id;
};

/* A redirected connection as the agent sees it after accept(): its netns cookie
 * (SO_NETNS_COOKIE), the application's address (getpeername) and the agent listener's
 * address (getsockname). */
struct nm_tuple {
  __u64 netns_cookie;
  __u8 src_addr[16];
  __u8 dst_addr[16];
  __u16 src_port;
  __u16 dst_port;
  __u32 reserved;
};

/* A pod address and port, for inbound capture. */
struct nm_endpoint {
  __u8 addr[16];
  __u16 port;
  __u16 reserved1;
  __u32 reserved2;
};

/* Value of pod_counters (per CPU, summed by the agent), keyed by pod_id: what the programs
 * did for one enrolled pod. The agent makes the entry before the pod's first redirect and
 * removes it when it releases the pod. */
struct nm_pod_counters {
  __u64 redirected;            /* its connects sent to the agent's outbound listener */
  __u64 origin_save_failed;    /* its connects that went direct: origins_by_cookie refused */
  __u64 inbound_steered;       /* SYNs to its captured ports given to the inbound listener */
  __u64 inbound_no_listener;   /* SYNs to its captured ports passed on: no listener */
  __u64 inbound_assign_failed; /* SYNs passed on: the kernel refused the assignment */
};

/* Per-CPU event counters, summed by the agent. */
enum nm_counter {
  NM_REDIRECTED_V4, /* connects redirected to the outbound listener */
  NM_REDIRECTED_V6,
  NM_ORIGIN_SAVE_FAILED,         /* map full or error: the connect went direct */
  NM_ESTABLISHED_WITHOUT_ORIGIN, /* redirected socket whose origin vanished (LRU eviction) */
  NM_TUPLE_SAVE_FAILED,          /* the agent will not find the original destination */
  NM_INBOUND_STEERED,            /* SYNs assigned to an inbound listener */
  NM_INBOUND_NO_LISTENER,        /* meshed port but no listener registered: passed */
  NM_INBOUND_ASSIGN_FAILED,
  NM_PEERNAME_REWRITTEN, /* getpeername answered with the original destination */
  NM_SOCKNAME_REWRITTEN, /* getsockname answered with the pod's address, not loopback */
  NM_COUNTER_COUNT,
};

#define NM_MAX_CONNECTIONS 262144 /* redirected connections in flight, per map */
/* Pods enrolled at once, by default: the agent sizes the pod maps to its --max-pods before
 * loading (enrolled_cgroups holds one entry a pod, inbound_listeners one per pod address). */
#define NM_MAX_PODS 4096
#define NM_MAX_POD_ADDRESSES 2    /* an IPv4 and an IPv6 address */
#define NM_MAX_MESHED_PORTS 65536 /* pod address and port pairs captured inbound */
#define NM_PORT_COUNT 65536       /* every TCP port: excluded_ports is indexed by port */

#endif /* NODEMESH_BPF_NODEMESH_H_ */
