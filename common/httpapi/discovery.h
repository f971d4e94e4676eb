// Discovery of nodemesh.io/v1alpha1, as the Kubernetes aggregation layer asks for it. It asks
// GET /apis for aggregated discovery first and, on 406, falls back to the group version's
// APIResourceList (older releases fall back on 406 only: a 404 or a plain 200 there would
// make discovery fail, and namespace deletion wait on it). Served to any caller the front
// proxy vouches for, without a SubjectAccessReview: the fallback asks as a user with no
// groups.
#pragma once

#include <string>

#include "common/httpapi/json.h"

namespace nodemesh::httpapi {

// GET /apis/nodemesh.io/v1alpha1: the APIResourceList. Every resource is a named query,
// read with `get` (a tap with `watch`); none can be listed, so none claims `list`.
std::string ResourceListJson();

// GET /apis/nodemesh.io: the APIGroup, with v1alpha1 its preferred version.
std::string GroupJson();

// GET /apis: 406 Not Acceptable (a Status), so the aggregation layer uses ResourceListJson.
ErrorAnswer ApisAnswer();

}  // namespace nodemesh::httpapi
