#include "common/inventory/inventory.h"

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "common/base/format.h"

namespace nodemesh {
namespace {

using nlohmann::json;

// What reading one entry (a pod, a Service) takes: its fields by type, and the first thing
// wrong with it, named with the entry ("pod emojivoto/web-1: ") and the field.
class EntryReader {
 protected:
  explicit EntryReader(const json& entry) : entry_(entry) {}

  absl::Status Error() const { return absl::InvalidArgumentError(who_ + error_); }

  const json* Field(const json& object, const char* name, json::value_t type,
                    bool required = true) {
    if (!error_.empty()) return nullptr;
    const auto it = object.find(name);
    if (it == object.end() || it->is_null()) {
      if (required) error_ = fmt::format("{}\"{}\" is missing", parent_, name);
      return nullptr;
    }
    if (it->type() != type) {
      error_ =
          fmt::format("{}\"{}\" must be {}, not {}", parent_, name, TypeName(type), it->dump());
      return nullptr;
    }
    return &*it;
  }

  std::string String(const json& object, const char* name, bool required = true) {
    const json* field = Field(object, name, json::value_t::string, required);
    return field ? field->get<std::string>() : std::string();
  }

  // The addresses of the array field `name`: at least one.
  std::vector<IpAddress> Addresses(const char* name) {
    std::vector<IpAddress> addresses;
    const json* list = Field(entry_, name, json::value_t::array);
    if (list == nullptr) return addresses;
    for (size_t i = 0; i < list->size() && error_.empty(); ++i) {
      const json& ip = (*list)[i];
      const auto parsed = ip.is_string() ? IpAddress::Parse(ip.get<std::string>()) : std::nullopt;
      if (!parsed) {
        error_ = fmt::format("\"{}\"[{}]: {} is not an IP address", name, i, ip.dump());
      } else {
        addresses.push_back(*parsed);
      }
    }
    if (error_.empty() && addresses.empty()) {
      error_ = fmt::format("\"{}\" must list at least one address", name);
    }
    return addresses;
  }

  static std::string_view TypeName(json::value_t type) {
    switch (type) {
      case json::value_t::object:
        return "an object";
      case json::value_t::array:
        return "an array";
      case json::value_t::string:
        return "a string";
      case json::value_t::boolean:
        return "true or false";
      default:
        return "something else";
    }
  }

  const json& entry_;
  std::string who_;
  std::string parent_;  // prefix of nested field names in messages: "owner".
  std::string error_;
};

// Reads one pod, or says what is wrong with it.
class PodReader : private EntryReader {
 public:
  explicit PodReader(const json& entry) : EntryReader(entry) {}

  absl::StatusOr<PodInfo> Read() {
    if (!entry_.is_object()) return absl::InvalidArgumentError("a pod must be a JSON object");
    PodInfo pod;
    pod.namespace_name = String(entry_, "namespace");
    pod.name = String(entry_, "name");
    if (!error_.empty()) return Error();
    if (pod.namespace_name.empty() || pod.name.empty()) {
      error_ = "\"namespace\" and \"name\" must not be empty";
      return Error();
    }
    who_ = fmt::format("pod {}: ", pod.key());
    if (const json* owner = Field(entry_, "owner", json::value_t::object, false)) {
      // Qualified, or a missing owner name would read as the pod's own "name".
      parent_ = "\"owner\".";
      pod.owner_kind = String(*owner, "kind");
      pod.owner_name = String(*owner, "name");
      parent_.clear();
    } else {
      pod.owner_kind = "Pod";
      pod.owner_name = pod.name;
    }
    if (const json* labels = Field(entry_, "labels", json::value_t::object, false)) {
      for (const auto& [key, value] : labels->items()) {
        if (!value.is_string()) {
          error_ = fmt::format("\"labels\".\"{}\" must be a string", key);
          break;
        }
        pod.labels[key] = value.get<std::string>();
      }
    }
    pod.service_account = String(entry_, "serviceAccount", false);
    if (pod.service_account.empty()) pod.service_account = "default";
    pod.ips = Addresses("ips");
    pod.node = String(entry_, "node", false);
    pod.cgroup = String(entry_, "cgroup");
    pod.netns = String(entry_, "netns");
    if (error_.empty() && (pod.cgroup.empty() || pod.cgroup[0] != '/')) {
      error_ = "\"cgroup\" must be a path under the cgroup v2 mount, starting with /";
    }
    if (error_.empty() && pod.netns.empty()) error_ = "\"netns\" must not be empty";
    if (const json* meshed = Field(entry_, "meshed", json::value_t::boolean, false)) {
      pod.meshed = meshed->get<bool>();
    }
    if (const json* ports = Field(entry_, "inboundPorts", json::value_t::array, false)) {
      pod.inbound_ports.emplace();
      for (const json& port : *ports) {
        if (!port.is_number_unsigned() || port.get<uint64_t>() == 0 ||
            port.get<uint64_t>() > 65535) {
          error_ = fmt::format("\"inboundPorts\": {} is not a port number", port.dump());
          break;
        }
        pod.inbound_ports->push_back(static_cast<uint16_t>(port.get<uint64_t>()));
      }
    }
    if (!error_.empty()) return Error();
    return pod;
  }
};

// Reads one Service, or says what is wrong with it.
class ServiceReader : private EntryReader {
 public:
  explicit ServiceReader(const json& entry) : EntryReader(entry) {}

  absl::StatusOr<ServiceInfo> Read() {
    if (!entry_.is_object()) return absl::InvalidArgumentError("a service must be a JSON object");
    ServiceInfo service;
    service.namespace_name = String(entry_, "namespace");
    service.name = String(entry_, "name");
    if (!error_.empty()) return Error();
    if (service.namespace_name.empty() || service.name.empty()) {
      error_ = "\"namespace\" and \"name\" must not be empty";
      return Error();
    }
    who_ = fmt::format("service {}: ", service.key());
    service.cluster_ips = Addresses("clusterIPs");
    if (!error_.empty()) return Error();
    return service;
  }
};

}  // namespace

absl::StatusOr<Inventory> ParseInventory(std::string_view text) {
  const json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) return absl::InvalidArgumentError("not valid JSON");
  if (!document.is_object() || !document.contains("pods") || !document["pods"].is_array()) {
    return absl::InvalidArgumentError("expected {\"pods\": [...]}");
  }
  Inventory inventory;
  absl::flat_hash_set<std::string> seen;
  for (size_t i = 0; i < document["pods"].size(); ++i) {
    absl::StatusOr<PodInfo> pod = PodReader(document["pods"][i]).Read();
    if (!pod.ok()) {
      return absl::InvalidArgumentError(fmt::format("pods[{}]: {}", i, pod.status().message()));
    }
    if (!seen.insert(pod->key()).second) {
      return absl::InvalidArgumentError(
          fmt::format("pods[{}]: pod {} is listed twice", i, pod->key()));
    }
    inventory.pods.push_back(*std::move(pod));
  }
  if (!document.contains("services")) return inventory;
  const json& services = document["services"];
  if (!services.is_array()) {
    return absl::InvalidArgumentError(
        fmt::format("\"services\" must be an array, not {}", services.dump()));
  }
  seen.clear();
  absl::flat_hash_map<IpAddress, std::string> owners;  // cluster IP -> the Service's key
  for (size_t i = 0; i < services.size(); ++i) {
    absl::StatusOr<ServiceInfo> service = ServiceReader(services[i]).Read();
    if (!service.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("services[{}]: {}", i, service.status().message()));
    }
    if (!seen.insert(service->key()).second) {
      return absl::InvalidArgumentError(
          fmt::format("services[{}]: service {} is listed twice", i, service->key()));
    }
    // One address names one Service, or connections to it could be named after either.
    for (const IpAddress& ip : service->cluster_ips) {
      const auto [owner, inserted] = owners.try_emplace(ip, service->key());
      if (!inserted) {
        return absl::InvalidArgumentError(
            fmt::format("services[{}]: service {}: \"clusterIPs\": {} is service {}'s already", i,
                        service->key(), ip.ToString(), owner->second));
      }
    }
    const std::string key = service->key();
    inventory.services.Set(key, *std::move(service));
  }
  return inventory;
}

}  // namespace nodemesh
