// Parser throughput: nodemesh's HTTP/1 and HTTP/2 parsers on whole keep-alive connections,
// against bare llhttp (the same two llhttp instances, every callback empty) on the same
// bytes fed the same way. Run through bench/run.sh, which prints the ratios.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "llhttp.h"
#include "parsers/http1/parser.h"

namespace nodemesh::parsers {
namespace {

// One exchange of a connection: what the client sends, then what the server answers.
struct Exchange {
  std::string request;
  std::string response;
};

// A keep-alive connection of `count` typical API calls: a GET with browser-like headers
// answered with a JSON body of `body_bytes`.
std::vector<Exchange> Http1Connection(int count, size_t body_bytes) {
  std::vector<Exchange> exchanges;
  const std::string body(body_bytes, 'x');
  for (int i = 0; i < count; ++i) {
    Exchange exchange;
    exchange.request =
        "GET /api/vote?choice=emoji_" + std::to_string(i % 50) +
        " HTTP/1.1\r\nHost: web.emojivoto:8080\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
        "AppleWebKit/537.36\r\nAccept: application/json, text/plain, */*\r\nAccept-Language: "
        "en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate\r\nReferer: "
        "http://web.emojivoto:8080/\r\nCookie: session=4f2a9c0e7b1d; theme=dark\r\nConnection: "
        "keep-alive\r\n\r\n";
    exchange.response =
        "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 25 Nov 2026 17:51:27 GMT\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) +
        "\r\nConnection: keep-alive\r\nCache-Control: no-cache\r\nX-Request-Id: "
        "a5f1c3e2-77b0-4c1e-9d2f-0c8e6b1a4d93\r\n\r\n" + body;
    exchanges.push_back(std::move(exchange));
  }
  return exchanges;
}

size_t TotalBytes(const std::vector<Exchange>& exchanges) {
  size_t total = 0;
  for (const Exchange& e : exchanges) total += e.request.size() + e.response.size();
  return total;
}

class CountingSink final : public EventSink {
 public:
  void OnRequestStart(const RequestStart&) override { ++requests; }
  void OnResponseStart(const ResponseStart&) override {}
  void OnStreamEnd(const StreamEnd&) override { ++ends; }
  int64_t requests = 0;
  int64_t ends = 0;
};

void SetCounters(benchmark::State& state, const std::vector<Exchange>& exchanges) {
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * TotalBytes(exchanges)));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * exchanges.size()));
}

int EmptyCallback(llhttp_t*) { return 0; }
int EmptyDataCallback(llhttp_t*, const char*, size_t) { return 0; }

void BM_BareLlhttp(benchmark::State& state) {
  const auto exchanges = Http1Connection(100, static_cast<size_t>(state.range(0)));
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_message_begin = settings.on_message_complete = settings.on_headers_complete =
      settings.on_header_field_complete = settings.on_header_value_complete = EmptyCallback;
  settings.on_url = settings.on_status = settings.on_header_field = settings.on_header_value =
      settings.on_body = EmptyDataCallback;
  for (auto _ : state) {
    llhttp_t request, response;
    llhttp_init(&request, HTTP_REQUEST, &settings);
    llhttp_init(&response, HTTP_RESPONSE, &settings);
    for (const Exchange& e : exchanges) {
      if (llhttp_execute(&request, e.request.data(), e.request.size()) != HPE_OK ||
          llhttp_execute(&response, e.response.data(), e.response.size()) != HPE_OK) {
        state.SkipWithError("llhttp rejected the workload");
        return;
      }
    }
    benchmark::DoNotOptimize(request);
    benchmark::DoNotOptimize(response);
  }
  SetCounters(state, exchanges);
}

void BM_Http1Parser(benchmark::State& state) {
  const auto exchanges = Http1Connection(100, static_cast<size_t>(state.range(0)));
  const ParserConfig config;
  CountingSink sink;
  for (auto _ : state) {
    http1::Parser parser(config, sink);
    Timestamp now = 0;
    for (const Exchange& e : exchanges) {
      parser.Feed(Peer::kClient, e.request, ++now);
      parser.Feed(Peer::kServer, e.response, ++now);
    }
    if (parser.state() != ParserState::kParsing) {
      state.SkipWithError("the parser rejected the workload");
      return;
    }
  }
  if (sink.ends != sink.requests) state.SkipWithError("requests and ends do not pair");
  SetCounters(state, exchanges);
}

// Response body sizes: headers only, a small JSON document, a page.
BENCHMARK(BM_BareLlhttp)->Arg(0)->Arg(128)->Arg(4096);
BENCHMARK(BM_Http1Parser)->Arg(0)->Arg(128)->Arg(4096);

}  // namespace
}  // namespace nodemesh::parsers

BENCHMARK_MAIN();
