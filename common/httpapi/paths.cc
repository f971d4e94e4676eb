#include "common/httpapi/paths.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <algorithm>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "common/base/format.h"
#include "common/base/percent_encoding.h"
#include "common/resource/resource.h"

namespace nodemesh::httpapi {
namespace {

namespace pb = google::protobuf;

constexpr std::string_view kCallPaths =
    "[/namespaces/NS]/stats/TYPE, [/namespaces/NS]/edges/TYPE, [/namespaces/NS]/routes/TYPE, "
    "[/namespaces/NS]/inventory/pods, [/namespaces/NS]/taps?watch=true, "
    "/nodes/NODE/admin/PATH, [/namespaces/NS]/views/{namespaces,workloads,graph,workload}";

// `text` cut at each `separator`, empty parts kept.
std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    const size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

absl::Status NoSuchCall(std::string_view path) {
  return absl::NotFoundError(fmt::format("{} is no call of {}: the calls are {}, under {}", path,
                                         kApiPath.substr(6), kCallPaths, kApiPath));
}

// The field `name` names in `type`, in its proto spelling or its JSON one.
const pb::FieldDescriptor* FieldNamed(const pb::Descriptor& type, std::string_view name) {
  for (int i = 0; i < type.field_count(); ++i) {
    const pb::FieldDescriptor* field = type.field(i);
    if (field->name() == name || field->json_name() == name) return field;
  }
  return nullptr;
}

// Every parameter `type` takes, by field path in the JSON spelling, but those in `bound`.
void ParameterNames(const pb::Descriptor& type, const std::string& prefix,
                    const std::vector<std::string>& bound, std::vector<std::string>* out) {
  for (int i = 0; i < type.field_count(); ++i) {
    const pb::FieldDescriptor* field = type.field(i);
    const std::string path = prefix + field->json_name();
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      ParameterNames(*field->message_type(), path + ".", bound, out);
    } else if (std::find(bound.begin(), bound.end(), path) == bound.end()) {
      out->push_back(path);
    }
  }
}

// Reads a query into one call's message, and binds what the path says.
class MessageReader {
 public:
  MessageReader(pb::Message* message, std::string_view call, std::vector<std::string> bound)
      : message_(message), call_(call), bound_(std::move(bound)) {}

  // One query parameter.
  absl::Status Read(std::string_view name, std::string_view value) {
    pb::Message* owner = message_;
    const pb::FieldDescriptor* field = nullptr;
    std::string path;
    for (std::string_view part : Split(name, '.')) {
      if (field != nullptr) {
        if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || field->is_repeated()) {
          return Unknown(name);
        }
        owner = owner->GetReflection()->MutableMessage(owner, field);
        path += ".";
      }
      field = FieldNamed(*owner->GetDescriptor(), part);
      if (field == nullptr) return Unknown(name);
      path += field->json_name();
    }
    if (field == nullptr || field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      return Unknown(name);
    }
    if (!field->is_repeated()) {
      const auto [earlier, first] = given_.emplace(path, std::string(value));
      if (!first) {
        if (earlier->second == value) return absl::OkStatus();
        return absl::InvalidArgumentError(
            fmt::format("parameter {} is given twice, as '{}' and as '{}': give it once", path,
                        earlier->second, value));
      }
    }
    return Set(owner, *field, path, value);
  }

  // A field the path binds (`path` among `bound`): a parameter may repeat it, not change it.
  absl::Status Bind(const std::string& path, std::string_view value, std::string_view where) {
    if (const auto given = given_.find(path); given != given_.end() && given->second != value) {
      return absl::InvalidArgumentError(
          fmt::format("parameter {}='{}' is at odds with the path, whose {} is '{}': leave it out",
                      path, given->second, where, value));
    }
    return Read(path, value);
  }

 private:
  absl::Status Unknown(std::string_view name) const {
    std::vector<std::string> names;
    ParameterNames(*message_->GetDescriptor(), "", bound_, &names);
    if (call_ == "taps") names.insert(names.begin(), "watch");
    return absl::InvalidArgumentError(fmt::format("unknown parameter '{}' for {}: it takes {}",
                                                  name, call_, absl::StrJoin(names, ", ")));
  }

  static absl::Status Set(pb::Message* owner, const pb::FieldDescriptor& field,
                          const std::string& path, std::string_view value) {
    const pb::Reflection& reflection = *owner->GetReflection();
    const bool repeated = field.is_repeated();
    const absl::string_view text(value.data(), value.size());  // Abseil's own string_view
    const auto malformed = [&](std::string_view what) {
      return absl::InvalidArgumentError(
          fmt::format("parameter {}: '{}' is not {}", path, value, what));
    };
    switch (field.cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        int64_t number = 0;
        if (!absl::SimpleAtoi(text, &number) ||
            (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32 &&
             number != static_cast<int32_t>(number))) {
          return malformed("a whole number");
        }
        if (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_INT32) {
          repeated ? reflection.AddInt32(owner, &field, static_cast<int32_t>(number))
                   : reflection.SetInt32(owner, &field, static_cast<int32_t>(number));
        } else {
          repeated ? reflection.AddInt64(owner, &field, number)
                   : reflection.SetInt64(owner, &field, number);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        uint64_t number = 0;
        if (!absl::SimpleAtoi(text, &number) ||
            (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32 &&
             number != static_cast<uint32_t>(number))) {
          return malformed("a whole number of 0 or more");
        }
        if (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_UINT32) {
          repeated ? reflection.AddUInt32(owner, &field, static_cast<uint32_t>(number))
                   : reflection.SetUInt32(owner, &field, static_cast<uint32_t>(number));
        } else {
          repeated ? reflection.AddUInt64(owner, &field, number)
                   : reflection.SetUInt64(owner, &field, number);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        double number = 0;
        if (!absl::SimpleAtod(text, &number)) return malformed("a number");
        if (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_FLOAT) {
          repeated ? reflection.AddFloat(owner, &field, static_cast<float>(number))
                   : reflection.SetFloat(owner, &field, static_cast<float>(number));
        } else {
          repeated ? reflection.AddDouble(owner, &field, number)
                   : reflection.SetDouble(owner, &field, number);
        }
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        bool flag = false;
        if (!absl::SimpleAtob(text, &flag)) return malformed("true or false");
        repeated ? reflection.AddBool(owner, &field, flag)
                 : reflection.SetBool(owner, &field, flag);
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const pb::EnumValueDescriptor* named =
            field.enum_type()->FindValueByName(std::string(value));
        if (named == nullptr) return malformed(fmt::format("a {}", field.enum_type()->name()));
        repeated ? reflection.AddEnum(owner, &field, named)
                 : reflection.SetEnum(owner, &field, named);
        return absl::OkStatus();
      }
      case pb::FieldDescriptor::CPPTYPE_STRING:
        repeated ? reflection.AddString(owner, &field, std::string(value))
                 : reflection.SetString(owner, &field, std::string(value));
        return absl::OkStatus();
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
    return absl::InvalidArgumentError(fmt::format("parameter {} cannot be given", path));
  }

  pb::Message* message_;
  std::string_view call_;
  std::vector<std::string> bound_;
  std::map<std::string, std::string> given_;  // singular fields read, by JSON path
};

bool IsNamespaceType(std::string_view type) {
  return ParseResourceType(type) == ResourceType::kNamespace;
}

// The selector or tap target the path names: TYPE and the path's namespace. A namespace is
// in itself, so under /namespaces/NS it is NS, by default or by name.
absl::Status BindSubject(MessageReader& reader, v1::Resource* subject, std::string_view field,
                         std::string_view path_namespace) {
  if (IsNamespaceType(subject->type()) && !path_namespace.empty()) {
    if (subject->name().empty()) subject->set_name(std::string(path_namespace));
    if (subject->name() != path_namespace) {
      return absl::InvalidArgumentError(
          fmt::format("{}.name '{}' is a namespace other than the path's ({}): ask under "
                      "/namespaces/{}/, or without /namespaces/ for every namespace",
                      field, subject->name(), path_namespace, subject->name()));
    }
  }
  return reader.Bind(std::string(field) + ".namespace", path_namespace, "namespace");
}

// A `from` or `to` peer: without a namespace, in the path's; a namespace in itself.
absl::Status PlacePeer(v1::Resource* peer, std::string_view field,
                       std::string_view path_namespace) {
  if (peer->type().empty() && peer->name().empty() && peer->namespace_().empty()) {
    return absl::OkStatus();  // not given
  }
  if (IsNamespaceType(peer->type())) {
    if (!peer->namespace_().empty() && peer->namespace_() != peer->name()) {
      return absl::InvalidArgumentError(
          fmt::format("{} is namespace '{}', which is not in namespace '{}': leave "
                      "{}.namespace out",
                      field, peer->name(), peer->namespace_(), field));
    }
    peer->set_namespace_(peer->name());
  } else if (peer->namespace_().empty()) {
    peer->set_namespace_(std::string(path_namespace));
  }
  return absl::OkStatus();
}

absl::Status ReadQuery(MessageReader& reader, std::string_view raw_query, bool watch_allowed,
                       bool* watch) {
  for (std::string_view pair : Split(raw_query, '&')) {
    if (pair.empty()) continue;
    const size_t equals = pair.find('=');
    const std::string name = QueryDecode(pair.substr(0, equals));
    const std::string value =
        equals == std::string_view::npos ? "" : QueryDecode(pair.substr(equals + 1));
    if (name == "watch") {
      if (!watch_allowed) {
        return absl::InvalidArgumentError(
            "parameter watch is for taps only: the other calls answer once");
      }
      if (value != "true" && value != "1") {
        return absl::InvalidArgumentError(
            fmt::format("parameter watch='{}': a tap is a watch, give watch=true", value));
      }
      *watch = true;
      continue;
    }
    if (absl::Status read = reader.Read(name, value); !read.ok()) return read;
  }
  return absl::OkStatus();
}

absl::StatusOr<ApiRequest> ParseView(std::string_view path, const std::string& kind_word,
                                     const std::string& path_namespace,
                                     std::string_view raw_query) {
  // The kind's enum name in lower case, as ViewKindName writes it.
  v1::ViewRequest::Kind kind = v1::ViewRequest::KIND_UNSPECIFIED;
  if (kind_word != absl::AsciiStrToLower(kind_word) ||
      !v1::ViewRequest::Kind_Parse(absl::AsciiStrToUpper(kind_word), &kind) ||
      kind == v1::ViewRequest::KIND_UNSPECIFIED) {
    return NoSuchCall(path);
  }
  v1::ViewRequest view;
  view.set_kind(kind);
  if (view.kind() == v1::ViewRequest::NAMESPACES && !path_namespace.empty()) {
    return absl::InvalidArgumentError(
        "the namespaces view is of every namespace: ask for views/namespaces without "
        "/namespaces/NS");
  }
  const std::string kind_name = v1::ViewRequest::Kind_Name(view.kind());
  MessageReader reader(&view, "views", {"kind"});
  bool watch = false;
  if (absl::Status read = ReadQuery(reader, raw_query, false, &watch); !read.ok()) return read;
  if (absl::Status bound = reader.Bind("kind", kind_name, "kind"); !bound.ok()) {
    return bound;
  }
  if (!path_namespace.empty()) {
    view.mutable_namespaces()->Add()->assign(path_namespace);
    std::rotate(view.mutable_namespaces()->rbegin(), view.mutable_namespaces()->rbegin() + 1,
                view.mutable_namespaces()->rend());
  }
  if (view.filter().has_around()) {
    if (absl::Status placed =
            PlacePeer(view.mutable_filter()->mutable_around(), "filter.around", path_namespace);
        !placed.ok()) {
      return placed;
    }
  }
  return view;
}

// A call on a resource under an optional /namespaces/NS: stats, edges, routes, inventory, taps.
absl::StatusOr<ApiRequest> ParseNamespacedCall(std::string_view path,
                                               const std::vector<std::string>& words,
                                               std::string_view raw_query) {
  const bool namespaced = words.size() >= 2 && words[0] == "namespaces";
  if (namespaced && words[1].empty()) return NoSuchCall(path);
  const std::string path_namespace = namespaced ? words[1] : "";
  const std::vector<std::string> rest(words.begin() + (namespaced ? 2 : 0), words.end());
  if (rest.empty()) return NoSuchCall(path);
  const std::string& call = rest[0];
  bool watch = false;

  if (call == "stats" || call == "edges" || call == "routes") {
    if (rest.size() != 2 || rest[1].empty()) return NoSuchCall(path);
    ApiRequest request;
    if (call == "stats") request = v1::StatSummaryRequest();
    if (call == "edges") request = v1::EdgesRequest();
    if (call == "routes") request = v1::TopRoutesRequest();
    pb::Message* message = std::visit([](auto& held) -> pb::Message* { return &held; }, request);
    MessageReader reader(message, call, {"selector.type", "selector.namespace"});
    if (absl::Status read = ReadQuery(reader, raw_query, false, &watch); !read.ok()) return read;
    if (absl::Status bound = reader.Bind("selector.type", rest[1], "resource type"); !bound.ok()) {
      return bound;
    }
    v1::Resource* selector = static_cast<v1::Resource*>(message->GetReflection()->MutableMessage(
        message, message->GetDescriptor()->FindFieldByName("selector")));
    if (absl::Status bound = BindSubject(reader, selector, "selector", path_namespace);
        !bound.ok()) {
      return bound;
    }
    for (const char* peer : {"from", "to"}) {
      const pb::FieldDescriptor* field = message->GetDescriptor()->FindFieldByName(peer);
      if (field == nullptr || !message->GetReflection()->HasField(*message, field)) continue;
      auto* resource =
          static_cast<v1::Resource*>(message->GetReflection()->MutableMessage(message, field));
      if (absl::Status placed = PlacePeer(resource, peer, path_namespace); !placed.ok()) {
        return placed;
      }
    }
    return request;
  }
  if (call == "inventory") {
    if (rest.size() != 2 || rest[1] != "pods") return NoSuchCall(path);
    v1::ListPodsRequest pods;
    MessageReader reader(&pods, "inventory/pods", {"namespace"});
    if (absl::Status read = ReadQuery(reader, raw_query, false, &watch); !read.ok()) return read;
    if (absl::Status bound = reader.Bind("namespace", path_namespace, "namespace"); !bound.ok()) {
      return bound;
    }
    return pods;
  }
  if (call == "taps") {
    if (rest.size() != 1) return NoSuchCall(path);
    v1::TapRequestSpec tap;
    MessageReader reader(&tap, "taps", {"target.namespace"});
    if (absl::Status read = ReadQuery(reader, raw_query, true, &watch); !read.ok()) return read;
    if (!watch) {
      return absl::InvalidArgumentError(
          "a tap is a watch: add watch=true to its query (kubectl get --raw "
          "'.../taps?watch=true&target.type=deployment&target.name=web')");
    }
    if (absl::Status bound = BindSubject(reader, tap.mutable_target(), "target", path_namespace);
        !bound.ok()) {
      return bound;
    }
    if (!tap.has_to()) return tap;
    if (absl::Status placed = PlacePeer(tap.mutable_to(), "to", path_namespace); !placed.ok()) {
      return placed;
    }
    return tap;
  }
  if (call == "views") {
    if (rest.size() != 2) return NoSuchCall(path);
    return ParseView(path, rest[1], path_namespace, raw_query);
  }
  return NoSuchCall(path);
}

// Leaf fields of `message` that are set, as JSON paths and their values (for a query).
void SetParameters(const pb::Message& message, const std::string& prefix,
                   const std::vector<std::string>& bound,
                   std::vector<std::pair<std::string, std::string>>* out) {
  const pb::Reflection& reflection = *message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  reflection.ListFields(message, &fields);
  for (const pb::FieldDescriptor* field : fields) {
    const std::string path = prefix + field->json_name();
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      SetParameters(reflection.GetMessage(message, field), path + ".", bound, out);
      continue;
    }
    if (std::find(bound.begin(), bound.end(), path) != bound.end()) continue;
    const int count = field->is_repeated() ? reflection.FieldSize(message, field) : 1;
    for (int i = 0; i < count; ++i) {
      const bool r = field->is_repeated();
      std::string value;
      switch (field->cpp_type()) {
        case pb::FieldDescriptor::CPPTYPE_INT32:
          value = std::to_string(r ? reflection.GetRepeatedInt32(message, field, i)
                                   : reflection.GetInt32(message, field));
          break;
        case pb::FieldDescriptor::CPPTYPE_INT64:
          value = std::to_string(r ? reflection.GetRepeatedInt64(message, field, i)
                                   : reflection.GetInt64(message, field));
          break;
        case pb::FieldDescriptor::CPPTYPE_UINT32:
          value = std::to_string(r ? reflection.GetRepeatedUInt32(message, field, i)
                                   : reflection.GetUInt32(message, field));
          break;
        case pb::FieldDescriptor::CPPTYPE_UINT64:
          value = std::to_string(r ? reflection.GetRepeatedUInt64(message, field, i)
                                   : reflection.GetUInt64(message, field));
          break;
        case pb::FieldDescriptor::CPPTYPE_DOUBLE:
          value = fmt::format("{}", r ? reflection.GetRepeatedDouble(message, field, i)
                                      : reflection.GetDouble(message, field));
          break;
        case pb::FieldDescriptor::CPPTYPE_FLOAT:
          value = fmt::format("{}", r ? reflection.GetRepeatedFloat(message, field, i)
                                      : reflection.GetFloat(message, field));
          break;
        case pb::FieldDescriptor::CPPTYPE_BOOL:
          value = (r ? reflection.GetRepeatedBool(message, field, i)
                     : reflection.GetBool(message, field))
                      ? "true"
                      : "false";
          break;
        case pb::FieldDescriptor::CPPTYPE_ENUM:
          value = (r ? reflection.GetRepeatedEnum(message, field, i)
                     : reflection.GetEnum(message, field))
                      ->name();
          break;
        case pb::FieldDescriptor::CPPTYPE_STRING:
          value = r ? reflection.GetRepeatedString(message, field, i)
                    : reflection.GetString(message, field);
          break;
        case pb::FieldDescriptor::CPPTYPE_MESSAGE:
          break;
      }
      out->emplace_back(path, std::move(value));
    }
  }
}

std::string NamespacePrefix(std::string_view namespace_name) {
  return namespace_name.empty() ? "" : "/namespaces/" + PercentEncode(namespace_name);
}

std::string WithQuery(std::string path, const pb::Message& message,
                      const std::vector<std::string>& bound, bool watch = false) {
  std::vector<std::pair<std::string, std::string>> parameters;
  if (watch) parameters.emplace_back("watch", "true");
  SetParameters(message, "", bound, &parameters);
  char separator = '?';
  for (const auto& [name, value] : parameters) {
    path += separator + name + "=" + PercentEncode(value);
    separator = '&';
  }
  return path;
}

}  // namespace

std::string ViewKindName(v1::ViewRequest::Kind kind) {
  if (kind == v1::ViewRequest::KIND_UNSPECIFIED) return "";
  return absl::AsciiStrToLower(v1::ViewRequest::Kind_Name(kind));
}

absl::StatusOr<ApiRequest> ParseApiRequest(std::string_view path, std::string_view raw_query) {
  if (!path.starts_with(kApiPath) || !path.substr(kApiPath.size()).starts_with('/')) {
    return NoSuchCall(path);
  }
  const std::string_view under = path.substr(kApiPath.size() + 1);
  const std::vector<std::string_view> raw_words = Split(under, '/');
  if (raw_words.size() >= 3 && raw_words[0] == "nodes" && raw_words[2] == "admin") {
    v1::NodeAdminRequest admin;
    admin.set_node(PercentDecode(raw_words[1]));
    if (admin.node().empty()) return NoSuchCall(path);
    // The rest goes to the agent as it came, its encoding and query included.
    const size_t rest = kApiPath.size() + 1 + raw_words[0].size() + 1 + raw_words[1].size() + 1 +
                        raw_words[2].size();
    std::string target(rest < path.size() ? path.substr(rest) : std::string_view("/"));
    if (!raw_query.empty()) {
      target += '?';
      target += raw_query;
    }
    admin.set_target(std::move(target));
    return admin;
  }
  std::vector<std::string> words;
  for (std::string_view word : raw_words) words.push_back(PercentDecode(word));
  return ParseNamespacedCall(path, words, raw_query);
}

std::string ApiRequestTarget(const ApiRequest& request) {
  const std::string api(kApiPath);
  if (const auto* stat = std::get_if<v1::StatSummaryRequest>(&request)) {
    return WithQuery(api + NamespacePrefix(stat->selector().namespace_()) + "/stats/" +
                         PercentEncode(stat->selector().type()),
                     *stat, {"selector.type", "selector.namespace"});
  }
  if (const auto* edges = std::get_if<v1::EdgesRequest>(&request)) {
    return WithQuery(api + NamespacePrefix(edges->selector().namespace_()) + "/edges/" +
                         PercentEncode(edges->selector().type()),
                     *edges, {"selector.type", "selector.namespace"});
  }
  if (const auto* routes = std::get_if<v1::TopRoutesRequest>(&request)) {
    return WithQuery(api + NamespacePrefix(routes->selector().namespace_()) + "/routes/" +
                         PercentEncode(routes->selector().type()),
                     *routes, {"selector.type", "selector.namespace"});
  }
  if (const auto* pods = std::get_if<v1::ListPodsRequest>(&request)) {
    return WithQuery(api + NamespacePrefix(pods->namespace_()) + "/inventory/pods", *pods,
                     {"namespace"});
  }
  if (const auto* tap = std::get_if<v1::TapRequestSpec>(&request)) {
    return WithQuery(api + NamespacePrefix(tap->target().namespace_()) + "/taps", *tap,
                     {"target.namespace"}, true);
  }
  if (const auto* view = std::get_if<v1::ViewRequest>(&request)) {
    // The first namespace is the path's; the others are parameters.
    v1::ViewRequest rest = *view;
    std::string first;
    if (!rest.namespaces().empty()) {
      first = rest.namespaces(0);
      rest.mutable_namespaces()->erase(rest.mutable_namespaces()->begin());
    }
    return WithQuery(api + NamespacePrefix(first) + "/views/" + ViewKindName(view->kind()), rest,
                     {"kind"});
  }
  const auto& admin = std::get<v1::NodeAdminRequest>(request);
  const std::string_view target = admin.target();
  return api + "/nodes/" + PercentEncode(admin.node()) + "/admin" +
         std::string(target.starts_with('/') ? "" : "/") + std::string(target);
}

}  // namespace nodemesh::httpapi
