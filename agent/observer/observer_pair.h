// Two observers of one relay: what each hears is what the relay tells, in the same order.
// A call between two meshed pods of one node is relayed once (one hop: the worker dials the
// server straight) yet watched as two hops watched it, by the caller's outbound observer and
// the server's inbound one, each parsing the same bytes and counting in its own series: so
// what is counted, and the rule that keeps a meshed-to-meshed call from being counted twice,
// see exactly what they saw when the call went out of one listener and into another.
//
// A plain forwarder: every RelayObserver call goes to the first observer, then the second.
// The relay reads a side while either observer watches it; the one that stopped watching
// then hears those bytes through OnBytes, which counts them as OnBytesUnseen would.
// It owns neither (the worker's connection does, and asks each for its own summary). Called
// on the relay's thread only.
#pragma once

#include <cstdint>
#include <string_view>

#include "agent/proxy/relay_interface.h"

namespace nodemesh::agent {

class ObserverPair final : public RelayObserver {
 public:
  // Both outlive the pair.
  ObserverPair(RelayObserver& first, RelayObserver& second) : first_(first), second_(second) {}

  void OnConnected(int64_t now_ns) override {
    first_.OnConnected(now_ns);
    second_.OnConnected(now_ns);
  }
  bool Watching(Side from) const override {
    return first_.Watching(from) || second_.Watching(from);
  }
  void OnBytes(Side from, std::string_view bytes, int64_t now_ns) override {
    first_.OnBytes(from, bytes, now_ns);
    second_.OnBytes(from, bytes, now_ns);
  }
  void OnBytesUnseen(Side from, uint64_t count, int64_t now_ns) override {
    first_.OnBytesUnseen(from, count, now_ns);
    second_.OnBytesUnseen(from, count, now_ns);
  }
  void OnHalfClose(Side from, int64_t now_ns) override {
    first_.OnHalfClose(from, now_ns);
    second_.OnHalfClose(from, now_ns);
  }
  void OnQuiet() override {
    first_.OnQuiet();
    second_.OnQuiet();
  }
  void OnClosed(RelayEnd end, int64_t now_ns) override {
    first_.OnClosed(end, now_ns);
    second_.OnClosed(end, now_ns);
  }

 private:
  RelayObserver& first_;
  RelayObserver& second_;
};

}  // namespace nodemesh::agent
