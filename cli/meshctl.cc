#include "cli/meshctl.h"

#include <fmt/format.h>

#include <cctype>

#include "cli/commands/command.h"
#include "common/base/format.h"
#include "common/base/version.h"

namespace nodemesh::cli {
namespace {

// The subcommand the arguments name, for pointing at its help.
std::string CommandOf(const CLI::App& app, const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg.empty() || arg[0] == '-') continue;
    for (const CLI::App* command : app.get_subcommands({})) {
      if (command->check_name(arg)) return "meshctl " + arg;
    }
    break;
  }
  return "meshctl";
}

std::string CommandNames(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* command : app.get_subcommands({})) names.push_back(command->get_name());
  return fmt::format("{}", fmt::join(names, ", "));
}

// The first argument that is neither a flag nor a global flag's value.
std::optional<std::string> FirstWord(const std::vector<std::string>& args) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--aggregator" || args[i] == "--kubeconfig" || args[i] == "--context" ||
        args[i] == "--ca" || args[i] == "--cert" || args[i] == "--key" ||
        args[i] == "--tls-server-name") {
      ++i;
    } else if (!args[i].empty() && args[i][0] != '-') {
      return args[i];
    }
  }
  return std::nullopt;
}

// CLI11's messages, made into one line that ends with where to look.
std::string ParseErrorLine(const CLI::ParseError& error, const std::string& command) {
  std::string message = error.what();
  for (char& c : message) {
    if (c == '\n') c = ' ';
  }
  while (!message.empty() && message.back() == ' ') message.pop_back();
  // CLI11 writes sentences; within our line they continue it ("The following" -> "the").
  if (message.size() > 1 && std::isupper(static_cast<unsigned char>(message[0])) &&
      std::islower(static_cast<unsigned char>(message[1]))) {
    message[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(message[0])));
  }
  return fmt::format("meshctl: {}: see '{} --help'\n", message, command);
}

}  // namespace

int RunMeshctl(const std::vector<std::string>& args, const Context& context) {
  CLI::App app{"meshctl: see what the meshed pods do to each other, and mesh or unmesh them live",
               "meshctl"};
  app.set_version_flag("--version", fmt::format("meshctl version {}", nodemesh::kVersion));
  Invocation invocation{.context = context};
  app.add_option("--aggregator", invocation.aggregator,
                 "HOST:PORT of the nodemesh aggregator, to reach it directly (environment: "
                 "NODEMESH_AGGREGATOR); without either, through the Kubernetes API server of the "
                 "kubeconfig, else of the pod (in-cluster), else 127.0.0.1:8085");
  app.add_option("--kubeconfig", invocation.kubeconfig,
                 "Kubernetes: the kubeconfig file (default: KUBECONFIG, else ~/.kube/config)");
  app.add_option("--context", invocation.kube_context,
                 "Kubernetes: the kubeconfig context (default: its current-context)");
  // Credentials as kubectl takes its own: a flag, else the environment.
  const std::pair<std::string*, const char*> kTlsVariables[] = {
      {&invocation.tls.ca, "NODEMESH_CA"},
      {&invocation.tls.cert, "NODEMESH_CERT"},
      {&invocation.tls.key, "NODEMESH_KEY"}};
  for (const auto& [file, variable] : kTlsVariables) {
    if (std::optional<std::string> value = context.getenv(variable)) *file = *value;
  }
  app.add_option("--ca", invocation.tls.ca,
                 "PEM file of the CA that issued the aggregator's certificate: talk TLS "
                 "(environment: NODEMESH_CA); without it, plaintext to a loopback address only");
  app.add_option("--cert", invocation.tls.cert,
                 "PEM file of your client certificate, for an aggregator that asks for one "
                 "(environment: NODEMESH_CERT)");
  app.add_option("--key", invocation.tls.key,
                 "PEM file of that certificate's key (environment: NODEMESH_KEY)");
  app.add_option("--tls-server-name", invocation.tls.server_name,
                 "Name the aggregator's certificate must carry, when it is not --aggregator's "
                 "host (e.g. nodemesh-aggregator.nodemesh.svc through a port-forward)");
  // Global flags also after the command: `meshctl stat deploy --aggregator HOST:PORT`.
  app.fallthrough();
  app.require_subcommand(0, 1);
  AddStatCommand(app, invocation);
  AddTapCommand(app, invocation);
  AddTopCommand(app, invocation);
  AddRoutesCommand(app, invocation);
  AddEdgesCommand(app, invocation);
  AddInjectCommands(app, invocation);
  AddCheckCommand(app, invocation);
  AddVersionCommand(app, invocation);
  AddShellCommand(app, invocation);
  AddDashboardCommand(app, invocation);

  std::vector<std::string> reversed(args.rbegin(), args.rend());  // CLI11 takes them so
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& help) {
    return app.exit(help, context.out, context.err);
  } catch (const CLI::CallForAllHelp& help) {
    return app.exit(help, context.out, context.err);
  } catch (const CLI::CallForVersion& version) {
    return app.exit(version, context.out, context.err);
  } catch (const CLI::ParseError& error) {
    const std::string command = CommandOf(app, args);
    if (command == "meshctl" && dynamic_cast<const CLI::ExtrasError*>(&error) != nullptr) {
      if (std::optional<std::string> word = FirstWord(args)) {
        context.err << fmt::format("meshctl: unknown command '{}': use {} (see 'meshctl --help')\n",
                                   *word, CommandNames(app));
        return 2;
      }
    }
    context.err << ParseErrorLine(error, command);
    return 2;
  }
  if (!invocation.run) {
    context.err << fmt::format("meshctl: give a command: {} (see 'meshctl --help')\n",
                               CommandNames(app));
    return 2;
  }
  return invocation.run();
}

}  // namespace nodemesh::cli
