#include "agent/observer/local_tap.h"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/reflection.h>

#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "common/base/log.h"

namespace nodemesh::agent {
namespace {

bool SameFilter(const TapFilter& a, const TapFilter& b) {
  return a.sources == b.sources && a.destinations == b.destinations && a.services == b.services &&
         a.either == b.either && a.method == b.method && a.path_prefix == b.path_prefix &&
         a.authority == b.authority && a.scheme == b.scheme && a.max_rps == b.max_rps;
}

}  // namespace

namespace {

// A protobuf field's value in the proto3 JSON mapping, as MessageToJsonString gives it with
// proto field names: 64-bit integers as strings, enums by name, bytes in base64, NaN and the
// infinities by name. Built straight from reflection: the library's printer serializes each
// message and reads it back through a type resolver, twenty times the cost.
nlohmann::json ProtoJson(const google::protobuf::Message& message);

nlohmann::json FloatJson(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  return value;
}

nlohmann::json FieldJson(const google::protobuf::Message& message,
                         const google::protobuf::FieldDescriptor& field, int index) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  const bool repeated = index >= 0;
  switch (field.cpp_type()) {
    case FieldDescriptor::CPPTYPE_INT32:
      return repeated ? reflection.GetRepeatedInt32(message, &field, index)
                      : reflection.GetInt32(message, &field);
    case FieldDescriptor::CPPTYPE_UINT32:
      return repeated ? reflection.GetRepeatedUInt32(message, &field, index)
                      : reflection.GetUInt32(message, &field);
    case FieldDescriptor::CPPTYPE_INT64:
      return std::to_string(repeated ? reflection.GetRepeatedInt64(message, &field, index)
                                     : reflection.GetInt64(message, &field));
    case FieldDescriptor::CPPTYPE_UINT64:
      return std::to_string(repeated ? reflection.GetRepeatedUInt64(message, &field, index)
                                     : reflection.GetUInt64(message, &field));
    case FieldDescriptor::CPPTYPE_DOUBLE:
      return FloatJson(repeated ? reflection.GetRepeatedDouble(message, &field, index)
                                : reflection.GetDouble(message, &field));
    case FieldDescriptor::CPPTYPE_FLOAT:
      return FloatJson(repeated ? reflection.GetRepeatedFloat(message, &field, index)
                                : reflection.GetFloat(message, &field));
    case FieldDescriptor::CPPTYPE_BOOL:
      return repeated ? reflection.GetRepeatedBool(message, &field, index)
                      : reflection.GetBool(message, &field);
    case FieldDescriptor::CPPTYPE_ENUM: {
      const int number = repeated ? reflection.GetRepeatedEnumValue(message, &field, index)
                                  : reflection.GetEnumValue(message, &field);
      const google::protobuf::EnumValueDescriptor* value =
          field.enum_type()->FindValueByNumber(number);
      if (value == nullptr) return number;
      return value->name();
    }
    case FieldDescriptor::CPPTYPE_STRING: {
      std::string scratch;
      const std::string& value =
          repeated ? reflection.GetRepeatedStringReference(message, &field, index, &scratch)
                   : reflection.GetStringReference(message, &field, &scratch);
      if (field.type() == FieldDescriptor::TYPE_BYTES) return absl::Base64Escape(value);
      return value;
    }
    case FieldDescriptor::CPPTYPE_MESSAGE:
      return ProtoJson(repeated ? reflection.GetRepeatedMessage(message, &field, index)
                                : reflection.GetMessage(message, &field));
  }
  return nullptr;
}

nlohmann::json ProtoJson(const google::protobuf::Message& message) {
  const google::protobuf::Reflection& reflection = *message.GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> fields;
  reflection.ListFields(message, &fields);  // the fields set: proto3 defaults are not
  nlohmann::json json = nlohmann::json::object();
  for (const google::protobuf::FieldDescriptor* field : fields) {
    nlohmann::json& out = json[field->name()];
    if (field->is_map()) {
      out = nlohmann::json::object();
      const google::protobuf::FieldDescriptor& key = *field->message_type()->map_key();
      const google::protobuf::FieldDescriptor& value = *field->message_type()->map_value();
      for (int i = 0; i < reflection.FieldSize(message, field); ++i) {
        const google::protobuf::Message& entry = reflection.GetRepeatedMessage(message, field, i);
        nlohmann::json key_json = FieldJson(entry, key, -1);
        const std::string name = key_json.is_string() ? key_json.get<std::string>()
                                                      : key_json.dump();  // numbers, booleans
        out[name] = FieldJson(entry, value, -1);
      }
    } else if (field->is_repeated()) {
      out = nlohmann::json::array();
      for (int i = 0; i < reflection.FieldSize(message, field); ++i) {
        out.push_back(FieldJson(message, *field, i));
      }
    } else {
      out = FieldJson(message, *field, -1);
    }
  }
  return json;
}

}  // namespace

nlohmann::json TapEventsJson(const std::vector<v1::TapEvent>& events) {
  nlohmann::json json = nlohmann::json::array();
  for (const v1::TapEvent& event : events) json.push_back(ProtoJson(event));
  return json;
}

LocalTaps::LocalTaps(TapSubscriptions& subscriptions, Drain drain, LocalTapOptions options)
    : subscriptions_(subscriptions), drain_(std::move(drain)), options_(options) {}

LocalTaps::~LocalTaps() {
  std::lock_guard lock(mutex_);
  for (const auto& [name, session] : sessions_) subscriptions_.Remove(session.subscription);
}

absl::StatusOr<LocalTaps::Batch> LocalTaps::Poll(const std::string& session, TapFilter filter,
                                                 Clock::time_point now) {
  std::lock_guard lock(mutex_);
  auto found = sessions_.find(session);
  if (found == sessions_.end()) {
    if (sessions_.size() >= options_.max_sessions) {
      return absl::ResourceExhaustedError(fmt::format(
          "{} taps are open on this agent already; end one (each ends {} s after its last poll)",
          sessions_.size(), options_.idle_timeout.count() / 1000));
    }
    Session opened;
    opened.subscription = kLocalTapBit | next_subscription_++;
    filter.id = opened.subscription;
    opened.filter = filter;
    opened.last_poll = now;
    subscriptions_.Add(std::move(filter));
    Log(LogLevel::kInfo, "local tap {} started", session);
    sessions_.emplace(session, std::move(opened));
    return Batch{};
  }
  filter.id = found->second.subscription;
  if (!SameFilter(filter, found->second.filter)) {
    return absl::FailedPreconditionError(fmt::format(
        "tap session {} is open with other filters: use a new session for new filters", session));
  }
  Distribute();
  Session& current = found->second;
  current.last_poll = now;
  Batch batch;
  batch.events.assign(std::make_move_iterator(current.queue.begin()),
                      std::make_move_iterator(current.queue.end()));
  current.queue.clear();
  batch.dropped = std::exchange(current.dropped, 0);
  return batch;
}

void LocalTaps::Distribute() {
  std::vector<v1::TapEvent> events;
  const uint64_t dropped = drain_(&events);
  for (v1::TapEvent& event : events) {
    for (auto& [name, session] : sessions_) {
      if (session.subscription != event.subscription()) continue;
      if (session.queue.size() >= options_.max_queued_events) {
        ++session.dropped;
      } else {
        session.queue.push_back(std::move(event));
      }
      break;
    }
  }
  // The workers' queues are shared by every session: their losses are everyone's.
  if (dropped != 0) {
    for (auto& [name, session] : sessions_) session.dropped += dropped;
  }
}

void LocalTaps::Expire(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (now - it->second.last_poll < options_.idle_timeout) {
      ++it;
      continue;
    }
    subscriptions_.Remove(it->second.subscription);
    Log(LogLevel::kInfo, "local tap {} ended: not polled for {} s", it->first,
        options_.idle_timeout.count() / 1000);
    it = sessions_.erase(it);
  }
  // Events of ended sessions would otherwise wait in the workers' queues.
  if (sessions_.empty()) Distribute();
}

size_t LocalTaps::sessions() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

}  // namespace nodemesh::agent
