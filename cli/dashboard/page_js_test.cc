// The dashboard page's pure scripts (web/js/state.js, api.js, commands.js, table.js's figures,
// graph.js's request), run in headless Chromium against the cases of testdata/cases.json,
// which meshctl's own code checks too: the window grammar against cli::ParseWindow, the
// figures against cli/views/format.cc, and every command the page prints through meshctl's
// flag parser. So the page and meshctl cannot drift apart unnoticed.
#include <catch2/catch.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cli/resource.h"
#include "cli/run_in_process.h"
#include "cli/views/format.h"
#include "test/lib/browser.h"
#include "test/lib/files.h"

namespace nodemesh::cli {
namespace {

using nlohmann::json;

const std::string kDashboardDir = std::string(NODEMESH_SOURCE_DIR) + "/cli/dashboard";

const json& Cases() {
  static const json cases =
      json::parse(nodemesh::testing::ReadFile(kDashboardDir + "/testdata/cases.json"));
  return cases;
}

// The value of `expression` evaluated on a page holding just the pure scripts.
json EvaluateOnPage(const std::string& expression) {
  const json steps = json::array({
      {{"open", "file://" + kDashboardDir + "/testdata/js_test.html"}},
      {{"wait", "window.nodemesh && window.nodemesh.commands"}, {"timeout", 20}},
      {{"eval", expression}},
  });
  const nodemesh::testing::BrowserRun run = nodemesh::testing::RunBrowser(steps);
  INFO(run.output);
  REQUIRE(run.ok);
  return run.Value(2);
}

// The JavaScript expression mapping `function` over the values of `list`.
std::string MapOver(const json& list, std::string_view function) {
  std::string expression = "(";
  expression += list.dump();
  expression += ").map(";
  expression += function;
  expression += ")";
  return expression;
}

// A command line as a POSIX shell splits it: words, and single-quoted parts (commands.js
// quotes nothing else).
std::vector<std::string> ShellWords(const std::string& line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\'') {
      const size_t end = line.find('\'', i + 1);
      REQUIRE(end != std::string::npos);
      word += line.substr(i + 1, end - i - 1);
      i = end;
      in_word = true;
    } else if (c == '\\' && i + 1 < line.size()) {
      word += line[++i];
      in_word = true;
    } else if (c == ' ') {
      if (in_word) words.push_back(word);
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (in_word) words.push_back(word);
  return words;
}

TEST_CASE("the page reads windows as meshctl -t does", "[dashboard]") {
  const json& windows = Cases()["windows"];
  json texts = json::array();
  for (const auto& [text, seconds] : windows["good"].items()) {
    INFO(text);
    REQUIRE(ParseWindow(text).ok());
    CHECK(*ParseWindow(text) == seconds.get<int64_t>());
    texts.push_back(text);
  }
  for (const json& bad : windows["bad"]) texts.push_back(bad);

  // Each text: its seconds, or the error's message.
  const json answers =
      EvaluateOnPage(MapOver(texts,
                             "t => { try { return nodemesh.state.parseWindow(t); } "
                             "catch (e) { return e.message; } }"));
  REQUIRE(answers.size() == texts.size());
  for (size_t i = 0; i < texts.size(); ++i) {
    const std::string text = texts[i];
    INFO(text);
    const absl::StatusOr<int64_t> window = ParseWindow(text);
    if (window.ok()) {
      CHECK(answers[i] == *window);
    } else {
      CHECK(answers[i] == std::string(window.status().message()));
    }
  }
}

TEST_CASE("the page shows figures as meshctl does", "[dashboard]") {
  const std::vector<double> rates = {0, 0.00001, 0.5, 0.851, 0.123125, 0.99999, 1};
  const std::vector<double> rps = {0, 0.001234, 0.05, 0.094, 0.095, 1, 10.25, 10.75, 1234.56};
  const std::vector<int64_t> latencies = {0,           499,         500,           1'900'000,
                                          999'999'499, 999'999'500, 12'345'678'901};
  const json answers = EvaluateOnPage(
      "(() => { const f = nodemesh.table.format; return [" + std::string(json(rates).dump()) +
      ".map(f.percent), " + std::string(json(rps).dump()) + ".map(f.rps), " +
      std::string(json(latencies).dump()) + ".map(f.latency)]; })()");
  for (size_t i = 0; i < rates.size(); ++i) CHECK(answers[0][i] == FormatSuccessRate(rates[i]));
  for (size_t i = 0; i < rps.size(); ++i) {
    std::string text = FormatRps(rps[i]);
    text.resize(text.size() - 3);  // the page's column says "RPS" once
    CHECK(answers[1][i] == text);
  }
  for (size_t i = 0; i < latencies.size(); ++i) {
    CHECK(answers[2][i] == FormatLatency(latencies[i]));
  }
}

TEST_CASE("fragments are read, printed and asked for as the cases say", "[dashboard]") {
  json fragments = json::array();
  for (const json& c : Cases()["fragments"]) fragments.push_back(c["fragment"]);
  // Each fragment: what the page makes of it, and whether the printed fragment reads back
  // as the same state.
  const json answers = EvaluateOnPage(MapOver(
      fragments,
      "f => { const s = nodemesh.state.parse(f); const printed = nodemesh.state.print(s); "
      "const again = nodemesh.state.parse(printed); "
      "return {print: printed, errors: s.errors, "
      "request: s.view === 'tap' ? (s.tap.target ? nodemesh.api.tapUrl(s) : null) "
      ": nodemesh.api.viewUrl(s), commands: nodemesh.commands.forView(s), "
      "roundTrip: JSON.stringify({...again, errors: []}) === JSON.stringify({...s, errors: []}) "
      "&& nodemesh.state.print(again) === printed}; }"));
  REQUIRE(answers.size() == fragments.size());
  for (size_t i = 0; i < fragments.size(); ++i) {
    const json& expected = Cases()["fragments"][i];
    INFO(expected["fragment"]);
    CHECK(answers[i]["print"] == expected["print"]);
    CHECK(answers[i]["errors"] == expected["errors"]);
    CHECK(answers[i]["request"] == expected["request"]);
    CHECK(answers[i]["commands"] == expected["commands"]);
    CHECK(answers[i]["roundTrip"] == true);
  }
}

TEST_CASE("every command the page shows is one meshctl takes", "[dashboard]") {
  // No aggregator listens on port 1: a command meshctl takes fails to reach it (exit 1),
  // one it does not take is refused before that (exit 2, a usage error).
  for (const json& c : Cases()["fragments"]) {
    for (const json& line : c["commands"]) {
      INFO(line);
      std::vector<std::string> words = ShellWords(line);
      REQUIRE(words.at(0) == "meshctl");
      words.erase(words.begin());
      words.insert(words.end(), {"--aggregator", "127.0.0.1:1"});
      const testing::Result result = testing::Run(words);
      INFO(result.err);
      CHECK(result.code == 1);
      CHECK(result.err.find("127.0.0.1:1") != std::string::npos);
    }
  }
  // The explain line of a pod, as the workload view shows it.
  const json explain = EvaluateOnPage("nodemesh.commands.explain('emojivoto/web-7c9d', 'node-2')");
  CHECK(explain == "meshctl shell --node node-2 -c 'explain emojivoto/web-7c9d'");
  std::vector<std::string> words = ShellWords(explain);
  words.erase(words.begin());
  words.insert(words.end(), {"--aggregator", "127.0.0.1:1"});
  const testing::Result result = testing::Run(words);
  INFO(result.err);
  CHECK(result.code == 1);
}

}  // namespace
}  // namespace nodemesh::cli
