#include "agent/observer/observer_pair.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace nodemesh::agent {
namespace {

// Writes down every call it hears, tagged with its own name, into a log both share.
class CallLog final : public RelayObserver {
 public:
  CallLog(std::string name, std::vector<std::string>& log) : name_(std::move(name)), log_(log) {}
  void OnConnected(int64_t now_ns) override {
    log_.push_back(name_ + " connected " + std::to_string(now_ns));
  }
  bool Watching(Side from) const override { return from == Side::kClient ? client_ : upstream_; }
  void OnBytes(Side from, std::string_view bytes, int64_t) override {
    log_.push_back(name_ + (from == Side::kClient ? " client " : " upstream ") +
                   std::string(bytes));
  }
  void OnBytesUnseen(Side from, uint64_t count, int64_t) override {
    log_.push_back(name_ + (from == Side::kClient ? " client unseen " : " upstream unseen ") +
                   std::to_string(count));
  }
  void StopWatching(Side from) { (from == Side::kClient ? client_ : upstream_) = false; }
  void OnHalfClose(Side from, int64_t) override {
    log_.push_back(name_ + (from == Side::kClient ? " client" : " upstream") + " half-close");
  }
  void OnQuiet() override { log_.push_back(name_ + " quiet"); }
  void OnClosed(RelayEnd end, int64_t) override {
    log_.push_back(name_ + " " + std::string(RelayEndName(end)));
  }

 private:
  const std::string name_;
  std::vector<std::string>& log_;
  bool client_ = true;
  bool upstream_ = true;
};

TEST_CASE("an observer pair tells both observers every call, the first before the second") {
  std::vector<std::string> log;
  CallLog outbound("out", log), inbound("in", log);
  ObserverPair both(outbound, inbound);
  RelayObserver& relay_sees = both;
  relay_sees.OnConnected(7);
  relay_sees.OnBytes(Side::kClient, "GET /", 8);
  relay_sees.OnBytes(Side::kUpstream, "200", 9);
  relay_sees.OnBytesUnseen(Side::kUpstream, 4096, 10);
  relay_sees.OnHalfClose(Side::kClient, 10);
  relay_sees.OnQuiet();
  relay_sees.OnClosed(RelayEnd::kReset, 11);
  CHECK(log == std::vector<std::string>{"out connected 7", "in connected 7", "out client GET /",
                                        "in client GET /", "out upstream 200", "in upstream 200",
                                        "out upstream unseen 4096", "in upstream unseen 4096",
                                        "out client half-close", "in client half-close",
                                        "out quiet", "in quiet", "out reset", "in reset"});
}

TEST_CASE("an observer pair is watching a side while either of its observers is") {
  std::vector<std::string> log;
  CallLog outbound("out", log), inbound("in", log);
  ObserverPair both(outbound, inbound);
  CHECK(both.Watching(Side::kClient));
  outbound.StopWatching(Side::kClient);
  CHECK(both.Watching(Side::kClient));
  inbound.StopWatching(Side::kClient);
  CHECK_FALSE(both.Watching(Side::kClient));
  CHECK(both.Watching(Side::kUpstream));
}

}  // namespace
}  // namespace nodemesh::agent
