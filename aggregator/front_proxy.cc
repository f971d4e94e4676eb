#include "aggregator/front_proxy.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "common/base/format.h"
#include "common/base/log.h"
#include "common/base/percent_encoding.h"
#include "common/kube/object.h"

namespace nodemesh::aggregator {
namespace {

constexpr std::string_view kClientCaKey = "requestheader-client-ca-file";
constexpr std::string_view kAllowedNamesKey = "requestheader-allowed-names";

std::string ConfigMapName() {
  return fmt::format("{}/{}", kAuthenticationConfigMapNamespace, kAuthenticationConfigMapName);
}

// A list key: a JSON array of strings in a string; absent or empty means an empty list.
absl::StatusOr<std::vector<std::string>> StringList(const nlohmann::json& data,
                                                    std::string_view key) {
  const std::string text = kube::StringAt(data, key);
  if (text.empty()) return std::vector<std::string>{};
  const nlohmann::json list = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const bool strings = list.is_array() && std::all_of(list.begin(), list.end(),
                                                      [](const auto& v) { return v.is_string(); });
  if (!strings) {
    return absl::InvalidArgumentError(fmt::format(
        "{} has {} '{}', which is not a JSON array of strings", ConfigMapName(), key, text));
  }
  return list.get<std::vector<std::string>>();
}

// Header names as Kubernetes lists them, with surrounding blanks trimmed and blanks skipped.
std::vector<std::string> Names(const std::vector<std::string>& names) {
  std::vector<std::string> trimmed;
  for (const std::string& name : names) {
    const absl::string_view stripped = absl::StripAsciiWhitespace(name);
    if (!stripped.empty()) trimmed.emplace_back(stripped);
  }
  return trimmed;
}

// The first non-empty value of the first of `names` that has one (each name's first value,
// as Go's Header.Get gives it).
std::string FirstValue(const HeaderList& headers, const std::vector<std::string>& names) {
  for (const std::string& name : Names(names)) {
    const auto first = std::find_if(headers.begin(), headers.end(), [&](const auto& header) {
      return absl::EqualsIgnoreCase(header.first, name);
    });
    if (first != headers.end() && !first->second.empty()) return first->second;
  }
  return "";
}

// Every non-empty value of every one of `names`.
std::vector<std::string> AllValues(const HeaderList& headers,
                                   const std::vector<std::string>& names) {
  std::vector<std::string> values;
  for (const std::string& name : Names(names)) {
    for (const auto& [header, value] : headers) {
      if (absl::EqualsIgnoreCase(header, name) && !value.empty()) values.push_back(value);
    }
  }
  return values;
}

bool ValidEscapes(std::string_view text) {
  for (size_t at = 0; at < text.size(); ++at) {
    if (text[at] != '%') continue;
    if (text.size() - at < 3 || !absl::ascii_isxdigit(static_cast<unsigned char>(text[at + 1])) ||
        !absl::ascii_isxdigit(static_cast<unsigned char>(text[at + 2]))) {
      return false;
    }
    at += 2;
  }
  return true;
}

}  // namespace

absl::StatusOr<RequestHeaderSettings> ParseRequestHeaderSettings(const nlohmann::json& config_map) {
  const nlohmann::json& data = kube::At(config_map, "data");
  RequestHeaderSettings settings;
  settings.client_ca_pem = kube::StringAt(data, kClientCaKey);
  if (settings.client_ca_pem.empty()) {
    return absl::FailedPreconditionError(
        fmt::format("{} has no {}: the API server runs without a front proxy "
                    "(--requestheader-client-ca-file), so it proxies to no aggregated API",
                    ConfigMapName(), kClientCaKey));
  }
  const std::pair<std::string_view, std::vector<std::string>*> lists[] = {
      {kAllowedNamesKey, &settings.allowed_names},
      {"requestheader-username-headers", &settings.username_headers},
      {"requestheader-uid-headers", &settings.uid_headers},
      {"requestheader-group-headers", &settings.group_headers},
      {"requestheader-extra-headers-prefix", &settings.extra_header_prefixes},
  };
  for (const auto& [key, list] : lists) {
    absl::StatusOr<std::vector<std::string>> values = StringList(data, key);
    if (!values.ok()) return values.status();
    *list = *std::move(values);
  }
  return settings;
}

std::string ExtraKey(std::string_view header_name_rest) {
  const std::string lower = absl::AsciiStrToLower(std::string(header_name_rest));
  return ValidEscapes(lower) ? PercentDecode(lower) : lower;
}

absl::StatusOr<KubeUser> AuthenticateFrontProxy(
    const RequestHeaderSettings& settings, const std::optional<std::string>& verified_common_name,
    const HeaderList& headers) {
  if (!verified_common_name) {
    return absl::UnauthenticatedError(
        "no client certificate of the Kubernetes API server's front proxy: this port serves "
        "the API server's aggregation layer only; call it through the API server (meshctl "
        "with a kubeconfig, or kubectl get --raw /apis/nodemesh.io/v1alpha1/...)");
  }
  const std::vector<std::string>& allowed = settings.allowed_names;
  if (!allowed.empty() &&
      std::find(allowed.begin(), allowed.end(), *verified_common_name) == allowed.end()) {
    return absl::UnauthenticatedError(fmt::format(
        "the client certificate of '{}' is not the front proxy's: its common name is not in {} "
        "of {} ({})",
        *verified_common_name, kAllowedNamesKey, ConfigMapName(), fmt::join(allowed, ", ")));
  }
  KubeUser user;
  user.name = FirstValue(headers, settings.username_headers);
  if (user.name.empty()) {
    return absl::UnauthenticatedError(
        fmt::format("the front proxy '{}' named no user: none of the headers {} is set",
                    *verified_common_name, fmt::join(settings.username_headers, ", ")));
  }
  user.uid = FirstValue(headers, settings.uid_headers);
  user.groups = AllValues(headers, settings.group_headers);
  for (const std::string& prefix : Names(settings.extra_header_prefixes)) {
    for (const auto& [header, value] : headers) {
      if (header.size() < prefix.size() ||
          !absl::EqualsIgnoreCase(absl::string_view(header).substr(0, prefix.size()), prefix)) {
        continue;
      }
      user.extra[ExtraKey(std::string_view(header).substr(prefix.size()))].push_back(value);
    }
  }
  return user;
}

FrontProxy::FrontProxy(kube::Client& client,
                       std::function<void(const std::string& ca_pem)> on_client_ca,
                       FrontProxyOptions options)
    : on_client_ca_(std::move(on_client_ca)) {
  kube::ReflectorOptions reflector = std::move(options.reflector);
  reflector.path =
      fmt::format("/api/v1/namespaces/{}/configmaps", kAuthenticationConfigMapNamespace);
  reflector.field_selector = fmt::format("metadata.name={}", kAuthenticationConfigMapName);
  reflector.what = fmt::format("the front proxy's settings ({})", ConfigMapName());
  reflector_ =
      std::make_unique<kube::Reflector>(client, std::move(reflector), [this] { Reload(); });
}

FrontProxy::~FrontProxy() { Stop(); }

void FrontProxy::Start() { reflector_->Start(); }

void FrontProxy::Stop() { reflector_->Stop(); }

bool FrontProxy::WaitForSync(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return loaded_cv_.wait_for(lock, timeout, [this] { return loaded_; });
}

std::string FrontProxy::client_ca_pem() const {
  std::lock_guard lock(mutex_);
  return settings_ ? settings_->client_ca_pem : "";
}

void FrontProxy::Reload() {
  const std::shared_ptr<const kube::Reflector::Objects> objects = reflector_->Snapshot();
  const auto found = objects->find(ConfigMapName());
  absl::StatusOr<RequestHeaderSettings> parsed = absl::FailedPreconditionError(fmt::format(
      "{} does not exist: the API server publishes it when it has a front proxy", ConfigMapName()));
  if (found != objects->end()) parsed = ParseRequestHeaderSettings(found->second);
  std::string old_ca;
  std::string new_ca;
  {
    std::lock_guard lock(mutex_);
    old_ca = settings_ ? settings_->client_ca_pem : "";
    if (parsed.ok()) {
      settings_ = std::make_shared<const RequestHeaderSettings>(*std::move(parsed));
      problem_.clear();
    } else {
      // A missing CA is the API server's word that there is no front proxy; an unreadable
      // list is a fault in the ConfigMap, during which the last valid settings stay.
      if (parsed.status().code() == absl::StatusCode::kFailedPrecondition) settings_.reset();
      problem_ = std::string(parsed.status().message());
    }
    new_ca = settings_ ? settings_->client_ca_pem : "";
    loaded_ = true;
  }
  loaded_cv_.notify_all();
  if (!parsed.ok()) {
    Log(LogLevel::kWarning, "{}{}", parsed.status().message(),
        new_ca.empty() ? ": no call through the API server is let in"
                       : ": the last valid settings stay in force");
  }
  if (new_ca != old_ca && on_client_ca_) on_client_ca_(new_ca);
}

absl::StatusOr<KubeUser> FrontProxy::Authenticate(
    const std::optional<std::string>& verified_common_name, const HeaderList& headers) const {
  std::shared_ptr<const RequestHeaderSettings> settings;
  std::string problem;
  bool loaded = false;
  {
    std::lock_guard lock(mutex_);
    settings = settings_;
    problem = problem_;
    loaded = loaded_;
  }
  if (!loaded) {
    return absl::UnavailableError(fmt::format(
        "the front proxy's settings ({}) have not been read from the API server yet{}",
        ConfigMapName(),
        reflector_->last_error().empty() ? "" : fmt::format(": {}", reflector_->last_error())));
  }
  if (!settings) return absl::UnauthenticatedError(problem);
  return AuthenticateFrontProxy(*settings, verified_common_name, headers);
}

}  // namespace nodemesh::aggregator
