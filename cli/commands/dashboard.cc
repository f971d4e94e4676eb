// meshctl dashboard: the page of views, graph and tap in the user's browser, served on a
// loopback address by this meshctl, every request of the page made with meshctl's own API
// path and credentials (cli/dashboard/server.h).
#include <fmt/format.h>

#include <memory>

#include "cli/commands/command.h"

#if NODEMESH_DASHBOARD
#include <arpa/inet.h>

#include "cli/dashboard/browser.h"
#include "cli/dashboard/server.h"
#include "common/base/version.h"
#include "common/http/server.h"
#endif

namespace nodemesh::cli {
namespace {

struct DashboardFlags {
  std::string link;  // a dashboard URL or its #fragment: the view to open
  uint16_t port = 0;
  std::string address = "127.0.0.1";
  bool no_browser = false;
};

#if NODEMESH_DASHBOARD

// The fragment (with its '#') of a dashboard URL or of "#/view?...", "" for none. Only the
// fragment is kept: a colleague's link carries their port and no token.
absl::StatusOr<std::string> FragmentOf(const std::string& link) {
  for (char c : link) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return absl::InvalidArgumentError(
          "the dashboard link has spaces or control characters: quote the URL as it was given");
    }
  }
  const size_t hash = link.find('#');
  if (hash == std::string::npos) {
    if (link.empty() || link.starts_with("http://") || link.starts_with("https://")) return "";
    return absl::InvalidArgumentError(
        fmt::format("'{}' is neither a dashboard URL nor a #fragment: e.g. meshctl dashboard "
                    "'#/graph?ns=emojivoto'",
                    link));
  }
  return link.substr(hash);
}

struct Listen {
  std::string address;  // for HttpServer::ListenLoopback
  std::string host;     // in the printed URL
};

// Only the addresses a browser's Host can name that RefuseForeignRequest accepts: anything
// else would either hand the user's cluster rights to the network, or refuse the page itself.
absl::StatusOr<Listen> ListenOn(const std::string& address, uint16_t port) {
  if (address == "127.0.0.1" || address == "localhost") {
    return Listen{fmt::format("{}:{}", address, port), address};
  }
  if (address == "::1" || address == "[::1]") return Listen{fmt::format("[::1]:{}", port), "[::1]"};
  return absl::InvalidArgumentError(fmt::format(
      "--address {}: the dashboard listens on a loopback address only (127.0.0.1, ::1 or "
      "localhost), since whoever reaches it acts with your cluster credentials",
      address));
}

int RunDashboard(const DashboardFlags& flags, const Invocation& invocation) {
  const Context& context = invocation.context;
  absl::StatusOr<std::string> fragment = FragmentOf(flags.link);
  if (!fragment.ok()) return invocation.Fail(fragment.status());
  absl::StatusOr<Listen> listen = ListenOn(flags.address, flags.port);
  if (!listen.ok()) return invocation.Fail(listen.status());
  const absl::StatusOr<ApiPath> path = invocation.Path();
  if (!path.ok()) return invocation.Fail(path.status());
  absl::StatusOr<std::unique_ptr<AggregatorApi>> client = invocation.Client();
  if (!client.ok()) return invocation.Fail(client.status());

  // One cheap call proves the path before anything is served: an aggregator or API server
  // that does not answer fails here, as `meshctl stat` would. A refusal does not: the page
  // shows it, with the binding that grants it.
  v1::ViewRequest probe;
  probe.set_kind(v1::ViewRequest::NAMESPACES);
  if (absl::Status reached = (*client)->View(probe).status();
      !reached.ok() && reached.code() != absl::StatusCode::kPermissionDenied) {
    return invocation.Fail(reached);
  }

  http::HttpServerLimits limits;
  limits.max_connections = 32;
  limits.max_handler_threads = 16;  // each open tap holds one
  limits.max_body_bytes = 1024;     // GET only
  absl::StatusOr<std::unique_ptr<http::HttpServer>> server =
      http::HttpServer::ListenLoopback(listen->address, limits);
  if (!server.ok()) return invocation.Fail(server.status());
  const std::string& bound = (*server)->address();
  const uint16_t port = static_cast<uint16_t>(std::stoi(bound.substr(bound.rfind(':') + 1)));
  const dashboard::Dashboard page(
      **client, {.token = dashboard::NewToken(),
                 .port = port,
                 .version = std::string(kVersion),
                 .api_path = path->kind == ApiPath::Kind::kAggregator
                                 ? fmt::format("the aggregator {}", (*client)->address())
                                 : (*client)->address()});
  http::HttpRoutes routes;
  routes.Handle("/", [&page](const http::HttpRequest& request) { return page.Serve(request); });
  (*server)->Serve(std::move(routes));
  (*server)->Start();

  const std::string url =
      fmt::format("http://{}:{}/?token={}{}", listen->host, port, page.token(), *fragment);
  context.out << "Dashboard: " << url << std::endl;
  if (!flags.no_browser) {
    if (const std::string problem = dashboard::OpenInBrowser(url, context.getenv);
        !problem.empty()) {
      context.err << fmt::format(
          "meshctl: note: xdg-open could not start ({}): open the address above yourself\n",
          problem);
    }
  }
  context.err << "meshctl: serving the dashboard until Ctrl-C\n";
  while (!context.cancel.WaitFor(std::chrono::hours(24))) {
  }
  // Open taps see their client gone and cancel their calls; then the handlers are joined.
  (*server)->Stop();
  return 0;
}

#else

int RunDashboard(const DashboardFlags&, const Invocation& invocation) {
  return invocation.Fail(absl::FailedPreconditionError(
      "this meshctl was built without the dashboard (NODEMESH_DASHBOARD=OFF): build it with "
      "the dashboard (the default) to use it"));
}

#endif

}  // namespace

void AddDashboardCommand(CLI::App& app, Invocation& invocation) {
  auto flags = std::make_shared<DashboardFlags>();
  CLI::App* command = app.add_subcommand(
      "dashboard",
      "Open the dashboard in your browser: namespaces, workloads, the call graph and a live "
      "tap, served by this meshctl on a loopback address with your credentials, until Ctrl-C");
  command->add_option("link", flags->link,
                      "A dashboard URL or its #fragment, to open that view (e.g. "
                      "'#/graph?ns=emojivoto&t=5m')");
  command->add_option("--port", flags->port, "Port to listen on (default: any free port)");
  command
      ->add_option("--address", flags->address,
                   "Loopback address to listen on: 127.0.0.1, ::1 or localhost")
      ->capture_default_str();
  command->add_flag("--no-browser", flags->no_browser,
                    "Only print the address; do not run xdg-open");
#if NODEMESH_DASHBOARD
  command->footer(fmt::format(
      "The page draws the call graph with elkjs {} (the Eclipse Layout Kernel's layered "
      "algorithm; {}; source: the npm package elkjs, github.com/kieler/elkjs), built into "
      "meshctl unmodified; its licence is served at /licenses/elkjs.txt.\n"
      "Examples:\n"
      "  meshctl dashboard\n"
      "  meshctl dashboard '#/graph?ns=emojivoto&t=5m' --no-browser",
      NODEMESH_ELKJS_VERSION, NODEMESH_ELKJS_LICENSE));
#endif
  invocation.RunWhenChosen(*command,
                           [flags, &invocation] { return RunDashboard(*flags, invocation); });
}

}  // namespace nodemesh::cli
