// An agent's side of AgentService.Connect, for tests that need an aggregator fed without a
// real agent: says hello for a node with its pods, sends what a test hands it (pods, deltas,
// tap events) and keeps what the aggregator sends back, read on its own thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "nodemesh/v1/nodemesh.grpc.pb.h"

namespace nodemesh::testing {

// A pod of Deployment `deployment` on `node`, meshed and enrolled, as its agent reports it
// (its service account named as the Deployment).
inline v1::Pod MeshedPod(const std::string& namespace_name, const std::string& name,
                         const std::string& deployment, const std::string& node) {
  v1::Pod pod;
  v1::Identity& identity = *pod.mutable_identity();
  identity.set_namespace_(namespace_name);
  identity.set_pod(name);
  identity.set_owner_kind("Deployment");
  identity.set_owner_name(deployment);
  identity.set_service_account(deployment);
  identity.set_node(node);
  pod.set_meshed(true);
  pod.set_enrolled(true);
  return pod;
}

// An agent's side of AgentService.Connect, over `credentials` (plaintext by default).
class FakeAgent {
 public:
  FakeAgent(
      const std::string& address, const std::string& node, std::vector<v1::Pod> pods,
      const std::string& instance = "",
      std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials())
      : node_(node),
        stub_(v1::AgentService::NewStub(grpc::CreateChannel(address, std::move(credentials)))),
        stream_(stub_->Connect(&context_)) {
    v1::AgentMessage hello;
    hello.mutable_hello()->set_node(node);
    hello.mutable_hello()->set_version("test");
    hello.mutable_hello()->set_instance(instance);
    for (v1::Pod& pod : pods) *hello.mutable_hello()->add_pods() = std::move(pod);
    Send(hello);
    reader_ = std::thread([this] {
      v1::AggregatorMessage message;
      while (stream_->Read(&message)) {
        std::lock_guard lock(mutex_);
        // The cluster's pod list is kept apart: the tap tests count subscriptions.
        if (message.has_cluster_pods()) {
          cluster_pods_ = message.cluster_pods();
        } else {
          received_.push_back(message);
        }
        arrived_.notify_all();
      }
      std::lock_guard lock(mutex_);
      closed_ = true;
      arrived_.notify_all();
    });
  }
  ~FakeAgent() { Disconnect(); }

  const std::string& node() const { return node_; }

  void Send(const v1::AgentMessage& message) {
    std::lock_guard lock(write_mutex_);
    stream_->Write(message);
  }
  void SendPods(const std::vector<v1::Pod>& pods) {
    v1::AgentMessage message;
    for (const v1::Pod& pod : pods) *message.mutable_pods()->add_pods() = pod;
    Send(message);
  }
  void SendTap(const std::vector<v1::TapEvent>& events, uint64_t dropped = 0) {
    v1::AgentMessage message;
    for (const v1::TapEvent& event : events) *message.mutable_tap()->add_events() = event;
    message.mutable_tap()->set_dropped(dropped);
    Send(message);
  }

  // Returns how the call ended (CANCELLED, when it was still open).
  grpc::Status Disconnect() {
    if (disconnected_) return finished_;
    disconnected_ = true;
    {
      // A call the aggregator ended keeps its status; cancelling it now would replace it.
      std::lock_guard lock(mutex_);
      if (!closed_) context_.TryCancel();
    }
    reader_.join();
    finished_ = stream_->Finish();
    return finished_;
  }

  // Waits until the aggregator has sent `count` messages; returns them all.
  std::vector<v1::AggregatorMessage> WaitForMessages(
      size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    arrived_.wait_for(lock, timeout, [&] { return received_.size() >= count || closed_; });
    return received_;
  }
  std::vector<v1::AggregatorMessage> received() {
    std::lock_guard lock(mutex_);
    return received_;
  }
  // Waits until the last cluster pod list from the aggregator has `count` pods.
  std::optional<v1::PodList> WaitForClusterPods(
      size_t count, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    if (!arrived_.wait_for(lock, timeout, [&] {
          return static_cast<size_t>(cluster_pods_.pods_size()) == count || closed_;
        })) {
      return std::nullopt;
    }
    return cluster_pods_;
  }
  // The ids of the tap subscriptions received so far, and of those cancelled.
  std::set<uint64_t> subscribed() {
    std::lock_guard lock(mutex_);
    std::set<uint64_t> ids;
    for (const v1::AggregatorMessage& message : received_) {
      if (message.has_subscribe()) ids.insert(message.subscribe().id());
    }
    return ids;
  }
  std::set<uint64_t> cancelled() {
    std::lock_guard lock(mutex_);
    std::set<uint64_t> ids;
    for (const v1::AggregatorMessage& message : received_) {
      if (message.has_cancel()) ids.insert(message.cancel().id());
    }
    return ids;
  }
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return arrived_.wait_for(lock, timeout, [&] { return closed_; });
  }

 private:
  const std::string node_;
  grpc::ClientContext context_;
  std::unique_ptr<v1::AgentService::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::AgentMessage, v1::AggregatorMessage>> stream_;
  std::mutex write_mutex_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::vector<v1::AggregatorMessage> received_;
  v1::PodList cluster_pods_;
  bool closed_ = false;
  bool disconnected_ = false;
  grpc::Status finished_;
  std::thread reader_;
};

}  // namespace nodemesh::testing
