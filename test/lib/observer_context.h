// One worker's observer context over agent tables of its own, for tests and benchmarks of the
// observer: vote-bot-1 (its pod) calling web-1 at 10.77.0.12:8080, both in emojivoto. Header
// only; single-threaded, as a worker is.
#pragma once

#include <memory>
#include <string>

#include "agent/observer/observer.h"

namespace nodemesh::testing {

struct ObserverContextFixture {
  ObserverContextFixture() {
    directory.Replace({{web.ip, identities.Intern({"emojivoto", "web-1", "Deployment", "web", "web",
                                                   "node-2"})}});
    PodInfo info;
    info.namespace_name = "emojivoto";
    info.name = "vote-bot-1";
    pod = std::make_shared<const agent::PodView>(
        agent::PodView{info, identities.Intern({"emojivoto", "vote-bot-1", "Deployment", "vote-bot",
                                                "default", "node-1"})});
  }

  // An outbound connection of vote-bot-1 to web-1, connected.
  std::unique_ptr<agent::ConnectionObserver> Connect() {
    auto observer = std::make_unique<agent::ConnectionObserver>(
        context, pod, agent::Direction::kOutbound, web, web, [this] { return web; }, 0);
    observer->OnConnected(0);
    return observer;
  }

  const Endpoint web{*IpAddress::Parse("10.77.0.12"), 8080};
  metrics::IdentityTable identities;
  metrics::RouteTable routes{100};
  agent::PeerDirectory directory;
  agent::ServiceDirectory services;
  agent::TapSubscriptions tap;
  const std::string node = "node-1";
  const agent::ObserverOptions options;  // captures content-type and user-agent
  const agent::AgentTables tables{identities, routes, directory, services, tap, node};
  agent::ObserverContext context{tables, options, 0, 1};
  std::shared_ptr<const agent::PodView> pod;
};

}  // namespace nodemesh::testing
