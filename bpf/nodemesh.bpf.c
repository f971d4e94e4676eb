// SPDX-License-Identifier: GPL-2.0
/* nodemesh's kernel side. Outbound: connects of enrolled pod cgroups are rewritten to the
 * agent's listener inside the pod's own netns, with the original destination kept for the
 * agent (and for getpeername; getsockname answers with the pod's address). Inbound: SYNs
 * for a pod's meshed ports are steered to the agent's inbound listener in that netns. Everything
 * else passes untouched, and if the agent goes away its links go with it: traffic then flows
 * direct. */
#include "bpf/nodemesh.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/socket.h>

/* From the libc socket headers, which a BPF object cannot include. */
#define SOCK_STREAM 1
#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

char LICENSE[] SEC("license") = "GPL";

/* What cgroup sock_addr programs return: the call goes on (its address possibly rewritten).
 * The other verdict, 0, would fail the application's call with EPERM: nodemesh never
 * refuses a connection, it only redirects it or lets it be. */
#define NM_CONTINUE 1
/* sockops programs answer through skops->reply where an op asks for one; the return value
 * is ignored, 1 by convention. */
#define NM_SOCKOPS_DONE 1

/* Context fields must be read with their own width: clang would otherwise merge two
 * adjacent 32-bit loads into one 64-bit load that the verifier rejects. */
#define CTX_U32(field) (*(volatile __u32*)&(field))

/* Set by the agent before load. */
const volatile __u16 outbound_port = 15001;
const volatile __u32 upstream_mark = 0;    /* the agent's outbound upstream sockets */
const volatile __u32 transparent_mark = 0; /* its inbound legs, sent with the caller's address */

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NM_MAX_PODS);
  __type(key, __u64); /* cgroup id */
  __type(value, struct nm_pod);
} enrolled_cgroups SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, NM_PORT_COUNT);
  __type(key, __u32);  /* destination port */
  __type(value, __u8); /* non-zero: never redirect */
} excluded_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, NM_MAX_CONNECTIONS);
  __type(key, __u64); /* socket cookie */
  __type(value, struct nm_origin);
} origins_by_cookie SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, NM_MAX_CONNECTIONS);
  __type(key, struct nm_tuple);
  __type(value, struct nm_origin);
} origins_by_tuple SEC(".maps");

/* Connections the agent itself makes to a pod's meshed port, with the caller's address:
 * sk_lookup lets them through to the application. Key: netns_cookie 0, src the caller,
 * dst the pod. */
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, NM_MAX_CONNECTIONS);
  __type(key, struct nm_tuple);
  __type(value, __u8);
} passthrough SEC(".maps");

/* A captured pod address and port, and the pod_id of its pod. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, NM_MAX_MESHED_PORTS);
  __type(key, struct nm_endpoint);
  __type(value, __u32);
} meshed_ports SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, NM_MAX_PODS);
  __type(key, __u32);
  __type(value, struct nm_pod_counters);
} pod_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_SOCKHASH);
  __uint(max_entries, NM_MAX_PODS* NM_MAX_POD_ADDRESSES);
  __type(key, struct nm_endpoint); /* pod address, port 0 */
  __type(value, __u64);
} inbound_listeners SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, NM_COUNTER_COUNT);
  __type(key, __u32);
  __type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(enum nm_counter counter) {
  __u32 key = counter;
  __u64* value = bpf_map_lookup_elem(&counters, &key);
  if (value) *value += 1;
}

/* The counters of pod `pod_id`, or null if the agent keeps none for it (never expected:
 * they are made before the pod's first redirect). */
static __always_inline struct nm_pod_counters* counters_of(__u32 pod_id) {
  return bpf_map_lookup_elem(&pod_counters, &pod_id);
}

/* The pod of the calling task: its cgroup or the nearest enrolled ancestor. */
static __always_inline struct nm_pod* enrolled_pod(__u64* cgroup_id) {
  __u64 id = bpf_get_current_cgroup_id();
  struct nm_pod* pod = bpf_map_lookup_elem(&enrolled_cgroups, &id);
  if (pod) {
    *cgroup_id = id;
    return pod;
  }
#pragma unroll
  for (int level = 1; level <= NM_MAX_CGROUP_DEPTH; level++) {
    id = bpf_get_current_ancestor_cgroup_id(level);
    if (id == 0) break; /* deeper than the task's own cgroup */
    pod = bpf_map_lookup_elem(&enrolled_cgroups, &id);
    if (pod) {
      *cgroup_id = id;
      return pod;
    }
  }
  return 0;
}

static __always_inline void map_v4(__u8 addr[16], __u32 ip4_be) {
  __builtin_memset(addr, 0, 10);
  addr[10] = 0xff;
  addr[11] = 0xff;
  __builtin_memcpy(&addr[12], &ip4_be, 4);
}

static __always_inline void copy_v6(__u8 addr[16], const __u32 ip6_be[4]) {
  __u32 words[4] = {ip6_be[0], ip6_be[1], ip6_be[2], ip6_be[3]};
  __builtin_memcpy(addr, words, 16);
}

static __always_inline int same_addr(const __u8 a[16], const __u8 b[16]) {
  __u64 a_words[2], b_words[2];
  __builtin_memcpy(a_words, a, 16);
  __builtin_memcpy(b_words, b, 16);
  return a_words[0] == b_words[0] && a_words[1] == b_words[1];
}

static __always_inline int is_loopback_v4(__u32 ip4_be) { return (bpf_ntohl(ip4_be) >> 24) == 127; }

/* Whether this TCP connect from an enrolled pod is redirected; fills `origin` if so. */
static __always_inline int should_redirect(struct bpf_sock_addr* ctx, __u16 port,
                                           struct nm_origin* origin, struct nm_pod** pod) {
  if (ctx->type != SOCK_STREAM || ctx->protocol != IPPROTO_TCP) return 0;
  struct bpf_sock* sk = ctx->sk;
  if (!sk) return 0;
  const __u32 mark = sk->mark;
  if (mark != 0 && (mark == upstream_mark || mark == transparent_mark)) return 0;
  __u32 port_key = port;
  __u8* excluded = bpf_map_lookup_elem(&excluded_ports, &port_key);
  if (excluded && *excluded) return 0;
  __u64 cgroup_id = 0;
  *pod = enrolled_pod(&cgroup_id);
  if (!*pod) return 0;
  origin->port = port;
  origin->pod_id = (*pod)->pod_id;
  origin->cgroup_id = cgroup_id;
  return 1;
}

static __always_inline int save_origin(void* ctx, const struct nm_origin* origin) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct nm_pod_counters* pod = counters_of(origin->pod_id);
  if (bpf_map_update_elem(&origins_by_cookie, &cookie, origin, BPF_ANY) != 0) {
    count(NM_ORIGIN_SAVE_FAILED);
    if (pod) pod->origin_save_failed++;
    return 0;
  }
  if (pod) pod->redirected++; /* the caller redirects from here on, whatever happens */
  return 1;
}

SEC("cgroup/connect4")
int nm_connect4(struct bpf_sock_addr* ctx) {
  const __u32 dst = ctx->user_ip4;
  if (is_loopback_v4(dst)) return NM_CONTINUE;
  struct nm_origin origin = {.family = AF_INET};
  struct nm_pod* pod = 0;
  if (!should_redirect(ctx, bpf_ntohs((__u16)ctx->user_port), &origin, &pod)) return NM_CONTINUE;
  map_v4(origin.addr, dst);
  if (!save_origin(ctx, &origin)) return NM_CONTINUE; /* fail open: the connect goes direct */
  ctx->user_ip4 = bpf_htonl(0x7f000001);
  ctx->user_port = bpf_htons(outbound_port);
  count(NM_REDIRECTED_V4);
  return NM_CONTINUE;
}

SEC("cgroup/connect6")
int nm_connect6(struct bpf_sock_addr* ctx) {
  const __u32 w0 = CTX_U32(ctx->user_ip6[0]), w1 = CTX_U32(ctx->user_ip6[1]),
              w2 = CTX_U32(ctx->user_ip6[2]), w3 = CTX_U32(ctx->user_ip6[3]);
  const int v4_mapped = w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff);
  if (v4_mapped && is_loopback_v4(w3)) return NM_CONTINUE;
  if (!v4_mapped && w0 == 0 && w1 == 0 && w2 == 0 && w3 == bpf_htonl(1))
    return NM_CONTINUE; /* ::1 */
  struct nm_origin origin = {.family = AF_INET6};
  struct nm_pod* pod = 0;
  if (!should_redirect(ctx, bpf_ntohs((__u16)ctx->user_port), &origin, &pod)) return NM_CONTINUE;
  if (!v4_mapped && !(pod->flags & NM_POD_IPV6)) return NM_CONTINUE;
  const __u32 words[4] = {w0, w1, w2, w3};
  copy_v6(origin.addr, words);
  if (!save_origin(ctx, &origin)) return NM_CONTINUE;
  if (v4_mapped) {
    ctx->user_ip6[3] = bpf_htonl(0x7f000001); /* ::ffff:127.0.0.1, the IPv4 listener */
  } else {
    ctx->user_ip6[0] = 0;
    ctx->user_ip6[1] = 0;
    ctx->user_ip6[2] = 0;
    ctx->user_ip6[3] = bpf_htonl(1);
  }
  ctx->user_port = bpf_htons(outbound_port);
  count(NM_REDIRECTED_V6);
  return NM_CONTINUE;
}

/* Once a redirected connect completes, the 4-tuple is known: file the original destination
 * under what the agent will see after accept(). */
SEC("sockops")
int nm_sockops(struct bpf_sock_ops* skops) {
  __u64 cookie = bpf_get_socket_cookie(skops);
  if (skops->op == BPF_SOCK_OPS_STATE_CB) {
    if (skops->args[1] == BPF_TCP_CLOSE) bpf_map_delete_elem(&origins_by_cookie, &cookie);
    return NM_SOCKOPS_DONE;
  }
  if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) return NM_SOCKOPS_DONE;
  struct nm_origin* origin = bpf_map_lookup_elem(&origins_by_cookie, &cookie);
  if (!origin) return NM_SOCKOPS_DONE; /* not a redirected socket */
  if (skops->remote_port == 0) {
    count(NM_ESTABLISHED_WITHOUT_ORIGIN);
    return NM_SOCKOPS_DONE;
  }
  struct nm_tuple key = {.netns_cookie = bpf_get_netns_cookie(skops)};
  if (skops->family == AF_INET) {
    map_v4(key.src_addr, skops->local_ip4);
    map_v4(key.dst_addr, skops->remote_ip4);
  } else {
    const __u32 src[4] = {CTX_U32(skops->local_ip6[0]), CTX_U32(skops->local_ip6[1]),
                          CTX_U32(skops->local_ip6[2]), CTX_U32(skops->local_ip6[3])};
    const __u32 dst[4] = {CTX_U32(skops->remote_ip6[0]), CTX_U32(skops->remote_ip6[1]),
                          CTX_U32(skops->remote_ip6[2]), CTX_U32(skops->remote_ip6[3])};
    copy_v6(key.src_addr, src);
    copy_v6(key.dst_addr, dst);
  }
  key.src_port = (__u16)skops->local_port;
  key.dst_port = (__u16)bpf_ntohl(skops->remote_port);
  if (bpf_map_update_elem(&origins_by_tuple, &key, origin, BPF_ANY) != 0) {
    count(NM_TUPLE_SAVE_FAILED);
  }
  /* Hear about the close, to drop the cookie entry kept for getpeername. */
  bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
  return NM_SOCKOPS_DONE;
}

static __always_inline void set_user_ip6(struct bpf_sock_addr* ctx, const __u8 addr[16]) {
  __u32 words[4];
  __builtin_memcpy(words, addr, 16);
  ctx->user_ip6[0] = words[0];
  ctx->user_ip6[1] = words[1];
  ctx->user_ip6[2] = words[2];
  ctx->user_ip6[3] = words[3];
}

SEC("cgroup/getpeername4")
int nm_getpeername4(struct bpf_sock_addr* ctx) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct nm_origin* origin = bpf_map_lookup_elem(&origins_by_cookie, &cookie);
  if (!origin || origin->family != AF_INET) return NM_CONTINUE;
  __u32 ip4;
  __builtin_memcpy(&ip4, &origin->addr[12], 4);
  ctx->user_ip4 = ip4;
  ctx->user_port = bpf_htons(origin->port);
  count(NM_PEERNAME_REWRITTEN);
  return NM_CONTINUE;
}

SEC("cgroup/getpeername6")
int nm_getpeername6(struct bpf_sock_addr* ctx) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  struct nm_origin* origin = bpf_map_lookup_elem(&origins_by_cookie, &cookie);
  if (!origin || origin->family != AF_INET6) return NM_CONTINUE;
  set_user_ip6(ctx, origin->addr);
  ctx->user_port = bpf_htons(origin->port);
  count(NM_PEERNAME_REWRITTEN);
  return NM_CONTINUE;
}

/* A redirected socket is connected over the pod's loopback; getsockname answers with the
 * pod's own address of the family dialled (the port is the socket's own), as it would
 * without the agent. */
static __always_inline const struct nm_pod* redirected_pod(struct bpf_sock_addr* ctx, __u16 family,
                                                           const struct nm_origin** origin) {
  __u64 cookie = bpf_get_socket_cookie(ctx);
  *origin = bpf_map_lookup_elem(&origins_by_cookie, &cookie);
  if (!*origin || (*origin)->family != family) return 0;
  return bpf_map_lookup_elem(&enrolled_cgroups, &(*origin)->cgroup_id);
}

static __always_inline int is_v4_mapped(const __u8 addr[16]) {
  __u32 words[3];
  __builtin_memcpy(words, addr, 12);
  return words[0] == 0 && words[1] == 0 && words[2] == bpf_htonl(0xffff);
}

static __always_inline int is_unset(const __u8 addr[16]) {
  __u64 words[2];
  __builtin_memcpy(words, addr, 16);
  return words[0] == 0 && words[1] == 0;
}

SEC("cgroup/getsockname4")
int nm_getsockname4(struct bpf_sock_addr* ctx) {
  const struct nm_origin* origin;
  const struct nm_pod* pod = redirected_pod(ctx, AF_INET, &origin);
  if (!pod || is_unset(pod->ipv4)) return NM_CONTINUE;
  __u32 ip4;
  __builtin_memcpy(&ip4, &pod->ipv4[12], 4);
  ctx->user_ip4 = ip4;
  count(NM_SOCKNAME_REWRITTEN);
  return NM_CONTINUE;
}

SEC("cgroup/getsockname6")
int nm_getsockname6(struct bpf_sock_addr* ctx) {
  const struct nm_origin* origin;
  const struct nm_pod* pod = redirected_pod(ctx, AF_INET6, &origin);
  if (!pod) return NM_CONTINUE;
  /* A v4-mapped destination was reached from the pod's IPv4 address, v4-mapped. */
  const __u8* local = is_v4_mapped(origin->addr) ? pod->ipv4 : pod->ipv6;
  if (is_unset(local)) return NM_CONTINUE;
  set_user_ip6(ctx, local);
  count(NM_SOCKNAME_REWRITTEN);
  return NM_CONTINUE;
}

/* Attached to each enrolled pod's netns: a SYN for one of the pod's meshed ports goes to
 * the agent's inbound listener in that netns. The agent's own legs to the application
 * (in passthrough) and a pod calling its own address pass. */
SEC("sk_lookup")
int nm_sk_lookup(struct bpf_sk_lookup* ctx) {
  if (ctx->protocol != IPPROTO_TCP) return SK_PASS;
  struct nm_endpoint local = {.port = (__u16)ctx->local_port};
  struct nm_tuple flow = {.src_port = bpf_ntohs(ctx->remote_port), .dst_port = local.port};
  __u8 remote[16];
  if (ctx->family == AF_INET) {
    if (is_loopback_v4(ctx->remote_ip4)) return SK_PASS;
    map_v4(local.addr, ctx->local_ip4);
    map_v4(remote, ctx->remote_ip4);
  } else {
    const __u32 l[4] = {CTX_U32(ctx->local_ip6[0]), CTX_U32(ctx->local_ip6[1]),
                        CTX_U32(ctx->local_ip6[2]), CTX_U32(ctx->local_ip6[3])};
    const __u32 r[4] = {CTX_U32(ctx->remote_ip6[0]), CTX_U32(ctx->remote_ip6[1]),
                        CTX_U32(ctx->remote_ip6[2]), CTX_U32(ctx->remote_ip6[3])};
    copy_v6(local.addr, l);
    copy_v6(remote, r);
  }
  if (same_addr(local.addr, remote)) return SK_PASS;
  __builtin_memcpy(flow.src_addr, remote, 16);
  __builtin_memcpy(flow.dst_addr, local.addr, 16);
  if (bpf_map_lookup_elem(&passthrough, &flow)) return SK_PASS;
  const __u32* owner = bpf_map_lookup_elem(&meshed_ports, &local);
  if (!owner) return SK_PASS;
  struct nm_pod_counters* pod = counters_of(*owner);
  local.port = 0;
  struct bpf_sock* listener = bpf_map_lookup_elem(&inbound_listeners, &local);
  if (!listener) {
    count(NM_INBOUND_NO_LISTENER);
    if (pod) pod->inbound_no_listener++;
    return SK_PASS;
  }
  const long err = bpf_sk_assign(ctx, listener, 0);
  bpf_sk_release(listener);
  count(err == 0 ? NM_INBOUND_STEERED : NM_INBOUND_ASSIGN_FAILED);
  if (pod) {
    if (err == 0)
      pod->inbound_steered++;
    else
      pod->inbound_assign_failed++;
  }
  return SK_PASS;
}
