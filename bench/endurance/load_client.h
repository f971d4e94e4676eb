// The endurance benchmark's load, run by the benchmark inside a pod (the same binary, its
// client-concurrent and client-churn subcommands): a process must be in the pod's cgroup
// for its connects to be redirected, and cgroup membership belongs to a whole process. One
// thread and epoll carry every connection; the requests are HTTP/1.1 keep-alive GETs to
// nginx answering each with its own path, so every answer is checked byte for byte. A
// client says where it is on stdout, line by line, and ends with its totals as one JSON
// line. SIGUSR1 tells it to go on (or, for the churn client, to stop).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nodemesh::testing::endurance {

// What a client saw, printed as one JSON line when it ends.
struct ClientTotals {
  uint64_t connections_opened = 0;     // connect() started
  uint64_t connections_completed = 0;  // every request answered right, then closed by us
  uint64_t connect_failed = 0;
  uint64_t connections_broken = 0;   // ended by the peer or an error before we closed them
  uint64_t requests_sent = 0;        // written whole
  uint64_t responses_ok = 0;         // 200 with exactly the body expected
  uint64_t responses_corrupted = 0;  // another status, a malformed answer or another body
  uint64_t requests_lost = 0;        // sent, and the connection ended before the answer
  uint64_t requests_behind = 0;      // due at the rate but no connection was free
  // What the first few broken connections and wrong answers looked like, as evidence.
  std::vector<std::string> incidents{};

  nlohmann::json ToJson() const {
    return {{"incidents", incidents},
            {"connections_opened", connections_opened},
            {"connections_completed", connections_completed},
            {"connect_failed", connect_failed},
            {"connections_broken", connections_broken},
            {"requests_sent", requests_sent},
            {"responses_ok", responses_ok},
            {"responses_corrupted", responses_corrupted},
            {"requests_lost", requests_lost},
            {"requests_behind", requests_behind}};
  }
  static ClientTotals FromJson(const nlohmann::json& json) {
    ClientTotals totals;
    totals.connections_opened = json.at("connections_opened");
    totals.connections_completed = json.at("connections_completed");
    totals.connect_failed = json.at("connect_failed");
    totals.connections_broken = json.at("connections_broken");
    totals.requests_sent = json.at("requests_sent");
    totals.responses_ok = json.at("responses_ok");
    totals.responses_corrupted = json.at("responses_corrupted");
    totals.requests_lost = json.at("requests_lost");
    totals.requests_behind = json.at("requests_behind");
    totals.incidents = json.value("incidents", std::vector<std::string>());
    return totals;
  }
};

struct ConcurrentClientOptions {
  std::string target;
  int connections = 10000;
  int requests = 4;              // per connection, the first while opening
  int connects_in_flight = 256;  // a burst beyond the listeners' backlogs only costs retries
  int phase_timeout_s = 600;
  uint64_t seed = 1;
};

// Opens every connection with its first request answered, says "all-open", waits for
// SIGUSR1; sends the remaining requests on all of them at once, says "exchanged", waits;
// closes them all and prints its totals.
int RunConcurrentClient(const ConcurrentClientOptions& options);

struct ChurnClientOptions {
  std::string target;
  double rate = 500;                 // requests per second, open loop
  int requests_per_connection = 10;  // then it is closed and another opened
  int slots = 16;                    // connections open at a time
  int seconds = 600;                 // or until SIGUSR1
  int progress_seconds = 5;
  uint64_t seed = 1;
};

// Requests at a steady rate over `slots` connections, each closed after its
// `requests_per_connection` answers and replaced at once, so connections open and close
// all the time. A failed connect is tried again on the next tick. Prints
// "progress <seconds> <sent> <ok>" lines and, at the end, its totals.
int RunChurnClient(const ChurnClientOptions& options);

}  // namespace nodemesh::testing::endurance
