// meshctl end to end in one process: arguments in, exit code and output out, against a
// real gRPC server implementing nodemesh.v1.Api with canned answers.
#include "cli/meshctl.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/client.h"
#include "cli/golden.h"
#include "cli/run_in_process.h"
#include "cli/views/views.h"
#include "common/base/version.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::cli {
namespace {

using testing::kNow;
using testing::ReadTestdata;
using testing::ReadTextProto;
using testing::Result;
using testing::Run;
using testing::WatchedOutput;

// The aggregator's client API with canned answers; it keeps what it was asked.
class FakeApi final : public v1::Api::Service {
 public:
  v1::StatSummaryResponse stat_response;
  v1::EdgesResponse edges_response;
  v1::TopRoutesResponse routes_response;
  v1::ListPodsResponse pods_response;
  v1::ViewResponse view_response;
  std::vector<v1::TapStreamMessage> tap_messages;
  grpc::Status failure = grpc::Status::OK;  // answered to every call when not OK

  std::mutex mutex;
  std::vector<v1::StatSummaryRequest> stat_requests;
  std::vector<v1::EdgesRequest> edges_requests;
  std::vector<v1::TopRoutesRequest> routes_requests;
  std::vector<v1::TapRequestSpec> tap_requests;
  std::vector<v1::ViewRequest> view_requests;
  std::atomic<int> calls{0};
  std::atomic<bool> tap_cancelled{false};

  grpc::Status StatSummary(grpc::ServerContext*, const v1::StatSummaryRequest* request,
                           v1::StatSummaryResponse* response) override {
    return Answer(*request, stat_requests, stat_response, response);
  }
  grpc::Status Edges(grpc::ServerContext*, const v1::EdgesRequest* request,
                     v1::EdgesResponse* response) override {
    return Answer(*request, edges_requests, edges_response, response);
  }
  grpc::Status TopRoutes(grpc::ServerContext*, const v1::TopRoutesRequest* request,
                         v1::TopRoutesResponse* response) override {
    return Answer(*request, routes_requests, routes_response, response);
  }
  grpc::Status ListPods(grpc::ServerContext*, const v1::ListPodsRequest* request,
                        v1::ListPodsResponse* response) override {
    std::vector<v1::ListPodsRequest> ignored;
    return Answer(*request, ignored, pods_response, response);
  }
  grpc::Status View(grpc::ServerContext*, const v1::ViewRequest* request,
                    v1::ViewResponse* response) override {
    return Answer(*request, view_requests, view_response, response);
  }
  // Sends the canned messages, then holds the stream open until the client cancels it,
  // as the aggregator does.
  grpc::Status Tap(grpc::ServerContext* context, const v1::TapRequestSpec* request,
                   grpc::ServerWriter<v1::TapStreamMessage>* writer) override {
    ++calls;
    {
      std::lock_guard lock(mutex);
      tap_requests.push_back(*request);
    }
    if (!failure.ok()) return failure;
    for (const v1::TapStreamMessage& message : tap_messages) writer->Write(message);
    while (!context->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    tap_cancelled = true;
    return grpc::Status::CANCELLED;
  }

 private:
  template <typename Request, typename Response>
  grpc::Status Answer(const Request& request, std::vector<Request>& seen, const Response& canned,
                      Response* response) {
    ++calls;
    std::lock_guard lock(mutex);
    seen.push_back(request);
    if (!failure.ok()) return failure;
    *response = canned;
    // Unless a test says otherwise, an aggregator up for longer than the window asked for.
    if constexpr (requires { request.window_seconds(); }) {
      if (response->window_seconds() == 0) response->set_window_seconds(request.window_seconds());
    }
    return grpc::Status::OK;
  }
};

class FakeAggregator {
 public:
  FakeAggregator() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&api);
    server_ = builder.BuildAndStart();
    REQUIRE(server_ != nullptr);
  }
  ~FakeAggregator() {
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }
  std::string address() const { return fmt::format("127.0.0.1:{}", port_); }

  FakeApi api;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

std::vector<std::string> With(std::vector<std::string> args, const FakeAggregator& aggregator) {
  args.push_back("--aggregator");
  args.push_back(aggregator.address());
  return args;
}

// A port nothing listens on: bound once, then closed.
int ClosedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool IsOneLine(const std::string& text) {
  return !text.empty() && text.back() == '\n' && std::count(text.begin(), text.end(), '\n') == 1;
}

TEST_CASE("stat asks for the workloads and prints Linkerd's table", "[meshctl][stat]") {
  FakeAggregator aggregator;
  aggregator.api.stat_response =
      ReadTextProto<v1::StatSummaryResponse>("stat_deployments.textproto");
  const Result result = Run(With({"stat", "deploy", "-n", "emojivoto"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("stat_table.golden"));
  CHECK(result.err ==
        "warning: node node-2 is disconnected and has not reported for 12s; its data may be "
        "missing from this window\n");
  REQUIRE(aggregator.api.stat_requests.size() == 1);
  const v1::StatSummaryRequest& request = aggregator.api.stat_requests[0];
  CHECK(request.selector().type() == "deployment");
  CHECK(request.selector().namespace_() == "emojivoto");
  CHECK(request.selector().name().empty());
  CHECK(request.window_seconds() == 60);
  CHECK_FALSE(request.has_from());
  CHECK_FALSE(request.has_to());
}

TEST_CASE("stat --from, --to, -t and -o json", "[meshctl][stat]") {
  FakeAggregator aggregator;
  aggregator.api.stat_response =
      ReadTextProto<v1::StatSummaryResponse>("stat_deployments.textproto");
  const Result from = Run(With({"stat", "deployments/voting", "-n", "emojivoto", "--from",
                                "deploy/web", "-t", "10m", "-o", "json"},
                               aggregator));
  CHECK(from.code == 0);
  CHECK(from.out == ReadTestdata("stat_json.golden"));
  const Result to =
      Run(With({"stat", "deploy", "-n", "emojivoto", "--to", "sts/db", "--to-namespace", "data"},
               aggregator));
  CHECK(to.code == 0);

  REQUIRE(aggregator.api.stat_requests.size() == 2);
  const v1::StatSummaryRequest& first = aggregator.api.stat_requests[0];
  CHECK(first.selector().name() == "voting");
  CHECK(first.window_seconds() == 600);
  CHECK(first.from().type() == "deployment");
  CHECK(first.from().namespace_() == "emojivoto");
  CHECK(first.from().name() == "web");
  CHECK_FALSE(first.has_to());
  const v1::StatSummaryRequest& second = aggregator.api.stat_requests[1];
  CHECK_FALSE(second.has_from());
  CHECK(second.to().type() == "statefulset");
  CHECK(second.to().namespace_() == "data");
  CHECK(second.to().name() == "db");
}

TEST_CASE("stat -A asks for every namespace and adds the NAMESPACE column", "[meshctl][stat]") {
  FakeAggregator aggregator;
  aggregator.api.stat_response =
      ReadTextProto<v1::StatSummaryResponse>("stat_all_namespaces.textproto");
  const Result result = Run(With({"stat", "deploy", "-A", "-o", "wide"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("stat_all_namespaces_wide.golden"));
  CHECK(result.err == ReadTestdata("stale_warnings.golden"));
  CHECK(aggregator.api.stat_requests.at(0).selector().namespace_().empty());
}

TEST_CASE("stat ns lists namespaces without a NAMESPACE column", "[meshctl][stat]") {
  FakeAggregator aggregator;
  v1::StatRow* row = aggregator.api.stat_response.add_rows();
  row->mutable_resource()->set_type("namespace");
  row->mutable_resource()->set_namespace_("emojivoto");
  row->mutable_resource()->set_name("emojivoto");
  row->set_meshed_pods(4);
  row->set_running_pods(4);
  const Result result = Run(With({"stat", "ns", "-A"}, aggregator));
  CHECK(result.code == 0);
  CHECK(
      result.out ==
      "NAME        MESHED   SUCCESS   RPS   LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n"
      "emojivoto      4/4         -     -             -             -             -          -\n");
  const v1::Resource& selector = aggregator.api.stat_requests.at(0).selector();
  CHECK(selector.type() == "namespace");
  CHECK(selector.namespace_().empty());
}

TEST_CASE("stat svc asks for Services: --to svc/NAME for their callers", "[meshctl][stat]") {
  FakeAggregator aggregator;
  aggregator.api.stat_response = ReadTextProto<v1::StatSummaryResponse>("stat_services.textproto");
  const Result services = Run(With({"stat", "svc", "-n", "emojivoto"}, aggregator));
  CHECK(services.code == 0);
  CHECK(services.out == ReadTestdata("stat_services.golden"));
  const Result one = Run(With({"stat", "services", "web-svc", "-n", "emojivoto"}, aggregator));
  CHECK(one.code == 0);
  const Result callers =
      Run(With({"stat", "deploy", "-n", "emojivoto", "--to", "svc/web-svc"}, aggregator));
  CHECK(callers.code == 0);

  REQUIRE(aggregator.api.stat_requests.size() == 3);
  const v1::Resource& all = aggregator.api.stat_requests[0].selector();
  CHECK(all.type() == "service");
  CHECK(all.namespace_() == "emojivoto");
  CHECK(all.name().empty());
  CHECK(aggregator.api.stat_requests[1].selector().name() == "web-svc");
  const v1::StatSummaryRequest& to = aggregator.api.stat_requests[2];
  CHECK(to.selector().type() == "deployment");
  CHECK(to.to().type() == "service");
  CHECK(to.to().namespace_() == "emojivoto");
  CHECK(to.to().name() == "web-svc");

  // A Service must be named, once.
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"stat", "deploy", "--to", "svc"},
        std::vector<std::string>{"stat", "svc/web-svc", "extra"},
        std::vector<std::string>{"stat", "svc/"}}) {
    const Result result = Run(With(bad, aggregator));
    INFO(result.err);
    CHECK(result.code == 2);
    CHECK(IsOneLine(result.err));
  }
  CHECK(aggregator.api.stat_requests.size() == 3);
}

TEST_CASE("stat with nothing to show says so on stderr", "[meshctl][stat]") {
  FakeAggregator aggregator;
  const Result result = Run(With({"stat", "sts", "-n", "emojivoto"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out.empty());
  CHECK(result.err == "No statefulsets found in namespace emojivoto.\n");
}

TEST_CASE("a window cut short by an aggregator that started within it is said on stderr",
          "[meshctl][stat]") {
  FakeAggregator aggregator;
  aggregator.api.stat_response.set_window_seconds(23);
  aggregator.api.edges_response.set_window_seconds(23);
  const std::string note =
      "note: this window holds only the last 23s: the aggregator started then (what it had "
      "before went with it), and rates are over the seconds it holds\n";
  const Result stat = Run(With({"stat", "sts", "-n", "emojivoto", "-t", "1m"}, aggregator));
  CHECK(stat.code == 0);
  CHECK(stat.err == "No statefulsets found in namespace emojivoto.\n" + note);
  const Result edges = Run(With({"edges", "deploy", "-n", "emojivoto", "-t", "1m"}, aggregator));
  CHECK(edges.code == 0);
  CHECK(edges.err.ends_with(note));
  // Asked for no more than it holds: nothing to say.
  const Result ten = Run(With({"stat", "sts", "-n", "emojivoto", "-t", "20s"}, aggregator));
  CHECK(ten.err == "No statefulsets found in namespace emojivoto.\n");
}

TEST_CASE("the aggregator's address: flag, environment, default", "[meshctl]") {
  FakeAggregator aggregator;
  SECTION("from NODEMESH_AGGREGATOR") {
    const Result result = Run({"stat", "deploy"}, {{"NODEMESH_AGGREGATOR", aggregator.address()}});
    CHECK(result.code == 0);
    CHECK(aggregator.api.calls == 1);
  }
  SECTION("the flag wins over the environment, before or after the command") {
    const Result before = Run({"--aggregator", aggregator.address(), "stat", "deploy"},
                              {{"NODEMESH_AGGREGATOR", "127.0.0.1:1"}});
    CHECK(before.code == 0);
    const Result after = Run({"stat", "deploy", "--aggregator", aggregator.address()},
                             {{"NODEMESH_AGGREGATOR", "127.0.0.1:1"}});
    CHECK(after.code == 0);
    CHECK(aggregator.api.calls == 2);
  }
}

TEST_CASE("an unreachable aggregator: one line", "[meshctl][errors]") {
  const std::string address = fmt::format("127.0.0.1:{}", ClosedPort());
  for (const std::vector<std::string>& args : {std::vector<std::string>{"stat", "deploy"},
                                               {"tap", "deploy/web"},
                                               {"check"},
                                               {"top", "deploy/web"},
                                               {"routes", "deploy/web"},
                                               {"edges", "deploy"}}) {
    INFO(fmt::format("{}", fmt::join(args, " ")));
    const Result result = Run(args, {{"NODEMESH_AGGREGATOR", address}});
    CHECK(result.code == 1);
    CHECK(result.out.empty());
    CHECK(result.err ==
          fmt::format("meshctl: cannot reach the aggregator at {} (connection refused): start "
                      "it, or point --aggregator / NODEMESH_AGGREGATOR at it\n",
                      address));
  }
}

TEST_CASE("an aggregator that accepts but never answers: bounded wait", "[meshctl][errors]") {
  // Listening, never accepting: the TCP handshake completes, the HTTP/2 one never does.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  const std::string target = fmt::format("127.0.0.1:{}", ntohs(address.sin_port));

  ClientOptions options;
  options.address = target;
  options.connect_timeout = std::chrono::milliseconds(300);
  const std::unique_ptr<GrpcApiClient> client = GrpcApiClient::Make(std::move(options)).value();
  // The call ends (no hang) with the connect timeout's message, not a refusal.
  const auto response = client->StatSummary(v1::StatSummaryRequest());
  REQUIRE_FALSE(response.ok());
  CHECK(std::string(response.status().message()) ==
        fmt::format("cannot reach the aggregator at {} (no answer within 1s): start it, or point "
                    "--aggregator / NODEMESH_AGGREGATOR at it",
                    target));
  ::close(fd);
}

TEST_CASE("a view is one call of the aggregator, its answer as given", "[meshctl]") {
  FakeAggregator aggregator;
  aggregator.api.view_response.mutable_size()->set_nodes(3);
  ClientOptions options;
  options.address = aggregator.address();
  const std::unique_ptr<GrpcApiClient> client = GrpcApiClient::Make(std::move(options)).value();
  v1::ViewRequest request;
  request.set_kind(v1::ViewRequest::WORKLOADS);
  request.add_namespaces("a");
  request.add_namespaces("b");
  request.set_window_seconds(60);
  const absl::StatusOr<v1::ViewResponse> view = client->View(request);
  REQUIRE(view.ok());
  CHECK(view->size().nodes() == 3);
  CHECK(view->window_seconds() == 60);
  CHECK(aggregator.api.calls == 1);
  REQUIRE(aggregator.api.view_requests.size() == 1);
  CHECK(aggregator.api.view_requests[0].SerializeAsString() == request.SerializeAsString());

  aggregator.api.failure = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no such view");
  const absl::Status refused = client->View(request).status();
  CHECK(absl::IsInvalidArgument(refused));
  CHECK(std::string(refused.message()).find("no such view") != std::string::npos);
}

TEST_CASE("a server that does not speak gRPC is named as such", "[meshctl][errors]") {
  // An HTTP/1 server, as on the agent's /metrics port.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  socklen_t length = sizeof address;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  std::thread server([fd] {
    for (;;) {
      const int connection = ::accept(fd, nullptr, nullptr);
      if (connection < 0) return;
      constexpr std::string_view kAnswer = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
      [[maybe_unused]] const ssize_t written = ::write(connection, kAnswer.data(), kAnswer.size());
      ::close(connection);
    }
  });
  const std::string target = fmt::format("127.0.0.1:{}", ntohs(address.sin_port));
  const Result result = Run({"stat", "deploy", "--aggregator", target});
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
  server.join();
  CHECK(result.code == 1);
  CHECK(result.err == fmt::format("meshctl: cannot reach the aggregator at {} (the server there "
                                  "does not speak gRPC): start it, or point --aggregator / "
                                  "NODEMESH_AGGREGATOR at it\n",
                                  target));
}

TEST_CASE("the aggregator's refusals are passed on, one line", "[meshctl][errors]") {
  FakeAggregator aggregator;
  aggregator.api.failure =
      grpc::Status(grpc::StatusCode::NOT_FOUND, "no deployment emojivoto/webb");
  const Result refused = Run(With({"stat", "deploy/webb", "-n", "emojivoto"}, aggregator));
  CHECK(refused.code == 2);
  CHECK(refused.err ==
        "meshctl: the aggregator refused StatSummary: no deployment emojivoto/webb\n");

  aggregator.api.failure = grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "");
  const Result old = Run(With({"edges", "deploy"}, aggregator));
  CHECK(old.code == 1);
  CHECK(old.err == fmt::format("meshctl: the aggregator at {} does not serve Edges: run an "
                               "aggregator of the same version as meshctl\n",
                               aggregator.address()));

  aggregator.api.failure = grpc::Status(grpc::StatusCode::INTERNAL, "store corrupted");
  const Result internal = Run(With({"tap", "deploy/web"}, aggregator));
  CHECK(internal.code == 1);
  CHECK(internal.err == fmt::format("meshctl: Tap failed at the aggregator {} (Internal: store "
                                    "corrupted): see its log\n",
                                    aggregator.address()));
}

TEST_CASE("argument errors: one line saying what to do, exit 2, no call", "[meshctl][errors]") {
  FakeAggregator aggregator;
  const std::map<std::vector<std::string>, std::string> cases = {
      {{"stat", "deploy", "-n", "a,,b"},
       "meshctl: -n 'a,,b' has an empty namespace: write -n NAMESPACE or a comma list, -n "
       "emojivoto,books\n"},
      {{"stat", "deploy/web", "-n", "a,b"},
       "meshctl: deploy/web names one resource: give its one namespace with -n, or drop the name "
       "to list every one of the namespaces\n"},
      {{"stat", "deploy", "-n", "a,b", "--from", "deploy/web"},
       "meshctl: --from and --to take one namespace: give -n NAMESPACE, not a list\n"},
      {{"stat", "ns", "-n", "a,b"},
       "meshctl: stat ns lists every namespace: give no -n (or stat ns/NAME for one)\n"},
      {{"routes", "deploy/web", "-n", "a,b"},
       "meshctl: routes takes one namespace, not 'a,b': give -n NAMESPACE\n"},
      {{"tap", "deploy/web", "-n", "a,b"},
       "meshctl: tap takes one namespace, not 'a,b': give -n NAMESPACE\n"},
      {{"edges", "deploy", "-A", "--failing"},
       "meshctl: the graph's filters are for chosen namespaces: give -n NAMESPACE[,NAMESPACE...] "
       "instead of -A\n"},
      {{"edges", "deploy/web", "-n", "a", "--failing"},
       "meshctl: deploy/web names one resource, and a graph is of every deploy of its namespaces: "
       "ask for its neighbours with --around deploy/web\n"},
      {{"edges", "deploy", "-n", "a", "--around", "web"},
       "meshctl: --around: unknown resource type 'web': use pod (po), deployment (deploy), "
       "statefulset (sts), daemonset (ds), namespace (ns)\n"},
      {{"edges", "deploy", "-n", "a", "--hide-namespace", ""},
       "meshctl: --hide-namespace is empty: name the namespace to hide\n"},
      {{"stat", "rs/web"},
       "meshctl: unknown resource type 'rs': use pod (po), deployment (deploy), statefulset "
       "(sts), daemonset (ds), namespace (ns)\n"},
      {{"stat", "deploy", "-t", "5s"},
       "meshctl: bad time window '5s': use 10s to 31d, written like 10s, 90s, 1m30s, 1h, 24h or "
       "7d (past 1h the aggregator asks its Prometheus-compatible store)\n"},
      {{"routes", "deploy/web", "-t", "32d"},
       "meshctl: bad time window '32d': use 10s to 31d, written like 10s, 90s, 1m30s, 1h, 24h or "
       "7d (past 1h the aggregator asks its Prometheus-compatible store)\n"},
      {{"stat"},
       "meshctl: stat needs a resource, e.g. deploy, deploy/web or ns/emojivoto: see 'meshctl "
       "stat --help'\n"},
      {{"tap"},
       "meshctl: tap needs a resource, e.g. deploy, deploy/web or ns/emojivoto: see 'meshctl tap "
       "--help'\n"},
      {{"stat", "deploy", "-o", "yaml"},
       "meshctl: unknown output format 'yaml' for stat: use -o table, -o wide or -o json\n"},
      {{"tap", "deploy/web", "-o", "table"},
       "meshctl: unknown output format 'table' for tap: use -o wide or -o json\n"},
      {{"stat", "deploy", "--from", "web"},
       "meshctl: --from: unknown resource type 'web': use pod (po), deployment (deploy), "
       "statefulset (sts), daemonset (ds), namespace (ns)\n"},
      {{"stat", "deploy", "--from", "deploy/web", "--to", "deploy/voting"},
       "meshctl: --from and --to cannot be combined: ask for the traffic from one resource, or "
       "to one\n"},
      {{"stat", "deploy", "-A", "--from", "deploy/web"},
       "meshctl: --from: with -A, say which namespace deploy/web is in with --from-namespace\n"},
      {{"tap", "deploy/web", "--path", "api"},
       "meshctl: --path 'api' must start with /: e.g. --path /api\n"},
      {{"stat", "deploy", "-A", "-n", "emojivoto"},
       "meshctl: use -n NAMESPACE or -A (every namespace), not both\n"},
      {{"edges", "deploy", "-n", "emojivoto", "-A"},
       "meshctl: use -n NAMESPACE or -A (every namespace), not both\n"},
      {{"stat", "deploy", "--bogus"},
       "meshctl: the following argument was not expected: --bogus: see 'meshctl stat --help'\n"},
      {{"tap", "deploy/web", "--max-events", "many"},
       "meshctl: could not convert: --max-events = many: see 'meshctl tap --help'\n"},
      {{},
       "meshctl: give a command: stat, tap, top, routes, edges, inject, uninject, check, version, "
       "shell, dashboard (see 'meshctl --help')\n"},
      {{"stats", "deploy"},
       "meshctl: unknown command 'stats': use stat, tap, top, routes, edges, inject, uninject, "
       "check, version, shell, dashboard (see 'meshctl --help')\n"},
  };
  for (const auto& [args, message] : cases) {
    INFO(fmt::format("meshctl {}", fmt::join(args, " ")));
    const Result result = Run(With(args, aggregator));
    CHECK(result.code == 2);
    CHECK(result.out.empty());
    CHECK(IsOneLine(result.err));
    CHECK(result.err == message);
  }
  CHECK(aggregator.api.calls == 0);

  const Result address = Run({"stat", "deploy", "--aggregator", "localhost"});
  CHECK(address.code == 2);
  CHECK(address.err ==
        "meshctl: --aggregator 'localhost' is not HOST:PORT: write e.g. 127.0.0.1:8085 or "
        "aggregator.local:8085\n");
}

TEST_CASE("help goes to stdout and exits 0", "[meshctl]") {
  const Result result = Run({"stat", "--help"});
  CHECK(result.code == 0);
  CHECK(result.out.find("Usage: meshctl stat [OPTIONS] [resource...]") != std::string::npos);
  CHECK(result.out.find("meshctl stat deploy -n emojivoto --from deploy/web") != std::string::npos);
  CHECK(result.err.empty());
}

v1::TapStreamMessage Drops(uint64_t agents, uint64_t stream) {
  v1::TapStreamMessage message;
  message.mutable_drops()->set_agent_dropped(agents);
  message.mutable_drops()->set_stream_dropped(stream);
  return message;
}

void CannedTap(FakeApi& api) {
  const auto events = ReadTextProto<v1::TapEvents>("tap_events.textproto");
  for (int i = 0; i < events.events_size(); ++i) {
    if (i == 3) api.tap_messages.push_back(Drops(2, 10));
    api.tap_messages.emplace_back().mutable_event()->CopyFrom(events.events(i));
  }
}

TEST_CASE("tap streams lines until --max-events, then cancels the stream", "[meshctl][tap]") {
  FakeAggregator aggregator;
  CannedTap(aggregator.api);
  const Result result =
      Run(With({"tap", "deploy/web", "-n", "emojivoto", "--to", "deploy/voting", "--method", "POST",
                "--path", "/emojivoto.v1.VotingService/", "--authority", "voting-svc:8080",
                "--scheme", "http", "--max-rps", "5", "--max-events", "11"},
               aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("tap.golden"));
  CHECK(result.err ==
        "tap: 12 events dropped (agents 2, stream 10): raise --max-rps or narrow the match\n");
  REQUIRE(aggregator.api.tap_requests.size() == 1);
  const v1::TapRequestSpec& spec = aggregator.api.tap_requests[0];
  CHECK(spec.target().type() == "deployment");
  CHECK(spec.target().namespace_() == "emojivoto");
  CHECK(spec.target().name() == "web");
  CHECK(spec.to().name() == "voting");
  CHECK(spec.to().namespace_() == "emojivoto");
  CHECK(spec.method() == "POST");
  CHECK(spec.path_prefix() == "/emojivoto.v1.VotingService/");
  CHECK(spec.authority() == "voting-svc:8080");
  CHECK(spec.scheme() == "http");
  CHECK(spec.max_rps() == 5);
  // The server sees the client go.
  for (int i = 0; i < 400 && !aggregator.api.tap_cancelled; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(aggregator.api.tap_cancelled);
}

TEST_CASE("tap -o json and -o wide", "[meshctl][tap]") {
  FakeAggregator aggregator;
  CannedTap(aggregator.api);
  const Result json =
      Run(With({"tap", "deploy/web", "--max-events", "11", "-o", "json"}, aggregator));
  CHECK(json.code == 0);
  CHECK(json.out == ReadTestdata("tap_json.golden"));
  const Result wide =
      Run(With({"tap", "deploy/web", "--max-events", "11", "-o", "wide"}, aggregator));
  CHECK(wide.code == 0);
  CHECK(wide.out == ReadTestdata("tap_wide.golden"));
}

TEST_CASE("Ctrl-C ends tap cleanly: exit 0, the stream cancelled", "[meshctl][tap]") {
  FakeAggregator aggregator;
  CannedTap(aggregator.api);
  CancelSource cancel;
  WatchedOutput out;
  auto run = std::async(std::launch::async, [&] {
    return Run(With({"tap", "deploy/web"}, aggregator), {}, false, &cancel, &out);
  });
  // Every canned event printed, the stream still open.
  for (int i = 0; i < 1000 && out.lines() < 11; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(out.lines() == 11);
  CHECK(cancel.Cancel());  // the command was listening
  REQUIRE(run.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  const Result result = run.get();
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("tap.golden"));
  for (int i = 0; i < 400 && !aggregator.api.tap_cancelled; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK(aggregator.api.tap_cancelled);
}

TEST_CASE("top piped: one table of the busiest routes, then exit", "[meshctl][top]") {
  FakeAggregator aggregator;
  aggregator.api.routes_response = ReadTextProto<v1::TopRoutesResponse>("routes.textproto");
  const Result result = Run(With({"top", "ns/emojivoto"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("top.golden"));
  CHECK(result.err ==
        "warning: node node-2 has not reported for 24s; its data may be missing from this "
        "window\n");
  const v1::TopRoutesRequest& request = aggregator.api.routes_requests.at(0);
  CHECK(request.selector().type() == "namespace");
  CHECK(request.selector().name() == "emojivoto");
  CHECK(request.window_seconds() == 10);
  CHECK(request.limit() == 20);
}

TEST_CASE("top on a terminal refreshes in place until Ctrl-C", "[meshctl][top]") {
  FakeAggregator aggregator;
  aggregator.api.routes_response = ReadTextProto<v1::TopRoutesResponse>("routes.textproto");
  aggregator.api.routes_response.clear_stale_nodes();
  CancelSource cancel;
  auto run = std::async(std::launch::async, [&] {
    return Run(
        With({"top", "deploy/voting", "-n", "emojivoto", "-t", "30s", "--limit", "5"}, aggregator),
        {}, true, &cancel);
  });
  for (int i = 0; i < 1000 && aggregator.api.calls < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  REQUIRE(aggregator.api.calls >= 2);
  cancel.Cancel();
  REQUIRE(run.wait_for(std::chrono::seconds(5)) == std::future_status::ready);
  const Result result = run.get();
  CHECK(result.code == 0);
  const std::string frame = RenderTop(aggregator.api.routes_response,
                                      "Busiest routes of deploy/voting in namespace emojivoto "
                                      "over the last 30s (every 2s; Ctrl-C to quit)",
                                      true);
  CHECK(result.out == frame + frame);
  CHECK(aggregator.api.routes_requests.at(0).limit() == 5);
}

TEST_CASE("routes by route, with --from", "[meshctl][routes]") {
  FakeAggregator aggregator;
  aggregator.api.routes_response = ReadTextProto<v1::TopRoutesResponse>("routes.textproto");
  const Result result =
      Run(With({"routes", "deploy/voting", "-n", "emojivoto", "--from", "deploy/web"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("routes_table.golden"));
  const v1::TopRoutesRequest& request = aggregator.api.routes_requests.at(0);
  CHECK(request.selector().name() == "voting");
  CHECK(request.from().name() == "web");
  CHECK(request.from().namespace_() == "emojivoto");
  CHECK(request.window_seconds() == 60);
  CHECK(request.limit() == 0);
}

TEST_CASE("edges -A -o json", "[meshctl][edges]") {
  FakeAggregator aggregator;
  aggregator.api.edges_response = ReadTextProto<v1::EdgesResponse>("edges.textproto");
  const Result result = Run(With({"edges", "deploy", "-A", "-o", "json"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("edges_json.golden"));
  const v1::EdgesRequest& request = aggregator.api.edges_requests.at(0);
  CHECK(request.selector().type() == "deployment");
  CHECK(request.selector().namespace_().empty());
}

TEST_CASE("Services in edges, routes, top and tap --to", "[meshctl][edges][routes][tap]") {
  FakeAggregator aggregator;
  aggregator.api.edges_response = ReadTextProto<v1::EdgesResponse>("edges_services.textproto");
  aggregator.api.routes_response =
      ReadTextProto<v1::TopRoutesResponse>("routes_services.textproto");
  CannedTap(aggregator.api);

  const Result edges = Run(With({"edges", "svc", "-n", "emojivoto"}, aggregator));
  CHECK(edges.code == 0);
  testing::CheckGolden("edges_services.golden", edges.out);
  const v1::EdgesRequest& edges_request = aggregator.api.edges_requests.at(0);
  CHECK(edges_request.selector().type() == "service");
  CHECK(edges_request.selector().namespace_() == "emojivoto");
  CHECK(edges_request.selector().name().empty());

  const Result routes = Run(With({"routes", "svc/voting-svc", "-n", "emojivoto"}, aggregator));
  CHECK(routes.code == 0);
  testing::CheckGolden("routes_services.golden", routes.out);
  const Result top = Run(With({"top", "service", "voting-svc", "-n", "emojivoto"}, aggregator));
  CHECK(top.code == 0);
  CHECK(top.out.find("service/voting-svc") != std::string::npos);
  REQUIRE(aggregator.api.routes_requests.size() == 2);
  for (const v1::TopRoutesRequest& request : aggregator.api.routes_requests) {
    CHECK(request.selector().type() == "service");
    CHECK(request.selector().namespace_() == "emojivoto");
    CHECK(request.selector().name() == "voting-svc");
  }
  aggregator.api.routes_response.clear_routes();
  const Result none = Run(With({"routes", "svc/idle-svc", "-n", "emojivoto"}, aggregator));
  CHECK(none.err ==
        "No routes with traffic to svc/idle-svc in namespace emojivoto in the last 1m.\n");

  const Result tap = Run(
      With({"tap", "deploy/web", "-n", "emojivoto", "--to", "svc/voting-svc", "--max-events", "11"},
           aggregator));
  CHECK(tap.code == 0);
  const v1::TapRequestSpec& spec = aggregator.api.tap_requests.at(0);
  CHECK(spec.target().type() == "deployment");
  CHECK(spec.to().type() == "service");
  CHECK(spec.to().namespace_() == "emojivoto");
  CHECK(spec.to().name() == "voting-svc");
  // A Service makes no requests itself: its callers are tapped with --to.
  const Result target = Run(With({"tap", "svc/voting-svc", "-n", "emojivoto"}, aggregator));
  CHECK(target.code == 2);
  CHECK(target.err ==
        "meshctl: a Service makes no requests and serves none itself: tap its callers' requests "
        "to it with --to, e.g. meshctl tap deploy/web -n emojivoto --to svc/voting-svc\n");
  CHECK(aggregator.api.tap_requests.size() == 1);
}

std::vector<std::string> Strings(const google::protobuf::RepeatedPtrField<std::string>& strings) {
  return std::vector<std::string>(strings.begin(), strings.end());
}

// A View whose part is `part` (its stale nodes and window said once, by the view).
template <typename Part>
v1::ViewResponse ViewWith(Part part, Part* (v1::ViewResponse::*mutable_part)()) {
  v1::ViewResponse view;
  *view.mutable_stale_nodes() = part.stale_nodes();
  view.set_window_seconds(part.window_seconds());
  part.clear_stale_nodes();
  part.clear_window_seconds();
  *(view.*mutable_part)() = std::move(part);
  return view;
}

TEST_CASE("stat -n a,b asks one View of the namespaces and prints it as stat -A",
          "[meshctl][stat]") {
  FakeAggregator aggregator;
  aggregator.api.view_response =
      ViewWith(ReadTextProto<v1::StatSummaryResponse>("stat_all_namespaces.textproto"),
               &v1::ViewResponse::mutable_stats);
  const Result result =
      Run(With({"stat", "deploy", "-n", "emojivoto,books,emojivoto", "-o", "wide"}, aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("stat_all_namespaces_wide.golden"));
  CHECK(result.err == ReadTestdata("stale_warnings.golden"));
  CHECK(aggregator.api.stat_requests.empty());
  REQUIRE(aggregator.api.view_requests.size() == 1);
  const v1::ViewRequest& request = aggregator.api.view_requests[0];
  CHECK(request.kind() == v1::ViewRequest::WORKLOADS);
  CHECK(Strings(request.namespaces()) == std::vector<std::string>{"emojivoto", "books"});
  CHECK(request.type() == "deployment");
  CHECK(request.window_seconds() == 60);

  // Services too; nothing found says where it looked.
  aggregator.api.view_response.Clear();
  const Result none = Run(With({"stat", "svc", "-n", "a,b", "-t", "5m"}, aggregator));
  CHECK(none.code == 0);
  CHECK(none.err == "No services found in namespaces a, b.\n");
  CHECK(aggregator.api.view_requests.at(1).type() == "service");
  // One namespace is StatSummary, as before.
  CHECK(Run(With({"stat", "deploy", "-n", "a"}, aggregator)).code == 0);
  CHECK(aggregator.api.stat_requests.size() == 1);
  CHECK(aggregator.api.view_requests.size() == 2);
}

TEST_CASE("edges with several namespaces or a filter ask one View of the graph",
          "[meshctl][edges]") {
  FakeAggregator aggregator;
  aggregator.api.view_response = ViewWith(ReadTextProto<v1::EdgesResponse>("edges.textproto"),
                                          &v1::ViewResponse::mutable_edges);
  const Result result =
      Run(With({"edges", "deploy", "-n", "emojivoto,monitoring", "--failing", "--around",
                "deploy/web", "--hide-namespace", "kube-system", "--hide-namespace", "linkerd",
                "--hide-external", "--all", "-t", "5m", "-o", "json"},
               aggregator));
  CHECK(result.code == 0);
  CHECK(result.out == ReadTestdata("edges_json.golden"));  // as the Edges answer prints
  CHECK(aggregator.api.edges_requests.empty());
  REQUIRE(aggregator.api.view_requests.size() == 1);
  const v1::ViewRequest& request = aggregator.api.view_requests[0];
  CHECK(request.kind() == v1::ViewRequest::GRAPH);
  CHECK(Strings(request.namespaces()) == std::vector<std::string>{"emojivoto", "monitoring"});
  CHECK(request.type() == "deployment");
  CHECK(request.window_seconds() == 300);
  const v1::GraphFilter& filter = request.filter();
  CHECK(filter.only_failing());
  CHECK(filter.around().type() == "deployment");
  CHECK(filter.around().namespace_() == "emojivoto");
  CHECK(filter.around().name() == "web");
  CHECK(Strings(filter.hide_namespaces()) == std::vector<std::string>{"kube-system", "linkerd"});
  CHECK(filter.hide_external());
  CHECK(filter.draw_anyway());

  // One filter alone, in one namespace, is a View too; --around takes a Service.
  const Result around =
      Run(With({"edges", "svc", "-n", "emojivoto", "--around", "svc/web-svc"}, aggregator));
  CHECK(around.code == 0);
  const v1::ViewRequest& second = aggregator.api.view_requests.at(1);
  CHECK(second.type() == "service");
  CHECK(second.filter().around().type() == "service");
  CHECK(second.filter().around().name() == "web-svc");
  CHECK_FALSE(second.filter().only_failing());
  CHECK_FALSE(second.filter().draw_anyway());

  // --around in another of the chosen namespaces names it with --around-namespace.
  const Result elsewhere = Run(With({"edges", "deploy", "-n", "emojivoto,books", "--around",
                                     "deploy/authors", "--around-namespace", "books"},
                                    aggregator));
  CHECK(elsewhere.code == 0);
  CHECK(aggregator.api.view_requests.at(2).filter().around().namespace_() == "books");

  // Withheld: no edges, the size under each filter on stderr.
  aggregator.api.view_response.Clear();
  v1::GraphSize& size = *aggregator.api.view_response.mutable_size();
  size.set_withheld(true);
  size.set_nodes(412);
  size.set_edges(2310);
  size.set_failing_edges(37);
  (*size.mutable_nodes_by_namespace())["kube-system"] = 120;
  (*size.mutable_nodes_by_namespace())["emojivoto"] = 292;
  const Result withheld = Run(With({"edges", "deploy", "-n", "emojivoto,kube-system"}, aggregator));
  CHECK(withheld.code == 0);
  CHECK(withheld.out.empty());
  testing::CheckGolden("edges_withheld.golden", withheld.err);
}

TEST_CASE("check: exit 0 when all is well, 1 with the problems", "[meshctl][check]") {
  FakeAggregator aggregator;
  aggregator.api.pods_response = ReadTextProto<v1::ListPodsResponse>("pods_healthy.textproto");
  const Result healthy = Run(With({"check"}, aggregator));
  CHECK(healthy.code == 0);
  CHECK(healthy.out == RenderCheck(aggregator.address(), aggregator.api.pods_response, kNow).text);
  CHECK(healthy.err.empty());

  aggregator.api.pods_response = ReadTextProto<v1::ListPodsResponse>("pods_problems.textproto");
  const Result problems = Run(With({"check"}, aggregator));
  CHECK(problems.code == 1);
  CHECK(problems.err == "meshctl: check found 4 problems (marked ×)\n");
}

TEST_CASE("inject and uninject through the command line", "[meshctl][inject]") {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / fmt::format("meshctl-cli-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string node1 = (dir / "node-1.json").string(), node2 = (dir / "node-2.json").string();
  const std::string inventory =
      R"({"pods":[{"namespace":"emojivoto","name":"web-1","owner":{"kind":"Deployment","name":"web"},"ips":["10.77.0.11"],"cgroup":"/web-1","netns":"/run/netns/web-1","meshed":false}]})";
  std::ofstream(node1) << inventory;
  std::ofstream(node2) << inventory;

  const Result injected = Run({"inject", "deploy/web", "-n", "emojivoto"},
                              {{"NODEMESH_INVENTORY", node1 + ":" + node2}});
  CHECK(injected.code == 0);
  CHECK(injected.out == "pod emojivoto/web-1 meshed\n");

  const Result again =
      Run({"inject", "deploy/web", "-n", "emojivoto", "--inventory", node1, "--inventory", node2});
  CHECK(again.code == 0);
  CHECK(again.out == "pod emojivoto/web-1 already meshed (no change)\n");

  const Result unmeshed = Run({"uninject", "--inventory", node1, "pod/web-1", "-n", "emojivoto"});
  CHECK(unmeshed.code == 0);
  CHECK(unmeshed.out == "pod emojivoto/web-1 unmeshed\n");

  const Result missing = Run({"inject", "deploy/web"}, {{"NODEMESH_INVENTORY", node1}});
  CHECK(missing.code == 1);
  CHECK(missing.err == fmt::format("meshctl: namespace default has no pods in {}: use -n with "
                                   "one of emojivoto\n",
                                   node1));
  std::filesystem::remove_all(dir);
}

TEST_CASE("version, as a command and as --version", "[meshctl]") {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"version"}, std::vector<std::string>{"--version"}}) {
    const Result result = Run(args);
    CHECK(result.code == 0);
    CHECK(result.out == fmt::format("meshctl version {}\n", kVersion));
  }
}

}  // namespace
}  // namespace nodemesh::cli
