// An enrolled pod as the agent holds it: the id the kernel maps know it by, its network
// namespace held open (the workers make its upstream sockets and listeners there), and its
// latest view (pod_view.h). Made by its enrolment (enrolment.h) and shared with the workers'
// listeners in the pod; a connection keeps only the view it started with.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "agent/kernel/system.h"
#include "agent/pod_view.h"

namespace nodemesh::agent {

class PodRuntime {
 public:
  PodRuntime(uint32_t id, PodView view, Netns netns)
      : id_(id),
        netns_(std::move(netns)),
        view_(std::make_shared<const PodView>(std::move(view))) {}

  uint32_t id() const { return id_; }
  const Netns& netns() const { return netns_; }
  // Identity fields (labels, owner, ...) may change while connections run: readers get a
  // consistent snapshot.
  std::shared_ptr<const PodView> view() const { return view_.load(std::memory_order_acquire); }
  void set_view(PodView view) {
    view_.store(std::make_shared<const PodView>(std::move(view)), std::memory_order_release);
  }

 private:
  const uint32_t id_;
  const Netns netns_;
  std::atomic<std::shared_ptr<const PodView>> view_;
};

}  // namespace nodemesh::agent
