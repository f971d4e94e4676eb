// A Kubernetes API server for tests (test/lib/kube_apiserver.py): real HTTPS, bearer tokens
// with audiences, expiry and pod and node claims, TokenReview and SubjectAccessReview,
// optional RBAC (beside the bootstrap roles every cluster has), the aggregation layer as
// kube-aggregator runs it (RegisterExtension), in-memory objects with list, watch
// (bookmarks, 410 Gone), create, update, patch and delete, and switches to make it
// misbehave (stalled watches, expired history, slow or failing reviews, down then up). Each
// KubeApiServer has its own CA, certificates, tokens and state in a temporary directory, and stops
// its process when it goes, even when a test fails.
//
// The object and control calls use the admin token; they throw std::runtime_error with the
// server's answer when it is not the expected one. Calls may come from any thread, but
// Start and Stop from one thread at a time, with no other call running.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test/lib/files.h"

namespace nodemesh::testing {

class Process;

struct KubeApiServerOptions {
  // How often a watch that allows bookmarks gets one.
  std::chrono::milliseconds bookmark_interval{1000};
  // A JSON list of ClusterRole, ClusterRoleBinding, Role and RoleBinding objects. Empty: no
  // RBAC, every valid token may do anything.
  std::string rbac_file{};
  // Objects the server starts with (kube_apiserver.py --seed: {"objects": [{"group",
  // "resource", "object"}]}), for a benchmark with thousands. Empty: none, and the server
  // keeps its objects in a state file across Stop and Start; with a seed it keeps none (the
  // file would be written whole at every change) and starts again from the seed.
  std::string seed_file{};
};

// The audience of tokens for the API server itself: a token issued without audiences has it,
// and the server's own API takes only tokens that have it.
inline constexpr std::string_view kApiAudience = "https://kubernetes.default.svc.cluster.local";

// What a service account's token is issued for, as the TokenRequest API (and a projected
// volume) asks for it.
struct TokenOptions {
  // Empty: kApiAudience only.
  std::vector<std::string> audiences{};
  // Lifetime from now; none: it never expires (as a Secret's token).
  std::optional<std::chrono::seconds> expiration{};
  // Bound to this pod of the service account's namespace: the token is valid only while a
  // pod of that name and uid exists, and its reviews carry the pod-name and pod-uid extras.
  // An empty uid is the stored pod's (which must exist then).
  std::string pod_name{};
  std::string pod_uid{};
  // The node claims Kubernetes 1.30+ adds to a pod's token (the node-name and node-uid
  // extras); empty: none, as before 1.30.
  std::string node_name{};
  std::string node_uid{};
};

// How TokenReviews and SubjectAccessReviews misbehave, for tests of a slow or failing API
// server: each is answered `delay` late (a shorter delay set later releases those waiting),
// then with 503 ServiceUnavailable if `unavailable`. Other requests are not affected.
struct ReviewFaults {
  std::chrono::milliseconds delay{0};
  bool unavailable = false;
};

// An extension API server behind the aggregation layer: where it listens, the CA of its
// serving certificate (which must name <service>.<namespace_name>.svc, as
// MakeServerCertificate's extra DNS names can), and the group version it serves.
struct ExtensionOptions {
  std::string namespace_name = "nodemesh";
  std::string service = "nodemesh-aggregator";
  std::string address;  // "127.0.0.1:PORT"
  std::string ca_bundle_pem;
  std::string group = "nodemesh.io";
  std::string version = "v1alpha1";
};

class KubeApiServer {
 public:
  // Makes the certificates and starts the server; returns once it listens.
  explicit KubeApiServer(KubeApiServerOptions options = {});
  ~KubeApiServer();
  KubeApiServer(const KubeApiServer&) = delete;
  KubeApiServer& operator=(const KubeApiServer&) = delete;

  std::string url() const;   // https://127.0.0.1:PORT
  std::string host() const;  // 127.0.0.1
  int port() const;
  std::string ca_file() const;        // the CA that signed the server's certificate
  std::string other_ca_file() const;  // an unrelated CA: TLS verification must fail with it
  std::string admin_token() const;
  // The front proxy as kube-aggregator is one: its CA, published with the allowed name
  // front-proxy-client in kube-system/extension-apiserver-authentication (requestheader-*
  // keys, X-Remote-User, X-Remote-Group, X-Remote-Extra-; client-ca-file is ca_file()), its
  // client certificate (CN=front-proxy-client), and one of the same CA whose name is not
  // allowed (CN=not-allowed). PEM files.
  std::string front_proxy_ca_file() const;
  std::string front_proxy_client_cert() const;
  std::string front_proxy_client_key() const;
  std::string not_allowed_client_cert() const;
  std::string not_allowed_client_key() const;

  // A token (a JWT with Kubernetes' claims, exp among them when it expires) for user
  // system:serviceaccount:<ns>:<name>.
  std::string IssueToken(std::string_view namespace_name, std::string_view service_account,
                         const TokenOptions& options = {});
  // A token for any user, with the groups (system:authenticated is added) and extras its
  // reviews and requests carry, valid for kApiAudience; none: it never expires.
  std::string IssueUserToken(std::string_view user, const std::vector<std::string>& groups = {},
                             const std::map<std::string, std::vector<std::string>>& extra = {},
                             std::optional<std::chrono::seconds> expiration = {});
  void RevokeToken(std::string_view token);
  // Until the next Stop.
  void SetReviewFaults(ReviewFaults faults);

  // client-go's in-cluster layout in `dir` (made if missing): ca.crt, token, namespace.
  void WriteServiceAccountDir(const std::string& dir, std::string_view token,
                              std::string_view namespace_name) const;
  // A kubeconfig (YAML) for this server and `token`, context named `context`, with
  // current-context set. The CA is referenced by path.
  void WriteKubeconfig(const std::string& path, std::string_view token,
                       std::string_view context = "test") const;

  // Objects through the real API with the admin token; each returns the object as stored.
  // Paths as Kubernetes has them: Create("/api/v1/namespaces/x/pods", pod),
  // Get("/apis/apps/v1/namespaces/x/deployments/web").
  nlohmann::json Create(std::string_view collection_path, const nlohmann::json& object);
  nlohmann::json Get(std::string_view path);
  nlohmann::json MergePatch(std::string_view path, const nlohmann::json& patch);
  void Delete(std::string_view path);

  // Any request with any token (empty: no Authorization header), for tests of what the API
  // answers. Throws only if there is no HTTP answer.
  struct Response {
    int status = 0;
    std::string body;
    nlohmann::json json() const;  // the body parsed; throws if it is not JSON
  };
  Response Call(std::string_view method, std::string_view path, std::string_view token,
                std::string_view body = "",
                std::string_view content_type = "application/json") const;

  // Serves an extension through the aggregation layer, as a chart registers one: creates (or
  // replaces) the Service (port 443 "https", targetPort "https"), its EndpointSlice (the
  // address) and the APIService VERSION.GROUP, then checks its availability and discovery
  // as kube-aggregator does, and returns; the server checks again each second while it is
  // not Available (an extension not ready yet). Requests for /apis/GROUP/VERSION and below then
  // go to the extension as the front proxy's, with the user in X-Remote-* headers, once it
  // is Available (else 503). Throws only if the objects cannot be written.
  void RegisterExtension(const ExtensionOptions& options);
  // What the last check of the extension last registered found: {"apiService", "available",
  // "reason", "message" (as the Available condition says), "discovery" ("legacy",
  // "aggregated", "failed", or "" when not available), "probes": [{"purpose", "path",
  // "user", "groups", "accept", "status", "contentType", "body"} or {..., "error"}]}.
  nlohmann::json ExtensionStatus();

  // Every resourceVersion up to the current one becomes too old: a watch from one gets an
  // HTTP 410 Status (kHttpStatus) or a 200 stream whose only event is an ERROR carrying
  // that Status (kErrorEvent). The counter then moves on by one, so a new list can be
  // watched from.
  enum class GoneMode { kHttpStatus, kErrorEvent };
  void ExpireHistory(GoneMode mode);
  // While stalled, watch streams (open and new) send nothing at all, a new one not even its
  // response headers, and stay open; they carry on when the stall ends.
  void StallWatches(bool stalled);
  // Ends every open watch stream and closes its connection.
  void CloseWatches();
  // Watch streams open now.
  int OpenWatches();

  void Stop();  // the process ends; objects kept in its state file
  // Again, on the same port, with the same objects, resourceVersion and tokens. A watch
  // from the last resourceVersion resumes; one from an older version is too old (410), as
  // after a real API server's restart.
  void Start();
  bool running() const;
  // The server's process id, for a benchmark's CPU figures; 0 when it is not running.
  pid_t pid() const;

  // Every API request answered (control calls excluded) since construction, across Stop
  // and Start, oldest first. The server records a request before it answers it, so a
  // request whose answer has arrived is here. `rule` names the RBAC rule that allowed it,
  // "ClusterRole/<name>#<index>" or "Role/<namespace>/<name>#<index>"; "admin" for the
  // admin token, "system:masters" for that group, "system:discovery" for discovery paths,
  // "" without RBAC or when denied. A review's entry says what it decided in `review`:
  // {audiences, authenticated, user or error} for a TokenReview, {user, groups, extra,
  // resourceAttributes or nonResourceAttributes, allowed, rule} for a SubjectAccessReview.
  struct Request {
    std::string method, path, user;
    int status = 0;
    bool watch = false;
    std::string rule;
    nlohmann::json review;  // null unless the request was a review
  };
  std::vector<Request> Requests();
  // Every rule of the RBAC file and how many requests and SubjectAccessReviews it allowed
  // (since the last Start), and each rule of a bootstrap role that allowed one: a test can
  // check that none is unused.
  std::map<std::string, int> RbacRuleUses();

  // What the server logged (one line per request), for failure messages.
  std::string log() const;

 private:
  nlohmann::json Admin(std::string_view method, std::string_view path, const nlohmann::json& body,
                       std::string_view content_type = "application/json");

  KubeApiServerOptions options_;
  TempDir dir_;
  std::string admin_token_;
  int port_ = 0;                           // 0 until the first start: the server picks one
  std::vector<Request> earlier_requests_;  // answered before the last Stop
  std::string extension_apiservice_;       // the APIService of the last RegisterExtension
  std::string earlier_log_;
  std::unique_ptr<Process> process_;
};

}  // namespace nodemesh::testing
