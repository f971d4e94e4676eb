// The admin relay alone: a request goes down the link with an id, and the caller gets the
// answer with that id, or a clear error when the agent is slow, its stream ends, or the
// caller leaves.
#include "aggregator/admin_relay.h"

#include <catch2/catch.hpp>
#include <thread>

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;

// Remembers what was sent down; `answer` makes the agent answer it at once.
class FakeLink : public AgentLink {
 public:
  void Send(v1::AggregatorMessage message) override {
    std::lock_guard lock(mutex);
    sent.push_back(std::move(message));
  }
  std::optional<v1::AdminRequest> Last() {
    std::lock_guard lock(mutex);
    if (sent.empty()) return std::nullopt;
    return sent.back().admin_request();
  }
  std::mutex mutex;
  std::vector<v1::AggregatorMessage> sent;
};

v1::AdminRequest WaitForRequest(FakeLink& link) {
  for (int i = 0; i < 500; ++i) {
    if (std::optional<v1::AdminRequest> request = link.Last()) return *request;
    std::this_thread::sleep_for(2ms);
  }
  FAIL("no request went down the link");
  return {};
}

TEST_CASE("admin relay: the answer with the request's id reaches its caller", "[relay]") {
  AdminRelay relay;
  FakeLink link, other;
  std::thread agent([&] {
    const v1::AdminRequest request = WaitForRequest(link);
    CHECK(request.target() == "/pods");
    v1::AdminResponse wrong_id;
    wrong_id.set_id(request.id() + 1);
    relay.Deliver(link, wrong_id);
    v1::AdminResponse from_another_stream;
    from_another_stream.set_id(request.id());
    relay.Deliver(other, from_another_stream);
    v1::AdminResponse answer;
    answer.set_id(request.id());
    answer.set_status(200);
    answer.set_body("{\"pods\": []}");
    relay.Deliver(link, answer);
  });
  const absl::StatusOr<v1::AdminResponse> answer =
      relay.Call(link, "node-a", "/pods", [] { return false; });
  agent.join();
  REQUIRE(answer.ok());
  CHECK(answer->status() == 200);
  CHECK(answer->body() == "{\"pods\": []}");
}

TEST_CASE("admin relay: a slow agent, an ended stream, a caller that left", "[relay]") {
  AdminRelay relay(AdminRelayOptions{.timeout = 200ms, .max_pending = 1});
  FakeLink link;
  absl::StatusOr<v1::AdminResponse> slow =
      relay.Call(link, "node-a", "/kernel", [] { return false; });
  CHECK(absl::IsDeadlineExceeded(slow.status()));
  CHECK(slow.status().message() == "node node-a's agent did not answer /kernel within 0.2 s");

  link.sent.clear();
  std::thread ender([&] {
    WaitForRequest(link);
    relay.StreamEnded(link);
  });
  absl::StatusOr<v1::AdminResponse> ended =
      relay.Call(link, "node-a", "/pods", [] { return false; });
  ender.join();
  CHECK(absl::IsUnavailable(ended.status()));

  CHECK(absl::IsCancelled(relay.Call(link, "node-a", "/pods", [] { return true; }).status()));
}

}  // namespace
}  // namespace nodemesh::aggregator
