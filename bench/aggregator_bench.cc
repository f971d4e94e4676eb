// The ceiling of one aggregator: the real nodemesh-aggregator process fed by synthetic agents
// over its real AgentService (Hello with the node's pods, then one MetricsDelta a second with
// the series of its pods: peers, routes, latency histograms; at most 300 deltas unacknowledged,
// as agent/aggregator_client.cc keeps them), and asked through its real client Api as meshctl
// calls it (StatSummary, Edges, TopRoutes, View, Tap). Per binary it reports:
//   connect   time until every agent holds the whole cluster's pod list;
//   backfill  the retained seconds sent as fast as acknowledgements allow: deltas filed per
//             second and the aggregator's CPU time (/proc) per delta and per series;
//   steady    one delta a second per agent: resident memory, CPU, and memory per series per
//             retained second;
//   queries   p50/p99 wall time of each call over a 1 min and a 1 h window (or the retained
//             seconds, if fewer);
//   tap       with --tap-agents: time from a tap's start until every agent holds its
//             subscription, and events per second through the hub to the client.
//
// An hour is filled without waiting an hour: the aggregator runs with libfaketime preloaded,
// reading a clock offset from a file. Its history begins when it starts; once the agents are
// connected its clock is moved ahead by the retained seconds, and the agents send the deltas
// of the seconds in between, oldest first, every one within the store's retention (the store
// takes a delta up to retention_seconds old). Only forward: with the clock set back, gRPC's
// timed waits (deadlines on the real-time clock) spin. `--before BINARY` measures an older
// aggregator the same way in the same run, before this build's.
//
// Run through `bash bench/run.sh aggregator [flags]`; never a test. The bench's own agents
// share the machine with the aggregator: its CPU figures are the aggregator's own (/proc),
// its wall-clock figures are not.
#include <fmt/format.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "aggregator/test_util.h"
#include "nodemesh/v1/nodemesh.grpc.pb.h"
#include "test/lib/aggregator_process.h"
#include "test/lib/proc_stats.h"

namespace nodemesh {
namespace {

using aggregator::testing::DeltaBuilder;
using aggregator::testing::MakePod;
using testing::AggregatorProcess;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kFaketime = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";
// As agent/aggregator_client.cc: deltas kept unacknowledged before the oldest are given up.
constexpr uint64_t kMaxUnacked = 300;
constexpr int kAgentsPerChannel = 25;

struct Shape {
  int nodes = 100;
  int pods_per_node = 50;
  int routes = 2;
  int peers = 1;
  int namespaces = 20;
  int retained_seconds = 3600;
  int steady_seconds = 20;
};

struct Settings {
  Shape shape;
  std::string before;  // an older nodemesh-aggregator, measured first
  int queries = 20;    // calls of each query per window
  int tap_agents = 0;  // 0: no tap
  int tap_seconds = 5;
  int tap_events_per_agent = 20;  // a second
  size_t max_memory_mb = 2048;
  int connect_timeout_seconds = 900;
};

int TotalPods(const Shape& shape) { return shape.nodes * shape.pods_per_node; }
std::string NodeName(int node) { return fmt::format("node-{:05}", node); }
std::string NamespaceOf(const Shape& shape, int pod) {
  return fmt::format("ns{:03}", pod % shape.namespaces);
}

// Pod `pod` (0 .. TotalPods - 1) is the one pod of Deployment w<pod>, on node pod / pods.
v1::Pod PodOf(const Shape& shape, int pod) {
  const std::string workload = fmt::format("w{:06}", pod);
  return MakePod(NamespaceOf(shape, pod), workload + "-0", "Deployment", workload,
                 NodeName(pod / shape.pods_per_node), true);
}

// The k-th pod `pod` calls: on another node when there is one.
int CalleeOf(const Shape& shape, int pod, int k) {
  return (pod + (k + 1) * shape.pods_per_node + k) % TotalPods(shape);
}
int CallerOf(const Shape& shape, int pod, int k) {
  const int total = TotalPods(shape);
  return ((pod - (k + 1) * shape.pods_per_node - k) % total + total) % total;
}

// One second of a node, as its agent reports it: each pod's calls to its peers (OUTBOUND) and
// its callers' calls to it (INBOUND), per route, ten responses each over a spread of
// latencies, and a TCP series per pair and side.
v1::MetricsDelta NodeDelta(const Shape& shape, int node) {
  DeltaBuilder delta(0);
  const auto pair = [&](int caller, int callee, v1::Direction direction) {
    const v1::Identity source = PodOf(shape, caller).identity();
    const v1::Identity destination = PodOf(shape, callee).identity();
    for (int route = 0; route < shape.routes; ++route) {
      std::vector<int64_t> latencies;
      for (int i = 0; i < 10; ++i) latencies.push_back(1'000'000LL * (1 + i * (route + 1)));
      delta.ResponsesWithLatencies(source, destination, direction, fmt::format("/api/r{}", route),
                                   latencies);
    }
    delta.Tcp(source, destination, direction, 2, 1000, 5000);
  };
  for (int pod = node * shape.pods_per_node; pod < (node + 1) * shape.pods_per_node; ++pod) {
    for (int k = 0; k < shape.peers; ++k) {
      if (CalleeOf(shape, pod, k) != pod) pair(pod, CalleeOf(shape, pod, k), v1::OUTBOUND);
      if (CallerOf(shape, pod, k) != pod) pair(CallerOf(shape, pod, k), pod, v1::INBOUND);
    }
  }
  return delta.delta();
}

size_t SeriesOf(const v1::MetricsDelta& delta) {
  return static_cast<size_t>(delta.responses_size() + delta.tcp_size());
}

// An agent's side of AgentService.Connect: one stream, a reader thread that notes
// acknowledgements, the cluster's pod list and tap subscriptions.
class SyntheticAgent {
 public:
  SyntheticAgent(const std::shared_ptr<grpc::Channel>& channel, const std::string& node,
                 const std::vector<v1::Pod>& pods, v1::MetricsDelta delta)
      : node_(node),
        delta_(std::move(delta)),
        stub_(v1::AgentService::NewStub(channel)),
        stream_(stub_->Connect(&context_)) {
    v1::AgentMessage hello;
    hello.mutable_hello()->set_node(node);
    hello.mutable_hello()->set_version("bench");
    hello.mutable_hello()->set_instance(node);
    for (const v1::Pod& pod : pods) *hello.mutable_hello()->add_pods() = pod;
    stream_->Write(hello);
    reader_ = std::thread([this] { Read(); });
  }
  ~SyntheticAgent() {
    context_.TryCancel();
    reader_.join();
    stream_->Finish();
  }

  // Sends the delta of `second`, numbered, once fewer than kMaxUnacked are unacknowledged.
  bool SendDelta(int64_t second) {
    {
      std::unique_lock lock(mutex_);
      changed_.wait(lock, [&] { return closed_ || sequence_ - acked_ < kMaxUnacked; });
      if (closed_) return false;
    }
    delta_.set_unix_seconds(second);
    delta_.set_sequence(++sequence_);
    v1::AgentMessage message;
    // Lent to the message for the write, not copied: a node's second is tens of KiB.
    message.set_allocated_metrics(&delta_);
    const bool written = stream_->Write(message);
    static_cast<void>(message.release_metrics());
    return written;
  }
  bool WaitAcked(SteadyClock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return changed_.wait_until(lock, deadline, [&] { return closed_ || acked_ == sequence_; }) &&
           !closed_;
  }
  bool WaitClusterPods(int count, SteadyClock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return changed_.wait_until(lock, deadline, [&] { return closed_ || cluster_pods_ == count; }) &&
           !closed_;
  }
  // When the agent received its first subscription, and its id; nullopt before.
  std::optional<std::pair<SteadyClock::time_point, uint64_t>> WaitSubscribed(
      SteadyClock::time_point deadline) {
    std::unique_lock lock(mutex_);
    changed_.wait_until(lock, deadline, [&] { return closed_ || subscription_.has_value(); });
    return subscription_;
  }
  void SendTap(uint64_t subscription, int events, int serial) {
    v1::AgentMessage message;
    for (int i = 0; i < events; ++i) {
      v1::TapEvent& event = *message.mutable_tap()->add_events();
      event.set_subscription(subscription);
      event.set_request_id(fmt::format("{}:{}:{}", node_, serial, i));
      *event.mutable_source() = delta_.identities(0);
      *event.mutable_destination() = delta_.identities(1);
      event.set_direction(v1::OUTBOUND);
      event.mutable_request()->set_method("GET");
      event.mutable_request()->set_path("/api/r0");
    }
    stream_->Write(message);
  }
  const std::string& node() const { return node_; }
  size_t series() const { return SeriesOf(delta_); }

 private:
  void Read() {
    v1::AggregatorMessage message;
    while (stream_->Read(&message)) {
      std::lock_guard lock(mutex_);
      if (message.has_metrics_ack()) acked_ = std::max(acked_, message.metrics_ack().sequence());
      if (message.has_cluster_pods()) cluster_pods_ = message.cluster_pods().pods_size();
      if (message.has_subscribe() && !subscription_) {
        subscription_.emplace(SteadyClock::now(), message.subscribe().id());
      }
      changed_.notify_all();
    }
    std::lock_guard lock(mutex_);
    closed_ = true;
    changed_.notify_all();
  }

  const std::string node_;
  v1::MetricsDelta delta_;  // the node's second, stamped anew for each send
  grpc::ClientContext context_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::AggregatorMessage>> stream_;
  uint64_t sequence_ = 0;  // the sender's; read under mutex_ by the waits
  std::mutex mutex_;
  std::condition_variable changed_;
  uint64_t acked_ = 0;
  int cluster_pods_ = 0;
  std::optional<std::pair<SteadyClock::time_point, uint64_t>> subscription_;
  bool closed_ = false;
  std::thread reader_;
};

// Every node's agent, over a few HTTP/2 connections, and the senders that drive them.
class Fleet {
 public:
  Fleet(const std::string& address, const Shape& shape) {
    for (int node = 0; node < shape.nodes; ++node) {
      if (node % kAgentsPerChannel == 0) {
        grpc::ChannelArguments args;
        args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
        args.SetMaxReceiveMessageSize(-1);
        channels_.push_back(
            grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
      }
      std::vector<v1::Pod> pods;
      for (int pod = node * shape.pods_per_node; pod < (node + 1) * shape.pods_per_node; ++pod) {
        pods.push_back(PodOf(shape, pod));
      }
      agents_.push_back(std::make_unique<SyntheticAgent>(channels_.back(), NodeName(node), pods,
                                                         NodeDelta(shape, node)));
    }
  }
  std::vector<std::unique_ptr<SyntheticAgent>>& agents() { return agents_; }
  size_t SeriesPerSecond() const {
    size_t series = 0;
    for (const auto& agent : agents_) series += agent->series();
    return series;
  }

  // Each agent sends the seconds [first, last], oldest first, on two sender threads.
  void SendSeconds(int64_t first, int64_t last) {
    std::vector<std::thread> senders;
    for (size_t part = 0; part < 2; ++part) {
      senders.emplace_back([&, part] {
        for (int64_t second = first; second <= last; ++second) {
          for (size_t i = part; i < agents_.size(); i += 2) agents_[i]->SendDelta(second);
        }
      });
    }
    for (std::thread& sender : senders) sender.join();
  }
  bool WaitAcked(std::chrono::seconds timeout) {
    const auto deadline = SteadyClock::now() + timeout;
    for (const auto& agent : agents_) {
      if (!agent->WaitAcked(deadline)) return false;
    }
    return true;
  }

 private:
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  std::vector<std::unique_ptr<SyntheticAgent>> agents_;
};

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double SecondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// The p-th quantile of `values` (not empty), nearest rank.
double Quantile(std::vector<double> values, double p) {
  std::sort(values.begin(), values.end());
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(values.size())));
  return values[std::min(values.size() - 1, rank == 0 ? 0 : rank - 1)];
}

struct AggregatorUnderTest {
  AggregatorUnderTest(const std::string& binary, const Settings& settings)
      : clock_file(std::filesystem::temp_directory_path() /
                   fmt::format("aggregator-bench-clock-{}", getpid())) {
    SetClockOffset(0);
    process.emplace(testing::AggregatorProcessOptions{
        .binary = binary,
        .extra_args =
            {
                "--max-memory-mb",
                std::to_string(settings.max_memory_mb),
                "--max-nodes",
                std::to_string(std::max(settings.shape.nodes, settings.tap_agents) + 10),
            },
        .env = {{"LD_PRELOAD", kFaketime},
                {"FAKETIME_TIMESTAMP_FILE", clock_file.string()},
                {"FAKETIME_CACHE_DURATION", "1"},
                {"FAKETIME_DONT_FAKE_MONOTONIC", "1"}},
        .ready_timeout = std::chrono::seconds(30)});
    api = v1::Api::NewStub(
        grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials()));
  }
  ~AggregatorUnderTest() {
    process.reset();
    std::filesystem::remove(clock_file);
  }
  void SetClockOffset(int seconds) {
    std::ofstream(clock_file) << fmt::format("{:+d}", seconds) << "\n";
  }
  // Moves its clock `seconds` ahead and waits until it has read the file again.
  void MoveClockAhead(int seconds) {
    SetClockOffset(seconds);
    offset = seconds;
    const auto deadline = SteadyClock::now() + std::chrono::seconds(10);
    while (SteadyClock::now() < deadline) {
      grpc::ClientContext context;
      v1::ViewRequest request;
      request.set_kind(v1::ViewRequest::NAMESPACES);
      v1::ViewResponse response;
      if (api->View(&context, request, &response).ok() && response.unix_seconds() >= Now() - 2) {
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    throw std::runtime_error("the aggregator's clock did not move (is libfaketime installed?)");
  }
  pid_t pid() { return process->process().pid(); }
  // The aggregator's present second.
  int64_t Now() const { return UnixNow() + offset; }

  std::filesystem::path clock_file;
  int offset = 0;
  std::optional<AggregatorProcess> process;
  std::unique_ptr<v1::Api::Stub> api;
};

v1::Resource AllDeployments() {
  v1::Resource resource;
  resource.set_type("deployment");
  return resource;
}
v1::Resource Namespace(const std::string& name) {
  v1::Resource resource;
  resource.set_type("namespace");
  resource.set_namespace_(name);
  resource.set_name(name);
  return resource;
}

// The calls meshctl makes for stat, edges, routes, top and the dashboard's workloads view.
struct Query {
  std::string name;
  std::function<grpc::Status(v1::Api::Stub&, grpc::ClientContext*, int64_t window)> call;
};

std::vector<Query> Queries(const Shape& shape) {
  std::vector<std::string> namespaces;
  for (int i = 0; i < std::min(shape.namespaces, TotalPods(shape)); ++i) {
    namespaces.push_back(NamespaceOf(shape, i));
  }
  return {
      {"stat deploy -A",
       [](v1::Api::Stub& api, grpc::ClientContext* context, int64_t window) {
         v1::StatSummaryRequest request;
         *request.mutable_selector() = AllDeployments();
         request.set_window_seconds(window);
         v1::StatSummaryResponse response;
         return api.StatSummary(context, request, &response);
       }},
      {"edges deploy -A",
       [](v1::Api::Stub& api, grpc::ClientContext* context, int64_t window) {
         v1::EdgesRequest request;
         *request.mutable_selector() = AllDeployments();
         request.set_window_seconds(window);
         v1::EdgesResponse response;
         return api.Edges(context, request, &response);
       }},
      {"routes ns",
       [namespaces](v1::Api::Stub& api, grpc::ClientContext* context, int64_t window) {
         v1::TopRoutesRequest request;
         *request.mutable_selector() = Namespace(namespaces[0]);
         request.set_window_seconds(window);
         v1::TopRoutesResponse response;
         return api.TopRoutes(context, request, &response);
       }},
      {"top ns (20)",
       [namespaces](v1::Api::Stub& api, grpc::ClientContext* context, int64_t window) {
         v1::TopRoutesRequest request;
         *request.mutable_selector() = Namespace(namespaces[0]);
         request.set_window_seconds(window);
         request.set_limit(20);
         v1::TopRoutesResponse response;
         return api.TopRoutes(context, request, &response);
       }},
      {"view workloads",
       [namespaces](v1::Api::Stub& api, grpc::ClientContext* context, int64_t window) {
         v1::ViewRequest request;
         request.set_kind(v1::ViewRequest::WORKLOADS);
         for (const std::string& name : namespaces) request.add_namespaces(name);
         request.set_type("deployment");
         request.set_window_seconds(window);
         v1::ViewResponse response;
         return api.View(context, request, &response);
       }},
  };
}

// Sends one delta a second per agent (the second just ended) until `stop`.
class LiveSender {
 public:
  LiveSender(Fleet& fleet, const AggregatorUnderTest& aggregator)
      : thread_([this, &fleet, &aggregator] {
          int64_t next = aggregator.Now();
          std::unique_lock lock(mutex_);
          while (!stop_) {
            lock.unlock();
            const int64_t now = aggregator.Now();
            if (now >= next) {
              fleet.SendSeconds(now - 1, now - 1);
              next = now + 1;
            }
            lock.lock();
            wake_.wait_for(lock, std::chrono::milliseconds(50));
          }
        }) {}
  ~LiveSender() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

void MeasureQueries(AggregatorUnderTest& aggregator, const Settings& settings) {
  const int64_t long_window = std::min(3600, settings.shape.retained_seconds);
  for (const Query& query : Queries(settings.shape)) {
    for (const int64_t window : {int64_t{60}, long_window}) {
      std::vector<double> millis;
      for (int i = 0; i < settings.queries; ++i) {
        grpc::ClientContext context;
        const auto start = SteadyClock::now();
        const grpc::Status status = query.call(*aggregator.api, &context, window);
        millis.push_back(SecondsSince(start) * 1e3);
        if (!status.ok()) {
          throw std::runtime_error(
              fmt::format("{} over {} s failed: {}", query.name, window, status.error_message()));
        }
      }
      std::printf("  query %-16s %5lld s window: p50 %8.2f ms  p99 %8.2f ms\n", query.name.c_str(),
                  static_cast<long long>(window), Quantile(millis, 0.5), Quantile(millis, 0.99));
    }
  }
}

void MeasureTap(const std::string& binary, const Settings& settings) {
  // Agents with one pod each, all in one namespace: the tap's target spans every node.
  Shape shape{.nodes = settings.tap_agents,
              .pods_per_node = 1,
              .routes = 1,
              .peers = 1,
              .namespaces = 1,
              .retained_seconds = 0};
  Settings tap_settings = settings;
  tap_settings.shape = shape;
  AggregatorUnderTest aggregator(binary, tap_settings);
  const auto connecting = SteadyClock::now();
  Fleet fleet(aggregator.process->address(), shape);
  const auto deadline = connecting + std::chrono::seconds(settings.connect_timeout_seconds);
  for (const auto& agent : fleet.agents()) {
    if (!agent->WaitClusterPods(TotalPods(shape), deadline)) {
      throw std::runtime_error("tap: not every agent got the cluster's pods in time");
    }
  }
  std::printf("  tap: %d agents connected and held the cluster's pods in %.1f s\n",
              settings.tap_agents, SecondsSince(connecting));
  v1::TapRequestSpec spec;
  *spec.mutable_target() = Namespace(NamespaceOf(shape, 0));
  spec.set_max_rps(1e9);  // the hub, not the rate limit, is measured
  grpc::ClientContext context;
  const auto started = SteadyClock::now();
  std::unique_ptr<grpc::ClientReader<v1::TapStreamMessage>> stream =
      aggregator.api->Tap(&context, spec);
  std::atomic<uint64_t> events{0}, dropped{0};
  std::thread reader([&] {
    v1::TapStreamMessage message;
    while (stream->Read(&message)) {
      if (message.has_event()) events.fetch_add(1);
      if (message.has_drops()) {
        dropped.fetch_add(message.drops().agent_dropped() + message.drops().stream_dropped());
      }
    }
  });
  std::vector<uint64_t> subscriptions;
  double slowest = 0;
  for (const auto& agent : fleet.agents()) {
    const auto subscribed = agent->WaitSubscribed(started + std::chrono::seconds(60));
    if (!subscribed) throw std::runtime_error("tap: an agent got no subscription in 60 s");
    slowest = std::max(slowest, std::chrono::duration<double>(subscribed->first - started).count());
    subscriptions.push_back(subscribed->second);
  }
  std::printf("  tap: %d agents subscribed %.1f ms after the tap started\n", settings.tap_agents,
              slowest * 1e3);
  // Each agent sends its events in ten batches a second.
  const uint64_t events_before = events.load();
  const auto sending = SteadyClock::now();
  const int batch = std::max(1, settings.tap_events_per_agent / 10);
  for (int tick = 0; tick < settings.tap_seconds * 10; ++tick) {
    for (size_t i = 0; i < fleet.agents().size(); ++i) {
      fleet.agents()[i]->SendTap(subscriptions[i], batch, tick);
    }
    std::this_thread::sleep_until(sending + std::chrono::milliseconds(100 * (tick + 1)));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // the last batches arrive
  const double seconds = SecondsSince(sending);
  const uint64_t sent = uint64_t(settings.tap_seconds) * 10 * batch * fleet.agents().size();
  std::printf("  tap: %llu events sent, %llu received (%.0f /s), %llu reported dropped\n",
              static_cast<unsigned long long>(sent),
              static_cast<unsigned long long>(events.load() - events_before),
              double(events.load() - events_before) / seconds,
              static_cast<unsigned long long>(dropped.load()));
  context.TryCancel();
  reader.join();
}

void Measure(const std::string& label, const std::string& binary, const Settings& settings) {
  const Shape& shape = settings.shape;
  std::printf(
      "%s: %d nodes x %d pods (%d workloads), %d peers and %d routes per pod, %d s "
      "retained, --max-memory-mb %zu\n",
      label.c_str(), shape.nodes, shape.pods_per_node, TotalPods(shape), shape.peers, shape.routes,
      shape.retained_seconds, settings.max_memory_mb);
  std::fflush(stdout);
  AggregatorUnderTest aggregator(binary, settings);
  const pid_t pid = aggregator.pid();
  const uint64_t idle_kib = testing::StatusKiB(pid, "VmRSS");

  const auto connecting = SteadyClock::now();
  const double connect_cpu = testing::ProcessCpuSeconds(pid);
  Fleet fleet(aggregator.process->address(), shape);
  const auto deadline = connecting + std::chrono::seconds(settings.connect_timeout_seconds);
  for (const auto& agent : fleet.agents()) {
    if (!agent->WaitClusterPods(TotalPods(shape), deadline)) {
      throw std::runtime_error(
          fmt::format("{} did not send every agent the cluster's {} pods "
                      "within {} s",
                      agent->node(), TotalPods(shape), settings.connect_timeout_seconds));
    }
  }
  const uint64_t connected_kib = testing::StatusKiB(pid, "VmRSS");
  std::printf(
      "  connect: %.1f s until every agent held the cluster's pods (aggregator CPU %.1f "
      "s); RSS %.0f MiB idle, %.0f MiB connected\n",
      SecondsSince(connecting), testing::ProcessCpuSeconds(pid) - connect_cpu, idle_kib / 1024.0,
      connected_kib / 1024.0);
  std::fflush(stdout);

  aggregator.MoveClockAhead(shape.retained_seconds);
  const size_t series = fleet.SeriesPerSecond();
  const int64_t now = aggregator.Now();
  const int64_t first = now - shape.retained_seconds + 2;
  const double backfill_cpu = testing::ProcessCpuSeconds(pid);
  const auto backfilling = SteadyClock::now();
  fleet.SendSeconds(first, now - 1);
  if (!fleet.WaitAcked(std::chrono::seconds(600))) {
    throw std::runtime_error("the backfilled deltas were not all acknowledged");
  }
  const double backfill_seconds = SecondsSince(backfilling);
  const double cpu = testing::ProcessCpuSeconds(pid) - backfill_cpu;
  const double deltas = double(now - first) * shape.nodes;
  std::printf(
      "  backfill: %.0f deltas (%zu series a second) in %.1f s: %.0f deltas/s; "
      "aggregator CPU %.1f s: %.1f us per delta, %.3f us per series, %.0f deltas/s per "
      "core\n",
      deltas, series, backfill_seconds, deltas / backfill_seconds, cpu, cpu / deltas * 1e6,
      cpu / (deltas * double(series) / shape.nodes) * 1e6, deltas / cpu);
  std::fflush(stdout);

  {
    LiveSender live(fleet, aggregator);
    const double steady_cpu = testing::ProcessCpuSeconds(pid);
    std::this_thread::sleep_for(std::chrono::seconds(shape.steady_seconds));
    const uint64_t rss_kib = testing::StatusKiB(pid, "VmRSS");
    const double held = std::min<double>(shape.retained_seconds, 3600);
    std::printf(
        "  steady: RSS %.0f MiB (peak %.0f MiB); aggregator CPU %.1f %% of a core; %.1f "
        "bytes per series per retained second (RSS over the connected RSS / %zu series "
        "/ %.0f s)\n",
        rss_kib / 1024.0, testing::StatusKiB(pid, "VmHWM") / 1024.0,
        (testing::ProcessCpuSeconds(pid) - steady_cpu) / shape.steady_seconds * 100,
        double(rss_kib - connected_kib) * 1024 / double(series) / held, series, held);
    std::fflush(stdout);
    MeasureQueries(aggregator, settings);
  }
  const std::string log = aggregator.process->output();
  if (log.find("memory budget of") != std::string::npos) {
    std::printf("  the memory budget was reached: oldest seconds dropped early\n");
  }
  if (log.find("maximum of") != std::string::npos) {
    std::printf("  series were dropped at the per-second or table limits\n");
  }
  if (settings.tap_agents > 0) MeasureTap(binary, settings);
}

}  // namespace
}  // namespace nodemesh

int main(int argc, char** argv) {
  CLI::App app{"The ceiling of one aggregator, through its real gRPC APIs"};
  nodemesh::Settings settings;
  nodemesh::Shape& shape = settings.shape;
  app.add_option("--nodes", shape.nodes, "synthetic agents, one per node")
      ->check(CLI::Range(1, 100'000));
  app.add_option("--pods-per-node", shape.pods_per_node, "pods per node, each its own workload")
      ->check(CLI::Range(1, 10'000));
  app.add_option("--routes", shape.routes, "routes per workload")->check(CLI::Range(1, 1'000));
  app.add_option("--peers", shape.peers, "pods each pod calls")->check(CLI::Range(0, 1'000));
  app.add_option("--namespaces", shape.namespaces, "namespaces the pods are spread over")
      ->check(CLI::Range(1, 10'000));
  app.add_option("--retained-seconds", shape.retained_seconds,
                 "seconds of history sent (stamped in the past) before measuring")
      ->check(CLI::Range(60, 3600));
  app.add_option("--steady-seconds", shape.steady_seconds, "seconds of live deltas measured")
      ->check(CLI::Range(1, 3600));
  app.add_option("--queries", settings.queries, "calls of each query per window")
      ->check(CLI::Range(1, 10'000));
  app.add_option("--tap-agents", settings.tap_agents, "agents of the tap fan-out (0: none)")
      ->check(CLI::Range(0, 100'000));
  app.add_option("--tap-events-per-agent", settings.tap_events_per_agent,
                 "tap events each agent sends a second")
      ->check(CLI::Range(10, 100'000));
  app.add_option("--tap-seconds", settings.tap_seconds, "seconds of tap events")
      ->check(CLI::Range(1, 600));
  app.add_option("--max-memory-mb", settings.max_memory_mb, "the aggregator's memory budget");
  app.add_option("--connect-timeout", settings.connect_timeout_seconds,
                 "seconds allowed for every agent to connect and hold the cluster's pods");
  app.add_option("--before", settings.before, "an older nodemesh-aggregator, measured first");
  CLI11_PARSE(app, argc, argv);
  if (!std::filesystem::exists(nodemesh::kFaketime)) {
    std::fprintf(stderr, "%s is missing: install Debian's faketime (test/install-deps.sh)\n",
                 nodemesh::kFaketime);
    return 2;
  }
  try {
    if (!settings.before.empty()) nodemesh::Measure("before", settings.before, settings);
    nodemesh::Measure("this build", NODEMESH_AGGREGATOR_BINARY, settings);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "FAIL %s\n", error.what());
    return 1;
  }
  return 0;
}
