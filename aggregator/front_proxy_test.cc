// The front proxy's settings as the API server publishes them, and the user of a request as
// Kubernetes reads it from the front proxy's headers; nothing is read from anyone else.
#include "aggregator/front_proxy.h"

#include <catch2/catch.hpp>

namespace nodemesh::aggregator {
namespace {

using nlohmann::json;

// The ConfigMap as kube-apiserver writes it on a kubeadm cluster.
json KubeadmConfigMap() {
  return {
      {"apiVersion", "v1"},
      {"kind", "ConfigMap"},
      {"metadata", {{"name", "extension-apiserver-authentication"}, {"namespace", "kube-system"}}},
      {"data",
       {{"client-ca-file", "-----BEGIN CERTIFICATE-----\ncluster\n-----END CERTIFICATE-----\n"},
        {"requestheader-client-ca-file",
         "-----BEGIN CERTIFICATE-----\nfront\n-----END CERTIFICATE-----\n"},
        {"requestheader-allowed-names", R"(["front-proxy-client"])"},
        {"requestheader-username-headers", R"(["X-Remote-User"])"},
        {"requestheader-uid-headers", "[]"},
        {"requestheader-group-headers", R"(["X-Remote-Group"])"},
        {"requestheader-extra-headers-prefix", R"(["X-Remote-Extra-"])"}}}};
}

RequestHeaderSettings KubeadmSettings() { return *ParseRequestHeaderSettings(KubeadmConfigMap()); }

TEST_CASE("the front proxy's settings are read from the requestheader keys") {
  const absl::StatusOr<RequestHeaderSettings> settings =
      ParseRequestHeaderSettings(KubeadmConfigMap());
  REQUIRE(settings.ok());
  CHECK(settings->client_ca_pem ==
        "-----BEGIN CERTIFICATE-----\nfront\n-----END CERTIFICATE-----\n");
  CHECK(settings->allowed_names == std::vector<std::string>{"front-proxy-client"});
  CHECK(settings->username_headers == std::vector<std::string>{"X-Remote-User"});
  CHECK(settings->uid_headers.empty());
  CHECK(settings->group_headers == std::vector<std::string>{"X-Remote-Group"});
  CHECK(settings->extra_header_prefixes == std::vector<std::string>{"X-Remote-Extra-"});

  // A list key left out reads as an empty list, as Kubernetes reads it.
  json no_names = KubeadmConfigMap();
  no_names["data"].erase("requestheader-allowed-names");
  CHECK(ParseRequestHeaderSettings(no_names)->allowed_names.empty());
}

TEST_CASE("a requestheader list that is not a JSON array of strings is named") {
  json bad = KubeadmConfigMap();
  bad["data"]["requestheader-group-headers"] = "X-Remote-Group";
  const absl::StatusOr<RequestHeaderSettings> settings = ParseRequestHeaderSettings(bad);
  CHECK(settings.status().code() == absl::StatusCode::kInvalidArgument);
  CHECK(settings.status().message() ==
        "kube-system/extension-apiserver-authentication has requestheader-group-headers "
        "'X-Remote-Group', which is not a JSON array of strings");
  bad["data"]["requestheader-group-headers"] = "[1]";
  CHECK(ParseRequestHeaderSettings(bad).status().code() == absl::StatusCode::kInvalidArgument);
}

TEST_CASE("without a front-proxy CA the API server aggregates nothing") {
  json none = KubeadmConfigMap();
  none["data"].erase("requestheader-client-ca-file");
  const absl::StatusOr<RequestHeaderSettings> settings = ParseRequestHeaderSettings(none);
  CHECK(settings.status().code() == absl::StatusCode::kFailedPrecondition);
  CHECK(settings.status().message() ==
        "kube-system/extension-apiserver-authentication has no requestheader-client-ca-file: "
        "the API server runs without a front proxy (--requestheader-client-ca-file), so it "
        "proxies to no aggregated API");
}

TEST_CASE("the user comes from the headers of a verified front proxy, as Kubernetes reads them") {
  // As kube-aggregator sends them over HTTP/1.1: names canonicalized by Go, extra keys escaped.
  const HeaderList headers = {
      {"X-Remote-User", "system:serviceaccount:shop:web"},
      {"X-Remote-Group", "system:serviceaccounts"},
      {"x-remote-group", "system:serviceaccounts:shop"},
      {"X-Remote-Group", ""},
      {"X-Remote-Group", "system:authenticated"},
      {"X-Remote-Extra-Authentication.kubernetes.io%2fpod-Name", "web-1"},
      {"X-Remote-Extra-Authentication.kubernetes.io%2fpod-Uid", "7f0c"},
      {"X-Remote-Extra-Scopes", "read"},
      {"X-REMOTE-EXTRA-scopes", "write"},
      {"Accept", "application/json"},
  };
  const absl::StatusOr<KubeUser> user =
      AuthenticateFrontProxy(KubeadmSettings(), "front-proxy-client", headers);
  REQUIRE(user.ok());
  CHECK(user->name == "system:serviceaccount:shop:web");
  CHECK(user->uid.empty());
  CHECK(user->groups == std::vector<std::string>{"system:serviceaccounts",
                                                 "system:serviceaccounts:shop",
                                                 "system:authenticated"});
  CHECK(user->extra == std::map<std::string, std::vector<std::string>>{
                           {"authentication.kubernetes.io/pod-name", {"web-1"}},
                           {"authentication.kubernetes.io/pod-uid", {"7f0c"}},
                           {"scopes", {"read", "write"}}});
}

TEST_CASE("the user's name and uid are the first non-empty of their headers") {
  RequestHeaderSettings settings = KubeadmSettings();
  settings.username_headers = {" X-Remote-User ", "", "X-Other-User"};
  settings.uid_headers = {"X-Remote-Uid"};
  const absl::StatusOr<KubeUser> user = AuthenticateFrontProxy(settings, "front-proxy-client",
                                                               {{"X-Remote-User", ""},
                                                                {"X-Other-User", "bob"},
                                                                {"X-Other-User", "eve"},
                                                                {"X-Remote-Uid", "u-1"}});
  REQUIRE(user.ok());
  CHECK(user->name == "bob");
  CHECK(user->uid == "u-1");
}

TEST_CASE("an extra's key is lower-cased, then percent-decoded unless an escape is invalid") {
  CHECK(ExtraKey("Authentication.kubernetes.io%2fpod-Name") ==
        "authentication.kubernetes.io/pod-name");
  CHECK(ExtraKey("A%2FB") == "a/b");
  CHECK(ExtraKey("100%25") == "100%");
  // Go's PathUnescape fails on these, and Kubernetes keeps the key as it is then.
  CHECK(ExtraKey("A%2fB%zz") == "a%2fb%zz");
  CHECK(ExtraKey("Tail%2") == "tail%2");
  CHECK(ExtraKey("Plus+Sign") == "plus+sign");
}

TEST_CASE("headers without a verified front-proxy certificate are never read") {
  const HeaderList forged = {{"X-Remote-User", "admin"}, {"X-Remote-Group", "system:masters"}};
  const absl::StatusOr<KubeUser> none = AuthenticateFrontProxy(KubeadmSettings(), {}, forged);
  CHECK(none.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(none.status().message() ==
        "no client certificate of the Kubernetes API server's front proxy: this port serves "
        "the API server's aggregation layer only; call it through the API server (meshctl "
        "with a kubeconfig, or kubectl get --raw /apis/nodemesh.io/v1alpha1/...)");

  // The CA signed it, but for another purpose than the front proxy's.
  const absl::StatusOr<KubeUser> other =
      AuthenticateFrontProxy(KubeadmSettings(), "not-allowed", forged);
  CHECK(other.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(other.status().message() ==
        "the client certificate of 'not-allowed' is not the front proxy's: its common name is "
        "not in requestheader-allowed-names of kube-system/extension-apiserver-authentication "
        "(front-proxy-client)");
}

TEST_CASE("with no allowed names any certificate of the front-proxy CA is the front proxy") {
  RequestHeaderSettings settings = KubeadmSettings();
  settings.allowed_names.clear();
  const absl::StatusOr<KubeUser> user =
      AuthenticateFrontProxy(settings, "anything", {{"X-Remote-User", "alice"}});
  REQUIRE(user.ok());
  CHECK(user->name == "alice");
  CHECK(user->groups.empty());
  // Still a certificate: none is still no one.
  CHECK(AuthenticateFrontProxy(settings, {}, {{"X-Remote-User", "alice"}}).status().code() ==
        absl::StatusCode::kUnauthenticated);
}

TEST_CASE("a front-proxy request without a user is refused") {
  const absl::StatusOr<KubeUser> user = AuthenticateFrontProxy(
      KubeadmSettings(), "front-proxy-client", {{"X-Remote-Group", "system:authenticated"}});
  CHECK(user.status().code() == absl::StatusCode::kUnauthenticated);
  CHECK(user.status().message() ==
        "the front proxy 'front-proxy-client' named no user: none of the headers X-Remote-User "
        "is set");
}

}  // namespace
}  // namespace nodemesh::aggregator
