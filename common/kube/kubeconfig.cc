// LoadKubeconfig: kubectl's kubeconfig rules (config.h says which fields), with errors that say
// what to do next.
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "common/base/file.h"
#include "common/base/format.h"
#include "common/kube/config.h"
#include "nlohmann/json.hpp"

namespace nodemesh::kube {
namespace {

struct KubeconfigFile {
  std::string path;
  std::filesystem::path directory;  // relative paths inside the file are relative to it
  YAML::Node root;
};

// One named entry of `clusters`, `contexts` or `users`, with the file it came from.
struct Entry {
  YAML::Node body;  // the map under "cluster", "context" or "user"
  const KubeconfigFile* file = nullptr;
};

// The files kubectl would read, in order of precedence. `explicit_path` is one file that
// must exist; the files of $KUBECONFIG that do not exist are skipped, as kubectl does.
struct Sources {
  std::vector<std::string> paths;
  bool from_environment = false;
};

Sources FindSources(std::string_view explicit_path) {
  if (!explicit_path.empty()) return {{std::string(explicit_path)}, false};
  const char* environment = std::getenv("KUBECONFIG");
  if (environment != nullptr && *environment != '\0') {
    Sources sources{{}, true};
    std::string_view list(environment);
    while (!list.empty()) {
      const size_t colon = list.find(':');
      const std::string_view path = list.substr(0, colon);
      if (!path.empty()) sources.paths.emplace_back(path);
      if (colon == std::string_view::npos) break;
      list.remove_prefix(colon + 1);
    }
    if (!sources.paths.empty()) return sources;
  }
  const char* home = std::getenv("HOME");
  if (home == nullptr || *home == '\0') return {};
  return {{(std::filesystem::path(home) / ".kube" / "config").string()}, false};
}

std::string Describe(const Sources& sources) {
  if (sources.paths.size() == 1) return fmt::format("kubeconfig {}", sources.paths[0]);
  return fmt::format("kubeconfig files {} (KUBECONFIG)", fmt::join(sources.paths, ":"));
}

// A scalar child as a string; empty if absent or not a scalar.
std::string ScalarAt(const YAML::Node& map, const char* key) {
  if (!map.IsMap()) return {};
  const YAML::Node value = map[key];
  if (!value || !value.IsScalar()) return {};
  return value.Scalar();
}

bool HasKey(const YAML::Node& map, const char* key) {
  return map.IsMap() && map[key] && !map[key].IsNull();
}

// `clusters`, `contexts` or `users` of every file, merged: the first file naming one wins.
absl::StatusOr<std::map<std::string, Entry>> Merge(const std::vector<KubeconfigFile>& files,
                                                   const char* list_key, const char* body_key) {
  std::map<std::string, Entry> merged;
  for (const KubeconfigFile& file : files) {
    const YAML::Node list = file.root[list_key];
    if (!list || list.IsNull()) continue;
    if (!list.IsSequence()) {
      return absl::FailedPreconditionError(
          fmt::format("kubeconfig {}: '{}' is not a list", file.path, list_key));
    }
    for (const YAML::Node& item : list) {
      const std::string name = ScalarAt(item, "name");
      if (name.empty()) continue;
      YAML::Node body = item[body_key];
      merged.try_emplace(name, Entry{body ? body : YAML::Node(YAML::NodeType::Map), &file});
    }
  }
  return merged;
}

std::string Names(const std::map<std::string, Entry>& entries) {
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries) names.push_back(name);
  return fmt::format("{}", fmt::join(names, ", "));
}

// A path from the kubeconfig: relative ones are relative to the file's directory.
std::string Resolve(const std::string& path, const KubeconfigFile& file) {
  if (path.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (file.directory / path).lexically_normal().string();
}

// A -data field: base64 in the file, PEM (or a token) once decoded.
absl::StatusOr<std::string> Decode(const std::string& base64, std::string_view field,
                                   std::string_view owner, const KubeconfigFile& file) {
  std::string decoded;
  if (!absl::Base64Unescape(base64, &decoded)) {
    return absl::FailedPreconditionError(
        fmt::format("{} of {} in kubeconfig {} is not valid base64", field, owner, file.path));
  }
  return decoded;
}

// A file the kubeconfig names must be readable now, so the error names the kubeconfig
// rather than surfacing later as a TLS or authentication failure.
absl::Status CheckReadable(const std::string& path, std::string_view field, std::string_view owner,
                           const KubeconfigFile& file) {
  const absl::StatusOr<std::string> contents = ReadFile(path);
  if (contents.ok()) return absl::OkStatus();
  return absl::NotFoundError(fmt::format("cannot read {} {} of {} in kubeconfig {} ({})", field,
                                         path, owner, file.path, contents.status().message()));
}

absl::Status UnsupportedCredentials(std::string_view how, std::string_view user,
                                    std::string_view context, const KubeconfigFile& file,
                                    std::string_view instead) {
  return absl::UnimplementedError(fmt::format(
      "user {} of context {} (kubeconfig {}) authenticates with {}, which nodemesh does not "
      "run: nodemesh supports bearer tokens, client certificates and exec plugins. {}",
      user, context, file.path, how, instead));
}

// A plain YAML scalar as the YAML core schema reads it (a bool, null, an integer or a
// float), else a string; quoted scalars are strings. yaml-cpp hands every scalar over as
// text, where client-go's YAML-to-JSON step types them.
nlohmann::json TypedScalar(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  if (node.Tag() != "?") return text;  // quoted, or with an explicit tag
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") {
    return nullptr;
  }
  if (int64_t integer = 0; absl::SimpleAtoi(text, &integer)) return integer;
  const bool numeric = !text.empty() && (absl::ascii_isdigit(static_cast<unsigned char>(text[0])) ||
                                         text[0] == '-' || text[0] == '+' || text[0] == '.');
  if (double number = 0; numeric && absl::SimpleAtod(text, &number) &&
                         text.find_first_of("xXnN") == std::string::npos) {
    return number;
  }
  return text;
}

// A YAML node as JSON (maps' keys as strings), as client-go hands a kubeconfig extension to
// an exec plugin.
nlohmann::json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return TypedScalar(node);
    case YAML::NodeType::Sequence: {
      nlohmann::json list = nlohmann::json::array();
      for (const YAML::Node& item : node) list.push_back(YamlToJson(item));
      return list;
    }
    case YAML::NodeType::Map: {
      nlohmann::json object = nlohmann::json::object();
      for (const auto& item : node) object[item.first.Scalar()] = YamlToJson(item.second);
      return object;
    }
    default:
      return nullptr;
  }
}

// The cluster's extension named `name` as JSON text, "" without one.
std::string ExtensionJson(const YAML::Node& cluster, std::string_view name) {
  const YAML::Node extensions = cluster.IsMap() ? cluster["extensions"] : YAML::Node();
  if (!extensions || !extensions.IsSequence()) return {};
  for (const YAML::Node& extension : extensions) {
    if (ScalarAt(extension, "name") == name && extension["extension"]) {
      return YamlToJson(extension["extension"]).dump();
    }
  }
  return {};
}

// Fills the cluster's part of `config`; `cluster_exec_config` gets the cluster's exec
// extension (ExecConfig::cluster_config_json), which belongs to the user's plugin once known.
absl::Status FillCluster(const std::string& name, const Entry& entry, Config& config,
                         std::string& cluster_exec_config) {
  const YAML::Node& cluster = entry.body;
  const KubeconfigFile& file = *entry.file;
  const std::string owner = fmt::format("cluster {}", name);
  config.server = ScalarAt(cluster, "server");
  if (config.server.empty()) {
    return absl::FailedPreconditionError(fmt::format(
        "cluster {} in kubeconfig {} has no server: set it with 'kubectl config set-cluster {} "
        "--server=https://HOST:PORT'",
        name, file.path, name));
  }
  while (config.server.size() > 1 && config.server.back() == '/') config.server.pop_back();
  if (const std::string data = ScalarAt(cluster, "certificate-authority-data"); !data.empty()) {
    absl::StatusOr<std::string> pem = Decode(data, "certificate-authority-data", owner, file);
    if (!pem.ok()) return pem.status();
    config.ca_data = *std::move(pem);
  } else if (const std::string path = ScalarAt(cluster, "certificate-authority"); !path.empty()) {
    config.ca_file = Resolve(path, file);
    if (absl::Status readable = CheckReadable(config.ca_file, "certificate-authority", owner, file);
        !readable.ok()) {
      return readable;
    }
  }
  config.tls_server_name = ScalarAt(cluster, "tls-server-name");
  config.proxy_url = ScalarAt(cluster, "proxy-url");
  cluster_exec_config = ExtensionJson(cluster, "client.authentication.k8s.io/exec");
  if (HasKey(cluster, "insecure-skip-tls-verify")) {
    try {
      config.insecure_skip_tls_verify = cluster["insecure-skip-tls-verify"].as<bool>();
    } catch (const YAML::Exception&) {
      return absl::FailedPreconditionError(fmt::format(
          "insecure-skip-tls-verify of cluster {} in kubeconfig {} is not true or false", name,
          file.path));
    }
  }
  return absl::OkStatus();
}

constexpr std::string_view kExecV1 = "client.authentication.k8s.io/v1";
constexpr std::string_view kExecV1beta1 = "client.authentication.k8s.io/v1beta1";

// A user's `exec` stanza, checked with client-go's messages (tools/clientcmd/validation.go),
// all of them at once as client-go reports them.
absl::StatusOr<ExecConfig> ParseExec(const std::string& name, const YAML::Node& user,
                                     const KubeconfigFile& file) {
  const YAML::Node exec = user["exec"];
  ExecConfig config;
  config.user = name;
  config.api_version = ScalarAt(exec, "apiVersion");
  config.command = ScalarAt(exec, "command");
  // As client-go's loader: only a command naming a path is resolved, a bare name is
  // looked up in PATH.
  if (config.command.find('/') != std::string::npos) config.command = Resolve(config.command, file);
  config.install_hint = ScalarAt(exec, "installHint");
  std::vector<std::string> errors;
  const auto malformed = [&](std::string_view field, std::string_view expected) {
    errors.push_back(fmt::format("exec.{} of user {} is not {}", field, name, expected));
  };
  if (const YAML::Node args = exec["args"]; args && !args.IsNull()) {
    if (!args.IsSequence()) {
      malformed("args", "a list of strings");
    } else {
      for (const YAML::Node& arg : args) config.args.push_back(arg.IsScalar() ? arg.Scalar() : "");
    }
  }
  if (const YAML::Node env = exec["env"]; env && !env.IsNull()) {
    if (!env.IsSequence()) {
      malformed("env", "a list of {name, value}");
    } else {
      for (const YAML::Node& variable : env) {
        config.env.emplace_back(ScalarAt(variable, "name"), ScalarAt(variable, "value"));
      }
    }
  }
  if (HasKey(exec, "provideClusterInfo")) {
    try {
      config.provide_cluster_info = exec["provideClusterInfo"].as<bool>();
    } catch (const YAML::Exception&) {
      malformed("provideClusterInfo", "true or false");
    }
  }
  std::string mode = ScalarAt(exec, "interactiveMode");
  // client-go's defaulting (tools/clientcmd/api/v1/defaults.go): v1beta1 may leave it out.
  if (mode.empty() && config.api_version == kExecV1beta1) mode = "IfAvailable";

  if (HasKey(user, "auth-provider")) {
    errors.push_back(fmt::format(
        "authProvider cannot be provided in combination with an exec plugin for {}", name));
  }
  if (config.command.empty()) {
    errors.push_back(
        fmt::format("command must be specified for {} to use exec authentication plugin", name));
  }
  if (config.api_version.empty()) {
    errors.push_back(
        fmt::format("apiVersion must be specified for {} to use exec authentication plugin", name));
  }
  for (const auto& [variable, value] : config.env) {
    if (variable.empty()) {
      errors.push_back(fmt::format(
          "env variable name must be specified for {} to use exec authentication plugin", name));
    }
  }
  if (mode == "Never") {
    config.interactive_mode = ExecConfig::InteractiveMode::kNever;
  } else if (mode == "IfAvailable") {
    config.interactive_mode = ExecConfig::InteractiveMode::kIfAvailable;
  } else if (mode == "Always") {
    config.interactive_mode = ExecConfig::InteractiveMode::kAlways;
  } else if (mode.empty()) {
    errors.push_back(fmt::format(
        "interactiveMode must be specified for {} to use exec authentication plugin", name));
  } else {
    errors.push_back(fmt::format("invalid interactiveMode for {}: \"{}\"", name, mode));
  }
  if (!errors.empty()) {
    return absl::FailedPreconditionError(
        fmt::format("kubeconfig {}: {}", file.path, absl::StrJoin(errors, "; ")));
  }
  return config;
}

absl::Status FillUser(const std::string& name, const std::string& context_name, const Entry& entry,
                      Config& config) {
  const YAML::Node& user = entry.body;
  const KubeconfigFile& file = *entry.file;
  const std::string owner = fmt::format("user {}", name);
  std::optional<ExecConfig> exec;
  if (HasKey(user, "exec")) {
    absl::StatusOr<ExecConfig> parsed = ParseExec(name, user, file);
    if (!parsed.ok()) return parsed.status();
    exec = *std::move(parsed);
  }
  if (HasKey(user, "auth-provider")) {
    const std::string provider = ScalarAt(user["auth-provider"], "name");
    return UnsupportedCredentials(
        provider.empty() ? std::string("an auth-provider")
                         : fmt::format("an auth-provider ({})", provider),
        name, context_name, file,
        "kubectl itself dropped the gcp and azure providers in 1.26 for exec plugins: "
        "gke-gcloud-auth-plugin on GKE, kubelogin on AKS, and for OIDC kubelogin (kubectl "
        "oidc-login); set the user up with the plugin (e.g. 'gcloud container clusters "
        "get-credentials', 'az aks get-credentials' then 'kubelogin convert-kubeconfig')");
  }
  if (HasKey(user, "username") || HasKey(user, "password")) {
    if (!HasKey(user, "token") && !HasKey(user, "tokenFile") &&
        !HasKey(user, "client-certificate") && !HasKey(user, "client-certificate-data")) {
      return UnsupportedCredentials(
          "a username and password", name, context_name, file,
          fmt::format("Use a token, e.g. 'kubectl create token SERVICE_ACCOUNT -n NAMESPACE' and "
                      "'kubectl config set-credentials {} --token=TOKEN'",
                      name));
    }
  }

  config.token = ScalarAt(user, "token");
  if (const std::string path = ScalarAt(user, "tokenFile"); !path.empty()) {
    config.token_file = Resolve(path, file);
    if (absl::Status readable = CheckReadable(config.token_file, "tokenFile", owner, file);
        !readable.ok()) {
      return readable;
    }
  }

  // A client certificate and its key: each from -data or a file, both or neither.
  const auto load = [&](const char* data_key, const char* file_key, std::string& data,
                        std::string& path) -> absl::Status {
    if (const std::string base64 = ScalarAt(user, data_key); !base64.empty()) {
      absl::StatusOr<std::string> pem = Decode(base64, data_key, owner, file);
      if (!pem.ok()) return pem.status();
      data = *std::move(pem);
    } else if (const std::string relative = ScalarAt(user, file_key); !relative.empty()) {
      path = Resolve(relative, file);
      return CheckReadable(path, file_key, owner, file);
    }
    return absl::OkStatus();
  };
  if (absl::Status status = load("client-certificate-data", "client-certificate",
                                 config.client_certificate_data, config.client_certificate_file);
      !status.ok()) {
    return status;
  }
  if (absl::Status status =
          load("client-key-data", "client-key", config.client_key_data, config.client_key_file);
      !status.ok()) {
    return status;
  }
  const bool has_certificate =
      !config.client_certificate_data.empty() || !config.client_certificate_file.empty();
  const bool has_key = !config.client_key_data.empty() || !config.client_key_file.empty();
  if (has_certificate != has_key) {
    return absl::FailedPreconditionError(
        fmt::format("user {} in kubeconfig {} has a client {} but no client {}: give both "
                    "client-certificate(-data) and client-key(-data)",
                    name, file.path, has_certificate ? "certificate" : "key",
                    has_certificate ? "key" : "certificate"));
  }
  // client-go runs the plugin only for a user with neither a token nor a certificate.
  if (exec.has_value() && config.token.empty() && config.token_file.empty() && !has_certificate) {
    if (exec->api_version != kExecV1 && exec->api_version != kExecV1beta1) {
      return absl::FailedPreconditionError(
          fmt::format("user {} in kubeconfig {}: exec plugin: invalid apiVersion \"{}\" (use {} "
                      "or {})",
                      name, file.path, exec->api_version, kExecV1, kExecV1beta1));
    }
    config.exec = *std::move(exec);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Config> LoadKubeconfig(std::string_view path, std::string_view context_name) {
  const Sources sources = FindSources(path);
  if (sources.paths.empty()) {
    return absl::NotFoundError(
        "no kubeconfig: HOME is not set, so there is no ~/.kube/config; pass --kubeconfig PATH "
        "or set KUBECONFIG");
  }

  std::vector<KubeconfigFile> files;
  files.reserve(sources.paths.size());  // entries point at their file
  std::vector<std::string> unreadable;
  for (const std::string& file_path : sources.paths) {
    absl::StatusOr<std::string> text = ReadFile(file_path);
    if (!text.ok()) {
      if (!sources.from_environment) {
        return absl::NotFoundError(fmt::format(
            "cannot read kubeconfig {} ({}): pass --kubeconfig PATH or set KUBECONFIG to a "
            "kubeconfig file (kubectl config view --raw shows the one kubectl uses)",
            file_path, text.status().message()));
      }
      unreadable.push_back(fmt::format("{} ({})", file_path, text.status().message()));
      continue;
    }
    KubeconfigFile file{file_path, std::filesystem::path(file_path).parent_path(), {}};
    try {
      file.root = YAML::Load(*text);
    } catch (const YAML::Exception& error) {
      return absl::FailedPreconditionError(
          fmt::format("kubeconfig {} is not valid YAML: {}", file_path, error.what()));
    }
    if (file.root.IsNull()) file.root = YAML::Node(YAML::NodeType::Map);  // an empty file
    if (!file.root.IsMap()) {
      return absl::FailedPreconditionError(
          fmt::format("kubeconfig {} is not a kubeconfig (not a YAML map)", file_path));
    }
    files.push_back(std::move(file));
  }
  if (files.empty()) {
    return absl::NotFoundError(
        fmt::format("cannot read any file of KUBECONFIG: {}; point KUBECONFIG or --kubeconfig at a "
                    "kubeconfig file",
                    fmt::join(unreadable, ", ")));
  }

  absl::StatusOr<std::map<std::string, Entry>> clusters = Merge(files, "clusters", "cluster");
  if (!clusters.ok()) return clusters.status();
  absl::StatusOr<std::map<std::string, Entry>> contexts = Merge(files, "contexts", "context");
  if (!contexts.ok()) return contexts.status();
  absl::StatusOr<std::map<std::string, Entry>> users = Merge(files, "users", "user");
  if (!users.ok()) return users.status();

  const std::string where = Describe(sources);
  std::string chosen(context_name);
  if (chosen.empty()) {
    for (const KubeconfigFile& file : files) {
      chosen = ScalarAt(file.root, "current-context");
      if (!chosen.empty()) break;
    }
  }
  if (chosen.empty()) {
    if (contexts->empty()) {
      return absl::FailedPreconditionError(fmt::format(
          "{} has no contexts: add one (kubectl config set-context NAME --cluster=CLUSTER "
          "--user=USER) or point --kubeconfig at another file",
          where));
    }
    return absl::FailedPreconditionError(
        fmt::format("{} sets no current-context: pass --context NAME (one of {}) or run "
                    "'kubectl config use-context NAME'",
                    where, Names(*contexts)));
  }
  const auto context = contexts->find(chosen);
  if (context == contexts->end()) {
    return absl::NotFoundError(fmt::format(
        "context {} is not in {}: {}", chosen, where,
        contexts->empty()
            ? std::string("it has no contexts")
            : fmt::format("use one of {} (kubectl config get-contexts)", Names(*contexts))));
  }
  const KubeconfigFile& context_file = *context->second.file;

  Config config;
  config.source = fmt::format("kubeconfig {}, context {}", context_file.path, chosen);
  const std::string cluster_name = ScalarAt(context->second.body, "cluster");
  const auto cluster = clusters->find(cluster_name);
  if (cluster_name.empty() || cluster == clusters->end()) {
    return absl::FailedPreconditionError(fmt::format(
        "context {} in kubeconfig {} names {}: set it with 'kubectl config set-context {} "
        "--cluster=NAME'{}",
        chosen, context_file.path,
        cluster_name.empty() ? std::string("no cluster")
                             : fmt::format("cluster {}, which is not in {}", cluster_name, where),
        chosen, clusters->empty() ? "" : fmt::format(" (one of {})", Names(*clusters))));
  }
  std::string cluster_exec_config;
  if (absl::Status status = FillCluster(cluster_name, cluster->second, config, cluster_exec_config);
      !status.ok()) {
    return status;
  }

  // A context without a user is anonymous, as with kubectl.
  if (const std::string user_name = ScalarAt(context->second.body, "user"); !user_name.empty()) {
    const auto user = users->find(user_name);
    if (user == users->end()) {
      return absl::FailedPreconditionError(
          fmt::format("context {} in kubeconfig {} names user {}, which is not in {}: set it "
                      "with 'kubectl config set-credentials {} --token=TOKEN'",
                      chosen, context_file.path, user_name, where, user_name));
    }
    if (absl::Status status = FillUser(user_name, chosen, user->second, config); !status.ok()) {
      return status;
    }
    if (config.exec.has_value()) config.exec->cluster_config_json = cluster_exec_config;
  }

  if (const std::string namespace_name = ScalarAt(context->second.body, "namespace");
      !namespace_name.empty()) {
    config.namespace_name = namespace_name;
  }
  return config;
}

}  // namespace nodemesh::kube
