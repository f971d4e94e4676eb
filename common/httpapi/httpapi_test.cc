// nodemesh.io/v1alpha1's vocabulary: paths and parameters read into the gRPC API's request
// messages and written back, the permissions each call needs, answers and errors as JSON,
// and discovery.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "common/httpapi/discovery.h"
#include "common/httpapi/json.h"
#include "common/httpapi/paths.h"
#include "common/httpapi/permissions.h"

namespace nodemesh::httpapi {
namespace {

// `target` (path and query under kApiPath) parsed.
absl::StatusOr<ApiRequest> Parse(const std::string& target) {
  const std::string full = std::string(kApiPath) + target;
  const size_t question = full.find('?');
  return ParseApiRequest(std::string_view(full).substr(0, question),
                         question == std::string::npos
                             ? std::string_view()
                             : std::string_view(full).substr(question + 1));
}

// The message `target` reads as, which must be a T.
template <typename T>
T Parsed(const std::string& target) {
  const absl::StatusOr<ApiRequest> request = Parse(target);
  INFO(target << ": " << request.status().ToString());
  REQUIRE(request.ok());
  REQUIRE(std::holds_alternative<T>(*request));
  return std::get<T>(*request);
}

std::string ErrorOf(const std::string& target) {
  const absl::StatusOr<ApiRequest> request = Parse(target);
  REQUIRE_FALSE(request.ok());
  return std::string(request.status().message());
}

absl::StatusCode CodeOf(const std::string& target) { return Parse(target).status().code(); }

v1::Resource Resource(const std::string& type, const std::string& namespace_name,
                      const std::string& name) {
  v1::Resource resource;
  resource.set_type(type);
  resource.set_namespace_(namespace_name);
  resource.set_name(name);
  return resource;
}

bool Same(const google::protobuf::Message& a, const google::protobuf::Message& b) {
  return a.SerializeAsString() == b.SerializeAsString();
}

TEST_CASE("stats, edges and routes take their selector from the path and the rest from the query") {
  const auto stat = Parsed<v1::StatSummaryRequest>(
      "/namespaces/emojivoto/stats/deployment?windowSeconds=60&selector.name=web");
  CHECK(Same(stat.selector(), Resource("deployment", "emojivoto", "web")));
  CHECK(stat.window_seconds() == 60);
  CHECK_FALSE(stat.has_from());
  CHECK_FALSE(stat.has_to());

  // Proto spellings too; no /namespaces/: every namespace.
  const auto edges = Parsed<v1::EdgesRequest>("/edges/pod?window_seconds=30");
  CHECK(Same(edges.selector(), Resource("pod", "", "")));
  CHECK(edges.window_seconds() == 30);

  const auto routes = Parsed<v1::TopRoutesRequest>(
      "/namespaces/emojivoto/routes/deployment?selector.name=voting&limit=20&from.type=deploy"
      "&from.name=web");
  CHECK(Same(routes.selector(), Resource("deployment", "emojivoto", "voting")));
  CHECK(routes.limit() == 20);
  // A peer without a namespace is in the path's.
  CHECK(Same(routes.from(), Resource("deploy", "emojivoto", "web")));
}

TEST_CASE("a from or to peer keeps the namespace it names, and a namespace is in itself") {
  const auto stat = Parsed<v1::StatSummaryRequest>(
      "/namespaces/a/stats/deployment?to.type=deployment&to.name=db&to.namespace=b"
      "&from.type=namespace&from.name=c");
  CHECK(Same(stat.to(), Resource("deployment", "b", "db")));
  CHECK(Same(stat.from(), Resource("namespace", "c", "c")));
  CHECK(ErrorOf("/namespaces/a/stats/pod?from.type=ns&from.name=c&from.namespace=d")
            .starts_with("from is namespace 'c', which is not in namespace 'd'"));
}

TEST_CASE("a namespace's own stats are under its path, never wider than it") {
  // Under /namespaces/NS a namespace selector is NS, whether it names it or not.
  CHECK(Same(Parsed<v1::StatSummaryRequest>("/namespaces/emojivoto/stats/namespace").selector(),
             Resource("namespace", "emojivoto", "emojivoto")));
  CHECK(Same(Parsed<v1::StatSummaryRequest>(
                 "/namespaces/emojivoto/stats/namespace?selector.name=emojivoto")
                 .selector(),
             Resource("namespace", "emojivoto", "emojivoto")));
  CHECK(ErrorOf("/namespaces/emojivoto/stats/ns?selector.name=other")
            .starts_with("selector.name 'other' is a namespace other than the path's"));
  // Every namespace: cluster scope.
  CHECK(Same(Parsed<v1::StatSummaryRequest>("/stats/namespace").selector(),
             Resource("namespace", "", "")));
}

TEST_CASE("inventory/pods and node admin requests") {
  CHECK(Parsed<v1::ListPodsRequest>("/namespaces/emojivoto/inventory/pods").namespace_() ==
        "emojivoto");
  CHECK(Parsed<v1::ListPodsRequest>("/inventory/pods").namespace_().empty());

  const auto admin = Parsed<v1::NodeAdminRequest>("/nodes/node-1/admin/pods");
  CHECK(admin.node() == "node-1");
  CHECK(admin.target() == "/pods");
  // The rest of the path and the query go to the agent as they came.
  const auto tap = Parsed<v1::NodeAdminRequest>(
      "/nodes/node%2D1/admin/tap?session=a1&pod=ns%2Fweb&unknown=kept");
  CHECK(tap.node() == "node-1");
  CHECK(tap.target() == "/tap?session=a1&pod=ns%2Fweb&unknown=kept");
  CHECK(Parsed<v1::NodeAdminRequest>("/nodes/n/admin").target() == "/");
}

TEST_CASE("a tap is a watch, with its target's namespace from the path") {
  const auto tap = Parsed<v1::TapRequestSpec>(
      "/namespaces/emojivoto/taps?watch=true&target.type=deployment&target.name=web"
      "&to.type=deployment&to.name=voting&maxEvents=20&maxRps=2.5&method=GET"
      "&pathPrefix=%2Fapi%2F");
  CHECK(Same(tap.target(), Resource("deployment", "emojivoto", "web")));
  CHECK(Same(tap.to(), Resource("deployment", "emojivoto", "voting")));
  CHECK(tap.max_events() == 20);
  CHECK(tap.max_rps() == 2.5);
  CHECK(tap.method() == "GET");
  CHECK(tap.path_prefix() == "/api/");

  CHECK_FALSE(Parsed<v1::TapRequestSpec>("/taps?watch=1").has_to());
  CHECK(ErrorOf("/namespaces/emojivoto/taps?target.type=pod").starts_with("a tap is a watch"));
  CHECK(ErrorOf("/taps?watch=false").starts_with("parameter watch='false'"));
  CHECK(ErrorOf("/stats/pod?watch=true").starts_with("parameter watch is for taps only"));
}

TEST_CASE("a bad parameter is named, with the parameters the call takes") {
  const std::string unknown = ErrorOf("/namespaces/a/stats/pod?window=60");
  CHECK(unknown ==
        "unknown parameter 'window' for stats: it takes selector.name, from.type, "
        "from.namespace, from.name, to.type, to.namespace, to.name, windowSeconds, source");
  CHECK(ErrorOf("/taps?watch=true&resourceVersion=1")
            .starts_with("unknown parameter 'resourceVersion' for taps: it takes watch, "
                         "target.type, target.name, to.type"));
  CHECK(ErrorOf("/stats/pod?selector=x").starts_with("unknown parameter 'selector'"));
  CHECK(ErrorOf("/stats/pod?windowSeconds=sixty") ==
        "parameter windowSeconds: 'sixty' is not a whole number");
  CHECK(ErrorOf("/routes/pod?limit=-1") ==
        "parameter limit: '-1' is not a whole number of 0 or more");
  CHECK(ErrorOf("/stats/pod?windowSeconds=60&window_seconds=30") ==
        "parameter windowSeconds is given twice, as '60' and as '30': give it once");
  CHECK(Parsed<v1::StatSummaryRequest>("/stats/pod?windowSeconds=60&window_seconds=60")
            .window_seconds() == 60);
  // The path's fields may be repeated, not changed.
  CHECK(ErrorOf("/namespaces/a/stats/pod?selector.namespace=b")
            .starts_with("parameter selector.namespace='b' is at odds with the path"));
  CHECK(Parsed<v1::StatSummaryRequest>("/namespaces/a/stats/pod?selector.namespace=a")
            .selector()
            .namespace_() == "a");
  CHECK(CodeOf("/namespaces/a/stats/pod?x=1") == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("a view's kind is its path's, its first namespace the path's, the others parameters") {
  const auto graph = Parsed<v1::ViewRequest>(
      "/namespaces/emojivoto/views/graph?namespaces=books&windowSeconds=60&filter.onlyFailing="
      "true&filter.around.name=web&filter.hideNamespaces=kube-system&filter.hideNamespaces=x");
  CHECK(graph.kind() == v1::ViewRequest::GRAPH);
  CHECK(std::vector<std::string>(graph.namespaces().begin(), graph.namespaces().end()) ==
        std::vector<std::string>{"emojivoto", "books"});
  CHECK(graph.window_seconds() == 60);
  CHECK(graph.filter().only_failing());
  // around without a namespace is in the path's, as a from is.
  CHECK(Same(graph.filter().around(), Resource("", "emojivoto", "web")));
  CHECK(graph.filter().hide_namespaces_size() == 2);
  CHECK(Parsed<v1::ViewRequest>("/views/namespaces").kind() == v1::ViewRequest::NAMESPACES);
  CHECK(Parsed<v1::ViewRequest>("/namespaces/a/views/workloads").kind() ==
        v1::ViewRequest::WORKLOADS);
  const auto workload =
      Parsed<v1::ViewRequest>("/namespaces/a/views/workload?resource.type=deploy&resource.name=w");
  CHECK(workload.kind() == v1::ViewRequest::WORKLOAD);
  CHECK(workload.namespaces_size() == 1);
  CHECK(ViewKindName(v1::ViewRequest::WORKLOADS) == "workloads");

  // The namespaces view is of every namespace; a kind is a word of the path, not a parameter.
  CHECK(ErrorOf("/namespaces/a/views/namespaces").find("without /namespaces/NS") !=
        std::string::npos);
  CHECK(ErrorOf("/namespaces/a/views/graph?kind=WORKLOAD").find("at odds with the path") !=
        std::string::npos);
  CHECK(ErrorOf("/namespaces/a/views/graph?filter.colour=red").find("filter.onlyFailing") !=
        std::string::npos);
  for (const char* path : {"/views", "/views/GRAPH", "/views/kind_unspecified",
                           "/namespaces/a/views/graph/x", "/views/"}) {
    INFO(path);
    CHECK(CodeOf(path) == absl::StatusCode::kNotFound);
  }
}

TEST_CASE("a path that is no call is NOT_FOUND, listing the calls") {
  for (const char* path :
       {"/stats", "/stats/pod/extra", "/namespaces/a", "/namespaces//stats/pod", "/inventory/nodes",
        "/taps/x", "/nodes//admin/pods", "/things/pod", ""}) {
    INFO(path);
    CHECK(CodeOf(path) == absl::StatusCode::kNotFound);
  }
  CHECK(ErrorOf("/things/pod").find("the calls are [/namespaces/NS]/stats/TYPE") !=
        std::string::npos);
  CHECK(ParseApiRequest("/apis/nodemesh.io/v1alpha10/stats/pod", "").status().code() ==
        absl::StatusCode::kNotFound);
}

TEST_CASE("a request written as a path and query reads back as itself") {
  for (const char* target :
       {"/namespaces/emojivoto/stats/deployment?selector.name=web&from.type=deployment&"
        "from.namespace=other&from.name=x%20y&to.type=service&to.namespace=emojivoto&"
        "to.name=web-svc&windowSeconds=60",
        "/stats/namespace", "/namespaces/a/stats/namespace?selector.name=a",
        "/edges/pod?windowSeconds=10",
        "/namespaces/a/routes/deployment?selector.name=v&from.type=pod&from.namespace=a&"
        "from.name=p&windowSeconds=60&limit=5",
        "/namespaces/a/inventory/pods", "/inventory/pods",
        "/namespaces/a/taps?watch=true&target.type=deployment&target.name=web&to.type=pod&"
        "to.namespace=b&to.name=x&method=GET&pathPrefix=%2Fapi&authority=a.b&scheme=https&"
        "maxRps=0.25&maxEvents=3",
        "/nodes/node-1/admin/tap?session=a1&pod=ns%2Fweb", "/views/namespaces?windowSeconds=60",
        "/namespaces/a/views/graph?namespaces=b&namespaces=c&type=deployment&filter.onlyFailing="
        "true&filter.around.type=deployment&filter.around.namespace=b&filter.around.name=web&"
        "filter.hideNamespaces=kube-system&filter.drawAnyway=true",
        "/namespaces/a/views/workload?resource.type=deployment&resource.name=web"}) {
    INFO(target);
    const absl::StatusOr<ApiRequest> first = Parse(target);
    REQUIRE(first.ok());
    const std::string written = ApiRequestTarget(*first);
    CHECK(written == std::string(kApiPath) + target);
    const absl::StatusOr<ApiRequest> again =
        ParseApiRequest(written.substr(0, written.find('?')),
                        written.find('?') == std::string::npos
                            ? ""
                            : std::string_view(written).substr(written.find('?') + 1));
    REQUIRE(again.ok());
    CHECK(again->index() == first->index());
    std::visit(
        [&](const auto& message) {
          using T = std::decay_t<decltype(message)>;
          CHECK(Same(message, std::get<T>(*again)));
        },
        *first);
  }
}

std::vector<std::string> Described(const std::string& target) {
  const absl::StatusOr<ApiRequest> request = Parse(target);
  REQUIRE(request.ok());
  std::vector<std::string> out;
  for (const Permission& permission : PermissionsFor(*request)) {
    out.push_back(permission.ResourceAttributes().dump());
  }
  return out;
}

TEST_CASE("each call needs its permission in every namespace it involves") {
  CHECK(
      Described("/namespaces/a/stats/deployment?selector.name=web") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","name":"deployment","namespace":"a","resource":"stats","verb":"get","version":"v1alpha1"})"});
  // from and to in other namespaces: one check each, the path's first.
  CHECK(
      Described("/namespaces/a/stats/pod?from.type=pod&from.namespace=b&to.type=pod&"
                "to.namespace=c&to.name=x") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","name":"pod","namespace":"a","resource":"stats","verb":"get","version":"v1alpha1"})",
          R"({"group":"nodemesh.io","name":"pod","namespace":"b","resource":"stats","verb":"get","version":"v1alpha1"})",
          R"({"group":"nodemesh.io","name":"pod","namespace":"c","resource":"stats","verb":"get","version":"v1alpha1"})"});
  // A peer in the path's namespace needs nothing more.
  CHECK(Described("/namespaces/a/stats/pod?to.type=pod&to.name=x").size() == 1);
  CHECK(
      Described("/edges/deployment") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","name":"deployment","resource":"edges","verb":"get","version":"v1alpha1"})"});
  CHECK(
      Described("/namespaces/a/routes/deployment?from.type=ns&from.name=b") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","name":"deployment","namespace":"a","resource":"routes","verb":"get","version":"v1alpha1"})",
          R"({"group":"nodemesh.io","name":"deployment","namespace":"b","resource":"routes","verb":"get","version":"v1alpha1"})"});
  CHECK(
      Described("/namespaces/a/inventory/pods") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","name":"pods","namespace":"a","resource":"inventory","verb":"get","version":"v1alpha1"})"});
  CHECK(
      Described("/namespaces/a/taps?watch=true&target.type=deployment&target.name=web&"
                "to.type=deployment&to.namespace=b&to.name=db") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","namespace":"a","resource":"taps","verb":"watch","version":"v1alpha1"})",
          R"({"group":"nodemesh.io","namespace":"b","resource":"taps","verb":"watch","version":"v1alpha1"})"});
  // A tap to a namespace is in that namespace; to every namespace, cluster scope.
  CHECK(Described("/namespaces/a/taps?watch=true&target.type=pod&to.type=namespace&to.name=c")
            .back()
            .find(R"("namespace":"c")") != std::string::npos);
  CHECK(Described("/namespaces/a/taps?watch=true&target.type=pod&to.type=namespace")
            .back()
            .find(R"("namespace")") == std::string::npos);
  CHECK(
      Described("/nodes/node-1/admin/pods") ==
      std::vector<std::string>{
          R"({"group":"nodemesh.io","name":"node-1","resource":"nodes","subresource":"admin","verb":"get","version":"v1alpha1"})"});
}

TEST_CASE("a view needs get views in its path's namespace, then in every other it reads") {
  // The namespaces of the permissions a view needs, each once, the path's first.
  const auto namespaces = [](const std::string& target) {
    std::vector<std::string> out;
    for (const Permission& permission : PermissionsFor(*Parse(target))) {
      CHECK(permission.ResourceAttributes()["resource"] == "views");
      CHECK(permission.verb == "get");
      out.push_back(permission.namespace_name + ":" + permission.name);
    }
    return out;
  };
  CHECK(namespaces("/namespaces/a/views/graph?namespaces=b&namespaces=a&"
                   "filter.around.namespace=c&filter.around.name=web") ==
        std::vector<std::string>{"a:graph", "b:graph", "c:graph"});
  // around in a namespace of the view needs nothing more.
  CHECK(namespaces("/namespaces/a/views/graph?namespaces=b&filter.around.name=web") ==
        std::vector<std::string>{"a:graph", "b:graph"});
  CHECK(namespaces("/views/namespaces") == std::vector<std::string>{":namespaces"});
  CHECK(namespaces("/namespaces/a/views/workload?resource.type=pod&resource.name=x") ==
        std::vector<std::string>{"a:workload"});
  CHECK(Permission{"get", "views", "", "a", "graph"}.ClusterRole() == "nodemesh-read");
}

TEST_CASE(
    "a permission says what it is, which role grants it, and its refusal as Kubernetes does") {
  const Permission tap{"watch", "taps", "", "b", ""};
  CHECK(tap.Describe() == "'watch taps' (API group nodemesh.io) in namespace b");
  CHECK(tap.ClusterRole() == "nodemesh-tap");
  CHECK(std::string(Forbidden(tap, "alice").message()) ==
        "taps.nodemesh.io is forbidden: User \"alice\" cannot watch resource \"taps\" in API "
        "group \"nodemesh.io\" in the namespace \"b\"");

  const Permission admin{"get", "nodes", "admin", "", "node-1"};
  CHECK(admin.Describe() == "'get nodes/admin' (API group nodemesh.io) at cluster scope");
  CHECK(admin.ClusterRole() == "nodemesh-node-admin");
  const absl::Status refused = Forbidden(admin, "bob", "no RBAC policy matched");
  CHECK(refused.code() == absl::StatusCode::kPermissionDenied);
  CHECK(std::string(refused.message()) ==
        "nodes.nodemesh.io \"node-1\" is forbidden: User \"bob\" cannot get resource "
        "\"nodes/admin\" in API group \"nodemesh.io\" at the cluster scope: no RBAC policy "
        "matched");
  CHECK(Permission{"get", "stats", "", "a", "pod"}.ClusterRole() == "nodemesh-read");
}

TEST_CASE("answers are protobuf's JSON mapping with every field, one line each") {
  v1::StatSummaryResponse response;
  v1::StatRow* row = response.add_rows();
  *row->mutable_resource() = Resource("deployment", "emojivoto", "web");
  row->set_requests(12345678901234);
  response.set_window_seconds(60);
  const std::string json = MessageJson(response);
  CHECK(json.ends_with("}\n"));
  CHECK(json.find('\n') == json.size() - 1);
  const nlohmann::json read = nlohmann::json::parse(json);
  CHECK(read["windowSeconds"] == "60");  // 64-bit integers as strings
  CHECK(read["rows"][0]["requests"] == "12345678901234");
  CHECK(read["rows"][0]["successRate"] == 0);  // zeros present
  CHECK(read["staleNodes"] == nlohmann::json::array());

  v1::StatSummaryResponse back;
  REQUIRE(ParseMessageJson(R"({"windowSeconds":"60","rows":[{"requests":"7"}],"future":1})", &back)
              .ok());
  CHECK(back.window_seconds() == 60);
  CHECK(back.rows(0).requests() == 7);
  const absl::Status bad = ParseMessageJson("[", &back);
  CHECK(bad.code() == absl::StatusCode::kInvalidArgument);
  CHECK(std::string(bad.message()).starts_with("not a StatSummaryResponse in JSON: "));

  v1::TapStreamMessage event;
  event.mutable_event()->set_request_id("n:1:1");
  CHECK(MessageJson(event).starts_with(R"({"event":{"subscription":"0","requestId":"n:1:1")"));
  CHECK(MessageJson(v1::TapStreamMessage()) == "{}\n");
}

TEST_CASE("errors are Kubernetes Status objects with the HTTP status their code takes") {
  const struct {
    absl::Status status;
    int http;
    const char* reason;
  } cases[] = {
      {absl::InvalidArgumentError("x"), 400, "BadRequest"},
      {absl::FailedPreconditionError("x"), 400, "BadRequest"},
      {absl::OutOfRangeError("x"), 400, "BadRequest"},
      {absl::UnauthenticatedError("x"), 401, "Unauthorized"},
      {absl::PermissionDeniedError("x"), 403, "Forbidden"},
      {absl::NotFoundError("x"), 404, "NotFound"},
      {absl::ResourceExhaustedError("x"), 429, "TooManyRequests"},
      {absl::UnavailableError("x"), 503, "ServiceUnavailable"},
      {absl::DeadlineExceededError("x"), 504, "Timeout"},
      {absl::InternalError("x"), 500, "InternalError"},
  };
  for (const auto& c : cases) {
    const ErrorAnswer answer = ErrorAnswerFor(c.status);
    INFO(c.status.ToString());
    CHECK(answer.http_status == c.http);
    CHECK(answer.retry_after == (c.http == 503));
    const nlohmann::json body = nlohmann::json::parse(answer.body);
    CHECK(body["kind"] == "Status");
    CHECK(body["apiVersion"] == "v1");
    CHECK(body["status"] == "Failure");
    CHECK(body["reason"] == c.reason);
    CHECK(body["code"] == c.http);
    CHECK(body["message"] == "x");
  }
  const Permission tap{"watch", "taps", "", "b", ""};
  const ErrorAnswer denied = ErrorAnswerFor(Forbidden(tap, "alice"), &tap);
  CHECK(nlohmann::json::parse(denied.body)["details"] ==
        nlohmann::json{{"group", "nodemesh.io"}, {"kind", "taps"}});
}

TEST_CASE("discovery: /apis is 406, the group and its resources as Kubernetes lists them") {
  const ErrorAnswer apis = ApisAnswer();
  CHECK(apis.http_status == 406);
  CHECK(nlohmann::json::parse(apis.body)["reason"] == "NotAcceptable");

  const nlohmann::json list = nlohmann::json::parse(ResourceListJson());
  CHECK(list["kind"] == "APIResourceList");
  CHECK(list["groupVersion"] == "nodemesh.io/v1alpha1");
  std::vector<std::string> resources;
  for (const nlohmann::json& resource : list["resources"]) {
    resources.push_back(std::string(resource["name"]) + " " +
                        resource["verbs"][0].get<std::string>() +
                        (resource["namespaced"] ? " namespaced" : " cluster"));
  }
  CHECK(resources == std::vector<std::string>{"stats get namespaced", "edges get namespaced",
                                              "routes get namespaced", "inventory get namespaced",
                                              "taps watch namespaced", "views get namespaced",
                                              "nodes/admin get cluster"});
  const nlohmann::json group = nlohmann::json::parse(GroupJson());
  CHECK(group["kind"] == "APIGroup");
  CHECK(group["name"] == "nodemesh.io");
  CHECK(group["preferredVersion"]["groupVersion"] == "nodemesh.io/v1alpha1");
}

}  // namespace
}  // namespace nodemesh::httpapi
