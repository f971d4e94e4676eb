// Who calls through the Kubernetes API server's aggregation layer. The API server
// authenticates the user by any of its methods, then calls the aggregated API as its front
// proxy: with a client certificate of the front-proxy CA and the user in request headers
// (X-Remote-User, X-Remote-Uid, X-Remote-Group, X-Remote-Extra-<key>). Which CA, which
// certificate names and which headers it publishes in the ConfigMap
// kube-system/extension-apiserver-authentication (requestheader-*), which FrontProxy watches.
//
// The headers are trusted only on a request whose client certificate the TLS handshake
// verified against that CA (FrontProxy::client_ca_pem, the TLS server's verify store) and
// whose common name is one of the allowed names (any, when the list is empty); anyone else's
// headers are never read, whatever they say. A refusal is UNAUTHENTICATED and says why.
//
// Threads: FrontProxy's reflector thread replaces the settings when the ConfigMap changes and
// calls on_client_ca; Authenticate and the accessors may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "aggregator/kube_user.h"
#include "common/kube/client.h"
#include "common/kube/reflector.h"
#include "nlohmann/json.hpp"

namespace nodemesh::aggregator {

inline constexpr std::string_view kAuthenticationConfigMapNamespace = "kube-system";
inline constexpr std::string_view kAuthenticationConfigMapName =
    "extension-apiserver-authentication";

// What the API server publishes about its front proxy: the requestheader-* keys of
// extension-apiserver-authentication.
struct RequestHeaderSettings {
  std::string client_ca_pem;               // requestheader-client-ca-file: a PEM bundle
  std::vector<std::string> allowed_names;  // empty: any common name the CA signed
  std::vector<std::string> username_headers;
  std::vector<std::string> uid_headers;
  std::vector<std::string> group_headers;
  std::vector<std::string> extra_header_prefixes;

  bool operator==(const RequestHeaderSettings&) const = default;
};

// The settings in the ConfigMap `config_map` (an object as the API returns it). The lists are
// JSON arrays of strings written into the string values. INVALID_ARGUMENT naming the key
// when one is not; FAILED_PRECONDITION when there is no requestheader-client-ca-file (the
// API server runs without a front proxy, so it aggregates no API).
absl::StatusOr<RequestHeaderSettings> ParseRequestHeaderSettings(const nlohmann::json& config_map);

// A request's headers in the order they came, names as the client wrote them.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

// The user of a request that the front proxy made: `verified_common_name` is the common name
// of the client certificate the TLS handshake verified against settings.client_ca_pem,
// nullopt when it verified none. As Kubernetes reads them (its requestheader
// authenticator): the name is the first non-empty value of the username headers, the uid
// likewise, the groups every non-empty value of the group headers, and each header starting
// with an extra prefix (in any case) one value of the extra whose key is the rest of its name
// (ExtraKey).
absl::StatusOr<KubeUser> AuthenticateFrontProxy(
    const RequestHeaderSettings& settings, const std::optional<std::string>& verified_common_name,
    const HeaderList& headers);

// The extra's key in the rest of an X-Remote-Extra-* header's name: lower-cased, then
// percent-decoded; kept lower-cased as it is when an escape is invalid. (The API server
// escapes each byte that may not be in a header name, and '%'; its HTTP stack then changes
// the name's case, so "/" arrives as "%2f" or "%2F".)
std::string ExtraKey(std::string_view header_name_rest);

struct FrontProxyOptions {
  // The reflector's timings; path, selector and what are FrontProxy's.
  kube::ReflectorOptions reflector;
};

class FrontProxy {
 public:
  // Reads the ConfigMap through `client` (which needs get, list and watch on it: the Role
  // kube-system/extension-apiserver-authentication-reader). `on_client_ca` runs on the
  // reflector's thread with the new PEM bundle each time it changes ("" when there is none),
  // for the TLS server's verify store.
  FrontProxy(kube::Client& client, std::function<void(const std::string& ca_pem)> on_client_ca,
             FrontProxyOptions options = {});
  ~FrontProxy();  // Stop()s
  FrontProxy(const FrontProxy&) = delete;
  FrontProxy& operator=(const FrontProxy&) = delete;

  void Start();
  void Stop();
  // Blocks until the ConfigMap has been read once or `timeout` passed; returns whether it was.
  bool WaitForSync(std::chrono::milliseconds timeout);

  // The front-proxy CA as last read; "" before, or when the ConfigMap has none.
  std::string client_ca_pem() const;
  // AuthenticateFrontProxy with the settings last read. UNAVAILABLE before the ConfigMap was
  // read; UNAUTHENTICATED, saying why, while it is missing or has never been valid. A
  // ConfigMap that becomes invalid leaves the last valid settings in force (and is logged).
  absl::StatusOr<KubeUser> Authenticate(const std::optional<std::string>& verified_common_name,
                                        const HeaderList& headers) const;

 private:
  // The reflector's change: parse the ConfigMap again.
  void Reload();

  const std::function<void(const std::string&)> on_client_ca_;
  mutable std::mutex mutex_;
  std::shared_ptr<const RequestHeaderSettings> settings_;  // last valid; null before one
  std::string problem_;  // why the current ConfigMap cannot be used; "" when it can
  bool loaded_ = false;  // Reload has run once
  std::condition_variable loaded_cv_;
  std::unique_ptr<kube::Reflector> reflector_;
};

}  // namespace nodemesh::aggregator
