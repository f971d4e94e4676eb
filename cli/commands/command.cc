#include "cli/commands/command.h"

#include "cli/client.h"

namespace nodemesh::cli {

void Invocation::RunWhenChosen(CLI::App& command, std::function<int()> run_command) {
  command.callback([this, run_command = std::move(run_command)] { run = run_command; });
}

absl::StatusOr<std::unique_ptr<AggregatorApi>> Invocation::Client() const {
  if (absl::Status valid = ValidateAggregatorAddress(aggregator); !valid.ok()) return valid;
  ClientOptions options;
  options.address = aggregator;
  options.tls = tls;
  absl::StatusOr<std::unique_ptr<GrpcApiClient>> client = GrpcApiClient::Make(std::move(options));
  if (!client.ok()) return client.status();
  return std::unique_ptr<AggregatorApi>(*std::move(client));
}

int Invocation::Fail(const absl::Status& status) const {
  context.err << fmt::format("meshctl: {}\n", status.message());
  return status.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
}

int Invocation::Fail(std::string_view flag, const absl::Status& status) const {
  return Fail(absl::Status(status.code(), fmt::format("{}: {}", flag, status.message())));
}

}  // namespace nodemesh::cli
