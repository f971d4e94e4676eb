// A replica's hour before its start, from a peer. Every agent streams to every replica of
// the aggregator (agent/aggregator_replicas.h), so the replicas hold the same seconds; one
// that starts (first, or again after it died) has lost its memory. At its start S it files
// what the agents send for S on, and acknowledges without filing what they send for earlier
// seconds (ServerState::first_agent_second); after a grace of a few seconds, when its peers
// hold the seconds before S whole, it asks one of them for those seconds
// (AgentService.Backfill) and merges them in, the newest first, moving
// history_start_second back as they arrive. So nothing is counted twice and no second is
// missing, and the windows reach back as far as the peer's did.
//
// A peer is found as the agents find the replicas (common/tls/replicas.h: --peers, a list or
// a name resolving to every replica). Edge cases:
//   - no peer answers (none yet, or all down): the windows start at S, as for a single
//     aggregator; it keeps asking until `give_up_after`.
//   - a peer that is itself catching up answers so; it is asked again until `patience` has
//     passed, then what it holds is taken (two replicas started together have nothing older).
//   - an answer cut short leaves whole seconds: the rest is asked for again.
//   - itself among the peers (BackfillRequest.replica): skipped.
// Threads: Start runs the asking on a thread of its own; ServeBackfill runs on the gRPC
// handler thread of a peer's call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "aggregator/server_state.h"
#include "common/tls/replicas.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {

struct BackfillOptions {
  // The peer replicas (--peers); empty: none, the windows start at the aggregator's start.
  std::string peers;
  // To dial them: their CA (--peer-ca) and the certificate presented (--peer-cert, --peer-key).
  TlsFiles tls;
  // A file holding the pod's projected ServiceAccount token, read for each call and
  // presented as `authorization: Bearer` (--peer-token-file); empty: none.
  std::string token_file;
  // After the start, before asking: the agents' deltas for the seconds before it reach the
  // peers within it.
  std::chrono::milliseconds grace{std::chrono::seconds(5)};
  // How long a peer that is itself catching up is waited for.
  std::chrono::milliseconds patience{std::chrono::seconds(30)};
  // How long to keep asking when no peer answers at all.
  std::chrono::milliseconds give_up_after{std::chrono::minutes(2)};
  // Between rounds of asking every peer.
  std::chrono::milliseconds retry_interval{std::chrono::seconds(1)};
};

class Backfill {
 public:
  // `state.history_start_second` is the start S; `state` outlives this.
  Backfill(BackfillOptions options, ServerState& state, int retention_seconds);
  ~Backfill();
  Backfill(const Backfill&) = delete;
  Backfill& operator=(const Backfill&) = delete;

  void Start();
  void Stop();

 private:
  // What one peer's answer left: every second asked for that it held; some, the answer cut
  // short; nothing, as it is catching up itself; nothing, as it could not be asked.
  enum class Outcome { kFilled, kPartly, kBusy, kFailed };

  void Run();
  // Asks `peer` for [want_from_, filled_from_ - 1] and merges what it gives.
  Outcome Ask(const ReplicaAddress& peer, bool take_catching_up);
  // Waits `delay`; false when stopping.
  bool Wait(std::chrono::milliseconds delay);

  const BackfillOptions options_;
  ServerState& state_;
  const int64_t start_second_;
  const int64_t want_from_;  // the oldest second the retention holds
  int64_t filled_from_;      // held whole from here to the start; the Backfill thread's

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::unique_ptr<grpc::ClientContext> context_;  // the call under way, to cancel it on Stop
  std::thread thread_;
};

// A peer's call: the seconds of `request` the store holds whole, newest first, after a first
// reply saying from which second it holds them and whether it is still catching up.
grpc::Status ServeBackfill(const ServerState& state, const v1::BackfillRequest& request,
                           grpc::ServerWriter<v1::BackfillReply>* writer);

}  // namespace nodemesh::aggregator
