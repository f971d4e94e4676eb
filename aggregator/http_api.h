// The API nodemesh.io/v1alpha1 over HTTPS, for the Kubernetes API server's aggregation layer:
// the same calls as the gRPC API (api_calls.h), read from paths and queries
// (common/httpapi/paths.h) and answered in protobuf's JSON mapping, a tap as one message a
// line. Only the API server's front proxy is served (front_proxy.h): a request whose client
// certificate did not verify against its CA is refused whatever headers it carries. Each
// call then needs every permission common/httpapi/permissions.h names for it, which RBAC
// grants and a SubjectAccessReview checks (kube_authorizer.h).
//
//   /healthz, /livez      200 to anyone (probes carry no certificate)
//   /readyz               200 once the front proxy's ConfigMap has been read, else 503
//   /apis                 406: no aggregated discovery, so the API server asks the next
//   /apis/nodemesh.io, /apis/nodemesh.io/v1alpha1
//                         the APIGroup and the APIResourceList, to the front proxy
//   /apis/nodemesh.io/v1alpha1/...   the calls
//
// Threads: handlers run on the HTTP server's handler threads (common/http/server.h); a tap
// holds one for as long as its client listens.
#pragma once

#include "aggregator/api_calls.h"
#include "aggregator/front_proxy.h"
#include "aggregator/kube_authorizer.h"
#include "common/http/routes.h"

namespace nodemesh::aggregator {

// The routes, over parts that must outlive them.
http::HttpRoutes HttpApiRoutes(FrontProxy& front_proxy, KubeAuthorizer& authorizer,
                               const ApiCalls& calls);

}  // namespace nodemesh::aggregator
