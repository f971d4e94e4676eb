#include "agent/kernel/conntrack.h"

#include <libnetfilter_conntrack/libnetfilter_conntrack.h>
#include <netinet/in.h>

#include <cerrno>
#include <cstring>

#include "common/base/errno_status.h"

namespace nodemesh::agent {
namespace {

// The reply tuple's source of the entry the query found.
struct Reply {
  bool found = false;
  Endpoint source;
};

// Always CONTINUE: STOP would leave the rest of the answer (the kernel's acknowledgement) in
// the socket, to be taken for the answer of the next query.
int OnEntry(enum nf_conntrack_msg_type, struct nf_conntrack* ct, void* data) {
  Reply& reply = *static_cast<Reply*>(data);
  const uint8_t family = nfct_get_attr_u8(ct, ATTR_ORIG_L3PROTO);
  if (family == AF_INET && nfct_attr_is_set(ct, ATTR_REPL_IPV4_SRC) > 0) {
    reply.source.ip = IpAddress::V4(ntohl(nfct_get_attr_u32(ct, ATTR_REPL_IPV4_SRC)));
  } else if (family == AF_INET6 && nfct_attr_is_set(ct, ATTR_REPL_IPV6_SRC) > 0) {
    std::memcpy(reply.source.ip.bytes.data(), nfct_get_attr(ct, ATTR_REPL_IPV6_SRC), 16);
  } else {
    return NFCT_CB_CONTINUE;
  }
  if (nfct_attr_is_set(ct, ATTR_REPL_PORT_SRC) <= 0) return NFCT_CB_CONTINUE;
  reply.source.port = ntohs(nfct_get_attr_u16(ct, ATTR_REPL_PORT_SRC));
  reply.found = true;
  return NFCT_CB_CONTINUE;
}

// The original tuple of a TCP connection, as the query names the entry.
void SetOriginal(nf_conntrack* ct, const Endpoint& local, const Endpoint& dialled) {
  nfct_set_attr_u8(ct, ATTR_L4PROTO, IPPROTO_TCP);
  if (local.ip.is_v4()) {
    nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET);
    uint32_t source, destination;  // network order, as the bytes are
    std::memcpy(&source, &local.ip.bytes[12], 4);
    std::memcpy(&destination, &dialled.ip.bytes[12], 4);
    nfct_set_attr_u32(ct, ATTR_IPV4_SRC, source);
    nfct_set_attr_u32(ct, ATTR_IPV4_DST, destination);
  } else {
    nfct_set_attr_u8(ct, ATTR_L3PROTO, AF_INET6);
    nfct_set_attr(ct, ATTR_IPV6_SRC, local.ip.bytes.data());
    nfct_set_attr(ct, ATTR_IPV6_DST, dialled.ip.bytes.data());
  }
  nfct_set_attr_u16(ct, ATTR_PORT_SRC, htons(local.port));
  nfct_set_attr_u16(ct, ATTR_PORT_DST, htons(dialled.port));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Conntrack>> Conntrack::Open() {
  nfct_handle* handle = nfct_open(CONNTRACK, 0);
  if (handle == nullptr) return ErrnoStatus("opening a conntrack netlink socket", errno);
  return std::unique_ptr<Conntrack>(new Conntrack(handle));
}

Conntrack::~Conntrack() { nfct_close(handle_); }

std::optional<Endpoint> Conntrack::TranslatedDestination(const Endpoint& local,
                                                         const Endpoint& dialled) {
  if (local.ip.is_v4() != dialled.ip.is_v4()) {
    stats_.failed.Add();
    return std::nullopt;
  }
  nf_conntrack* ct = nfct_new();
  if (ct == nullptr) {
    stats_.failed.Add();
    return std::nullopt;
  }
  SetOriginal(ct, local, dialled);
  Reply reply;
  nfct_callback_register(handle_, NFCT_T_ALL, OnEntry, &reply);
  const int result = nfct_query(handle_, NFCT_Q_GET, ct);
  const int error = errno;
  nfct_callback_unregister(handle_);
  nfct_destroy(ct);
  if (result != 0 && error != ENOENT) {
    stats_.failed.Add();
    return std::nullopt;
  }
  // No entry: nothing in this netns saw the connection (no NAT on its path). An entry whose
  // reply comes from what was dialled: seen, not translated.
  if (result != 0 || !reply.found || reply.source == dialled) {
    stats_.not_translated.Add();
    return std::nullopt;
  }
  stats_.translated.Add();
  return reply.source;
}

}  // namespace nodemesh::agent
