// The stream down to one agent, as the tap hub, the admin relay and the agent's session use
// it (AgentLink, tap_hub.h): messages are queued by whoever sends them (the tap hub under its
// lock, a relayed admin request, the session acknowledging a delta) and written by the link's
// own writer thread, so that no sender ever waits on the network.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "aggregator/tap_hub.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::aggregator {

// An agent's stream as the aggregator's end of AgentService.Connect sees it.
using AgentStream = grpc::ServerReaderWriter<v1::AggregatorMessage, v1::AgentMessage>;

class StreamLink : public AgentLink {
 public:
  StreamLink(grpc::ServerContext* context, AgentStream* stream, std::string node)
      : context_(context), stream_(stream), node_(std::move(node)) {}
  ~StreamLink() override { Stop(); }

  // Starts the writer thread.
  void Start();
  // Queues `message`; never blocks. An agent that lets thousands pile up is not reading its
  // stream, and the stream is ended.
  void Send(v1::AggregatorMessage message) override;
  // Ends the stream from this side: the node connected again on a new one.
  void Cancel();
  // Stops the writer before the handler returns and gRPC frees the stream; a write blocked
  // on an agent that stopped reading is cut short by cancelling the call.
  void Stop();

 private:
  void WriteLoop();

  grpc::ServerContext* const context_;
  AgentStream* const stream_;
  const std::string node_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<v1::AggregatorMessage> queue_;
  bool writing_ = false;
  bool stopped_ = false;
  bool failed_ = false;
  std::thread writer_;
};

}  // namespace nodemesh::aggregator
