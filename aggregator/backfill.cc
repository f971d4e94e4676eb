#include "aggregator/backfill.h"

#include <fmt/format.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "common/base/file.h"
#include "common/base/log.h"

namespace nodemesh::aggregator {
namespace {

// A second of a large cluster exceeds gRPC's default 4 MiB, as an agent's delta may.
constexpr int kMaxMessageBytes = 64 << 20;

}  // namespace

Backfill::Backfill(BackfillOptions options, ServerState& state, int retention_seconds)
    : options_(std::move(options)),
      state_(state),
      start_second_(state.history_start_second.load()),
      want_from_(start_second_ - retention_seconds + 1),
      filled_from_(start_second_) {}

Backfill::~Backfill() { Stop(); }

void Backfill::Start() {
  state_.catching_up.store(true);
  thread_ = std::thread([this] { Run(); });
}

void Backfill::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (context_) context_->TryCancel();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  state_.catching_up.store(false);
}

bool Backfill::Wait(std::chrono::milliseconds delay) {
  std::unique_lock lock(mutex_);
  return !wake_.wait_for(lock, delay, [&] { return stopping_; });
}

void Backfill::Run() {
  if (!Wait(options_.grace)) return;
  const auto started = std::chrono::steady_clock::now();
  for (;;) {
    const auto waited = std::chrono::steady_clock::now() - started;
    bool filled = false;
    for (const ReplicaAddress& peer : ResolveReplicas(options_.peers)) {
      filled = Ask(peer, waited > options_.patience) == Outcome::kFilled;
      if (filled) break;
    }
    if (filled) break;
    if (waited > options_.give_up_after) {
      Log(LogLevel::kWarning,
          "no peer replica of {} gave the seconds before this one started: windows reach back "
          "to second {} only",
          options_.peers, filled_from_);
      break;
    }
    if (!Wait(options_.retry_interval)) return;
  }
  state_.catching_up.store(false);
}

Backfill::Outcome Backfill::Ask(const ReplicaAddress& peer, bool take_catching_up) {
  absl::StatusOr<AggregatorDialer> dialer = DialerFor(peer, options_.tls, "--peer-");
  if (!dialer.ok()) {
    Log(LogLevel::kWarning, "cannot ask the peer replica at {}: {}", peer.address,
        dialer.status().message());
    return Outcome::kFailed;
  }
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(kMaxMessageBytes);
  const std::unique_ptr<v1::AgentService::Stub> stub =
      v1::AgentService::NewStub(dialer->Dial(arguments));
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(5));
  if (!options_.token_file.empty()) {
    const absl::StatusOr<std::string> token = ReadFile(options_.token_file);
    if (!token.ok()) {
      Log(LogLevel::kWarning, "cannot ask the peer replicas: --peer-token-file: {}",
          token.status().message());
      return Outcome::kFailed;
    }
    context->AddMetadata("authorization",
                         fmt::format("Bearer {}", absl::StripAsciiWhitespace(*token)));
  }
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Outcome::kFailed;
    context_ = std::move(context);
  }
  v1::BackfillRequest request;
  request.set_first_second(want_from_);
  request.set_last_second(filled_from_ - 1);
  request.set_replica(state_.replica_id);
  const auto began = std::chrono::steady_clock::now();
  std::unique_ptr<grpc::ClientReader<v1::BackfillReply>> reader =
      stub->Backfill(context_.get(), request);

  v1::BackfillReply reply;
  Outcome outcome = Outcome::kFailed;
  int64_t peer_start = 0;
  int64_t seconds = 0;
  size_t bytes = 0;
  if (reader->Read(&reply)) {
    peer_start = reply.history_start_second();
    if (reply.catching_up() && !take_catching_up) {
      context_->TryCancel();
      outcome = Outcome::kBusy;
    } else {
      while (reader->Read(&reply)) {
        bytes += reply.ByteSizeLong();
        const int64_t second = reply.second().unix_seconds();
        // Whole seconds, the newest first, all before filled_from_: each is ours from here.
        if (second >= filled_from_ || second < want_from_) continue;
        const absl::Status added = state_.store.Add(reply.second(), state_.NowSeconds());
        if (!added.ok())
          Log(LogLevel::kDebug, "backfill of second {}: {}", second, added.message());
        filled_from_ = second;
        state_.history_start_second.store(second);
        ++seconds;
      }
      outcome = Outcome::kPartly;
    }
  }
  const grpc::Status status = reader->Finish();
  {
    std::lock_guard lock(mutex_);
    context_.reset();
  }
  if (outcome == Outcome::kBusy) return outcome;
  if (outcome == Outcome::kFailed) {
    // Not there (yet), or itself (FAILED_PRECONDITION): the next round asks again.
    Log(LogLevel::kDebug, "the peer replica at {} gave nothing: {}", peer.address,
        status.error_message());
    return outcome;
  }
  if (status.ok()) {
    // The peer gave every second it held of those asked for: the rest it never had.
    filled_from_ = std::max(want_from_, std::min(filled_from_, peer_start));
    state_.history_start_second.store(filled_from_);
  } else {
    Log(LogLevel::kWarning, "the peer replica at {} stopped giving seconds: {}", peer.address,
        status.error_message());
  }
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - began);
  Log(LogLevel::kInfo,
      "backfill from the peer replica at {}: {} seconds, {} bytes in {} ms; windows reach back "
      "to second {}",
      peer.address, seconds, bytes, took.count(), filled_from_);
  return status.ok() || filled_from_ <= want_from_ ? Outcome::kFilled : Outcome::kPartly;
}

grpc::Status ServeBackfill(const ServerState& state, const v1::BackfillRequest& request,
                           grpc::ServerWriter<v1::BackfillReply>* writer) {
  if (!state.replica_id.empty() && request.replica() == state.replica_id) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "that is this replica: ask another");
  }
  if (request.first_second() > request.last_second()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        fmt::format("first_second {} is after last_second {}",
                                    request.first_second(), request.last_second()));
  }
  v1::BackfillReply reply;
  const int64_t start = state.history_start_second.load();
  reply.set_history_start_second(start);
  reply.set_catching_up(state.catching_up.load());
  if (!writer->Write(reply)) return grpc::Status::CANCELLED;
  // Never the current second, which the agents are still writing.
  const int64_t last = std::min(request.last_second(), state.NowSeconds() - 1);
  for (int64_t second = last; second >= std::max(request.first_second(), start); --second) {
    std::optional<v1::MetricsDelta> delta = state.store.ExportSecond(second);
    if (!delta) continue;
    reply.Clear();
    *reply.mutable_second() = *std::move(delta);
    if (!writer->Write(reply)) return grpc::Status::CANCELLED;
  }
  return grpc::Status::OK;
}

}  // namespace nodemesh::aggregator
