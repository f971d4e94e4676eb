// Reading fields of Kubernetes objects as the API returns them. The API leaves empty fields
// out, so a missing field, or one of another type than expected, reads as absent instead
// of throwing: At gives a null value, StringAt an empty string, and calls chain
// (At(At(pod, "status"), "podIPs")).
#pragma once

#include <string>
#include <string_view>

#include "nlohmann/json.hpp"

namespace nodemesh::kube {

inline const nlohmann::json& At(const nlohmann::json& object, std::string_view key) {
  static const nlohmann::json kAbsent;
  if (!object.is_object()) return kAbsent;
  const auto it = object.find(key);
  return it == object.end() ? kAbsent : *it;
}

inline std::string StringAt(const nlohmann::json& object, std::string_view key) {
  const nlohmann::json& value = At(object, key);
  return value.is_string() ? value.get<std::string>() : std::string();
}

}  // namespace nodemesh::kube
