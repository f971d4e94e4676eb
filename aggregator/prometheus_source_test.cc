// The store's answers parsed (ParseVectorAnswer), and the queries answered through the store's
// seam from a small real HTTP server in the test that answers as a Prometheus would (canned
// vectors per metric), or is down, slow, refusing, or answers garbage.
#include "aggregator/prometheus_source.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/queries.h"
#include "common/base/percent_encoding.h"
#include "test/lib/files.h"

namespace nodemesh::aggregator {
namespace {

using namespace std::chrono_literals;

// A canned answer: the status and the body.
struct Canned {
  int status = 200;
  std::string body;
  std::chrono::milliseconds delay{0};  // before answering: a slow store
};

// A small HTTP/1.1 server on a loopback port: every request's body (the form with the query)
// goes to `answer`, whose Canned it writes back, on a connection each. Records the requests'
// Authorization headers. Stops (and joins) when destroyed.
class CannedStore {
 public:
  explicit CannedStore(std::function<Canned(const std::string& query)> answer)
      : answer_(std::move(answer)) {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0);
    REQUIRE(listen(listener_, 16) == 0);
    socklen_t length = sizeof(address);
    getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    url_ = "http://127.0.0.1:" + std::to_string(ntohs(address.sin_port));
    thread_ = std::thread([this] { Serve(); });
  }
  ~CannedStore() {
    stopping_ = true;
    shutdown(listener_, SHUT_RDWR);
    close(listener_);
    thread_.join();
  }

  const std::string& url() const { return url_; }
  std::vector<std::string> authorizations() const {
    std::lock_guard lock(mutex_);
    return authorizations_;
  }

 private:
  void Serve() {
    while (!stopping_) {
      const int connection = accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
      if (connection < 0) return;
      Answer(connection);
      close(connection);
    }
  }

  void Answer(int connection) {
    std::string request;
    char buffer[4096];
    size_t body_start = std::string::npos, length = 0;
    while (body_start == std::string::npos || request.size() < body_start + length) {
      const ssize_t got = read(connection, buffer, sizeof(buffer));
      if (got <= 0) return;
      request.append(buffer, size_t(got));
      if (body_start == std::string::npos && request.find("\r\n\r\n") != std::string::npos) {
        body_start = request.find("\r\n\r\n") + 4;
        const size_t header = request.find("Content-Length: ");
        length = header == std::string::npos ? 0 : std::stoul(request.substr(header + 16));
      }
    }
    const size_t authorization = request.find("Authorization: ");
    if (authorization != std::string::npos) {
      std::lock_guard lock(mutex_);
      authorizations_.push_back(request.substr(
          authorization + 15, request.find("\r\n", authorization) - authorization - 15));
    }
    const std::string form = request.substr(body_start);
    const size_t query = form.find("query=");
    const Canned canned = answer_(QueryDecode(form.substr(query + 6, form.find('&') - query - 6)));
    const auto until = std::chrono::steady_clock::now() + canned.delay;
    while (std::chrono::steady_clock::now() < until && !stopping_) std::this_thread::sleep_for(5ms);
    const std::string answer = "HTTP/1.1 " + std::to_string(canned.status) +
                               " X\r\nContent-Type: application/json\r\nContent-Length: " +
                               std::to_string(canned.body.size()) +
                               "\r\nConnection: close\r\n\r\n" + canned.body;
    (void)!write(connection, answer.data(), answer.size());
  }

  const std::function<Canned(const std::string&)> answer_;
  int listener_ = -1;
  std::string url_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  std::vector<std::string> authorizations_;
  std::thread thread_;
};

std::string Vector(const std::string& elements) {
  return R"({"status":"success","data":{"resultType":"vector","result":[)" + elements + "]}}";
}

// One element of the traffic from deployment load to deployment api in namespace shop, seen
// from `direction`, with `extra` labels ("classification":"success", ...).
std::string Element(const std::string& direction, const std::string& extra, double value) {
  return R"({"metric":{"direction":")" + direction +
         R"(","src_namespace":"shop","src_pod":"load-1","src_owner_kind":"Deployment",)"
         R"("src_owner_name":"load","src_service_account":"load","dst_namespace":"shop",)"
         R"("dst_pod":"api-1","dst_owner_kind":"Deployment","dst_owner_name":"api",)"
         R"("dst_service_account":"api",)" +
         extra + R"(},"value":[1700000000,")" + std::to_string(value) + R"("]})";
}

// What a store holding 30 successes and 10 failures from load to api, seen from both sides,
// answers: latencies of 0.1-0.2 ms for 20 of them, 1-2 ms for the other 20.
Canned ShopStore(const std::string& query) {
  std::string elements;
  for (const std::string direction : {"inbound", "outbound"}) {
    const auto add = [&](const std::string& extra, double value) {
      if (!elements.empty()) elements += ",";
      elements += Element(direction, extra, value);
    };
    if (query.find("response_total") != std::string::npos) {
      add(R"("classification":"success")", 30);
      add(R"("classification":"failure")", 10);
    } else if (query.find("response_latency_seconds_bucket") != std::string::npos) {
      for (const auto& [le, count] : std::vector<std::pair<std::string, double>>{
               {"0.0001", 0}, {"0.0002", 20}, {"0.001", 20}, {"0.002", 40}, {"+Inf", 40}}) {
        add(R"("classification":"success","le":")" + le + "\"", count * 0.75);
        add(R"("classification":"failure","le":")" + le + "\"", count * 0.25);
      }
    } else if (query.find("tcp_read_bytes_total") != std::string::npos) {
      add("\"a\":\"b\"", 4000);
    }
  }
  return Canned{200, Vector(elements)};
}

v1::StatSummaryRequest StatOfShop(int64_t window_seconds) {
  v1::StatSummaryRequest request;
  request.mutable_selector()->set_type("deployment");
  request.mutable_selector()->set_namespace_("shop");
  request.set_window_seconds(window_seconds);
  return request;
}

absl::StatusOr<v1::StatSummaryResponse> AskStore(const PrometheusClient& client,
                                                 int64_t window_seconds = 86400) {
  const Store memory;
  const QueryContext context{memory, {}, 1'700'000'000, 0, &client};
  return StatSummary(context, {}, StatOfShop(window_seconds));
}

TEST_CASE("An instant vector is parsed with its labels and values", "[unit]") {
  const absl::StatusOr<std::vector<PromSample>> samples =
      ParseVectorAnswer(200, Vector(R"({"metric":{"le":"+Inf","a":"x"},"value":[1,"12"]},)"
                                    R"({"metric":{},"value":[1,"0.5"]})"));
  REQUIRE(samples.ok());
  REQUIRE(samples->size() == 2);
  CHECK((*samples)[0].Label("a") == "x");
  CHECK((*samples)[0].Label("le") == "+Inf");
  CHECK((*samples)[0].Label("missing").empty());
  CHECK((*samples)[0].value == 12);
  CHECK((*samples)[1].value == 0.5);
}

TEST_CASE("The store's refusals and garbage are errors that say what to do", "[unit]") {
  const auto code = [](long status, const std::string& body) {
    return ParseVectorAnswer(status, body).status();
  };
  const absl::Status big =
      code(422, R"({"status":"error","errorType":"execution","error":"query processing would load )"
                R"(too many samples into memory in query execution"})");
  CHECK(big.code() == absl::StatusCode::kResourceExhausted);
  CHECK_THAT(std::string(big.message()), Catch::Contains("too many samples") &&
                                             Catch::Contains("shorter window") &&
                                             Catch::Contains("--query.max-samples"));
  CHECK(code(400, R"({"status":"error","errorType":"bad_data","error":"parse error"})").code() ==
        absl::StatusCode::kInvalidArgument);
  CHECK(code(401, R"({"status":"error","error":"no"})").code() ==
        absl::StatusCode::kUnauthenticated);
  const absl::Status html = code(200, "<html>a login page</html>");
  CHECK(html.code() == absl::StatusCode::kUnavailable);
  CHECK_THAT(std::string(html.message()),
             Catch::Contains("no Prometheus API answer") && Catch::Contains("<html>"));
  CHECK(code(200, R"({"status":"success","data":{"resultType":"matrix","result":[]}})").code() ==
        absl::StatusCode::kUnavailable);
  CHECK(code(200, Vector(R"({"metric":{},"value":[1,"many"]})")).code() ==
        absl::StatusCode::kUnavailable);
}

TEST_CASE("Bucket percentiles interpolate as histogram_quantile does", "[unit]") {
  LatencyBuckets buckets;
  buckets.Add(0.001, 50);
  buckets.Add(0.002, 100);
  buckets.Add(std::numeric_limits<double>::infinity(), 100);
  CHECK(buckets.QuantileNs(0.5) == 1'000'000);
  CHECK(buckets.QuantileNs(0.25) == 500'000);
  CHECK(buckets.QuantileNs(0.75) == 1'500'000);
  buckets.Add(std::numeric_limits<double>::infinity(), 100);  // half beyond the last bound
  CHECK(buckets.QuantileNs(0.99) == 2'000'000);
  CHECK(LatencyBuckets().QuantileNs(0.5) == 0);
}

TEST_CASE("Stat from a store counts as memory does: one side per pair, the buckets' percentiles",
          "[unit]") {
  std::mutex mutex;
  std::vector<std::string> queries;
  CannedStore store([&](const std::string& query) {
    std::lock_guard lock(mutex);
    queries.push_back(query);
    return ShopStore(query);
  });
  const PrometheusClient client(PrometheusOptions{.url = store.url()});
  const absl::StatusOr<v1::StatSummaryResponse> answer = AskStore(client);
  INFO(answer.status().ToString());
  REQUIRE(answer.ok());
  CHECK(answer->source() == v1::ANSWER_SOURCE_PROMETHEUS);
  CHECK(answer->window_seconds() == 86400);
  REQUIRE(answer->rows_size() == 1);
  const v1::StatRow& api = answer->rows(0);
  CHECK(api.resource().name() == "api");
  CHECK(api.requests() == 40);  // the inbound side's, not both
  CHECK(api.successes() == 30);
  CHECK(api.success_rate() == 0.75);
  CHECK(api.latency().p50_ns() == 200'000);    // rank 20 of 40: the top of (0.1, 0.2] ms
  CHECK(api.latency().p95_ns() == 1'900'000);  // rank 38: 18/20 into (1, 2] ms
  CHECK(api.read_bytes_per_second() == Approx(4000.0 / 86400));
  // Counts from the counters' steps, summed by the agents' labels; a day in steps of 24 s.
  REQUIRE_FALSE(queries.empty());
  CHECK(queries[0] == PrometheusSource::IncreaseExpression(
                          "response_total",
                          "direction,src_namespace,src_pod,src_owner_kind,src_owner_name,"
                          "src_service_account,dst_namespace,dst_pod,dst_owner_kind,"
                          "dst_owner_name,dst_service_account,dst_service_namespace,dst_service,"
                          "classification",
                          86400, 24));
  CHECK_THAT(queries[0], Catch::Contains("offset 24s") && Catch::Contains("[86400s:24s]"));
}

TEST_CASE("A store that is down, slow, refusing or answering garbage is a clear error, no hang",
          "[unit]") {
  SECTION("down") {
    std::string url;
    {
      CannedStore gone([](const std::string&) { return Canned{}; });
      url = gone.url();
    }
    const PrometheusClient client(PrometheusOptions{.url = url});
    const absl::Status status = AskStore(client).status();
    CHECK(status.code() == absl::StatusCode::kUnavailable);
    CHECK_THAT(std::string(status.message()),
               Catch::Contains("cannot connect to the Prometheus-compatible store") &&
                   Catch::Contains("is the store up"));
  }
  SECTION("slow") {
    CannedStore slow([](const std::string&) { return Canned{200, Vector(""), 10s}; });
    const PrometheusClient client(PrometheusOptions{.url = slow.url(), .timeout = 300ms});
    const auto started = std::chrono::steady_clock::now();
    const absl::Status status = AskStore(client).status();
    CHECK(std::chrono::steady_clock::now() - started < 5s);
    CHECK(status.code() == absl::StatusCode::kDeadlineExceeded);
    CHECK_THAT(std::string(status.message()), Catch::Contains("--prometheus-timeout"));
  }
  SECTION("refusing a query for its size") {
    CannedStore refusing([](const std::string&) {
      return Canned{422, R"({"status":"error","errorType":"execution","error":"query processing )"
                         R"(would load too many samples into memory in query execution"})"};
    });
    const PrometheusClient client(PrometheusOptions{.url = refusing.url()});
    const absl::Status status = AskStore(client).status();
    CHECK(status.code() == absl::StatusCode::kResourceExhausted);
    CHECK_THAT(std::string(status.message()), Catch::Contains("too many samples"));
  }
  SECTION("garbage") {
    CannedStore garbage([](const std::string&) { return Canned{200, "not json"}; });
    const PrometheusClient client(PrometheusOptions{.url = garbage.url()});
    CHECK(AskStore(client).status().code() == absl::StatusCode::kUnavailable);
  }
}

TEST_CASE("The store's auth: a bearer token file read again when it changes, or basic auth",
          "[unit]") {
  CannedStore store(ShopStore);
  nodemesh::testing::TempDir dir;
  const std::string token = dir.path() + "/token";
  std::ofstream(token) << "first\n";
  {
    const PrometheusClient client(
        PrometheusOptions{.url = store.url(), .bearer_token_file = token});
    REQUIRE(AskStore(client).ok());
    std::ofstream(token) << "second-and-longer\n";
    REQUIRE(AskStore(client).ok());
  }
  const std::string basic = dir.path() + "/basic";
  std::ofstream(basic) << "user:secret\n";
  const PrometheusClient client(PrometheusOptions{.url = store.url(), .basic_auth_file = basic});
  REQUIRE(AskStore(client).ok());
  const std::vector<std::string> seen = store.authorizations();
  REQUIRE(seen.size() == 15);  // 5 queries per answer
  CHECK(seen.front() == "Bearer first");
  CHECK(seen[5] == "Bearer second-and-longer");
  CHECK(seen.back() == "Basic dXNlcjpzZWNyZXQ=");
}

TEST_CASE("Windows past memory's hour need a store, and go to it by default", "[unit]") {
  const Store memory;
  const QueryContext without{memory, {}, 1'700'000'000, 0, nullptr};
  const absl::Status refused = StatSummary(without, {}, StatOfShop(7200)).status();
  CHECK(refused.code() == absl::StatusCode::kInvalidArgument);
  CHECK_THAT(std::string(refused.message()), Catch::Contains("--prometheus"));
  v1::StatSummaryRequest asked = StatOfShop(60);
  asked.set_source(v1::ANSWER_SOURCE_PROMETHEUS);
  CHECK(StatSummary(without, {}, asked).status().code() == absl::StatusCode::kFailedPrecondition);

  CannedStore store(ShopStore);
  const PrometheusClient client(PrometheusOptions{.url = store.url()});
  const QueryContext with{memory, {}, 1'700'000'000, 0, &client};
  const absl::StatusOr<v1::StatSummaryResponse> hour = StatSummary(with, {}, StatOfShop(3600));
  REQUIRE(hour.ok());
  CHECK(hour->source() == v1::ANSWER_SOURCE_MEMORY);
  const absl::StatusOr<v1::StatSummaryResponse> week = StatSummary(with, {}, StatOfShop(7 * 86400));
  REQUIRE(week.ok());
  CHECK(week->source() == v1::ANSWER_SOURCE_PROMETHEUS);
  CHECK(StatSummary(with, {}, StatOfShop(32 * 86400)).status().code() ==
        absl::StatusCode::kInvalidArgument);
  asked.set_source(v1::ANSWER_SOURCE_MEMORY);
  asked.set_window_seconds(7200);
  CHECK(StatSummary(with, {}, asked).status().code() == absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace nodemesh::aggregator
