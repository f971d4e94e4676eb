// Parser throughput: nodemesh's HTTP/1 and HTTP/2 parsers on whole keep-alive connections.
// HTTP/1 is read against bare llhttp (the same two llhttp instances, every callback empty)
// on the same bytes fed the same way; HTTP/2 + gRPC against nghttp2's HPACK inflater alone
// decoding the same header blocks, the part of the work no HTTP/2 observer can skip. Run
// through bench/run.sh, which prints the ratios.
#include <benchmark/benchmark.h>
#include <nghttp2/nghttp2.h>

#include <string>
#include <vector>

#include "llhttp.h"
#include "parsers/http1/parser.h"
#include "parsers/http2/parser.h"

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
        "a5f1c3e2-77b0-4c1e-9d2f-0c8e6b1a4d93\r\n\r\n" +
        body;
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

// A fresh `ParserType` fed the whole connection per iteration, as the agent feeds it.
template <typename ParserType>
void FeedConnection(benchmark::State& state, const std::vector<Exchange>& exchanges) {
  const ParserConfig config;
  CountingSink sink;
  for (auto _ : state) {
    ParserType parser(config, sink);
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

void BM_Http1Parser(benchmark::State& state) {
  FeedConnection<http1::Parser>(state, Http1Connection(100, static_cast<size_t>(state.range(0))));
}

// --- HTTP/2 + gRPC -------------------------------------------------------------------

// One HTTP/2 connection of `count` unary gRPC calls (emojivoto's VotingService): the
// client's preface and SETTINGS, then per call a request header block, one length-prefixed
// message, the response header block, one message, and trailers. Header blocks are real
// HPACK from nghttp2's deflater, one per direction, so later calls hit the dynamic table.
struct Http2Workload {
  std::vector<Exchange> exchanges;         // bytes the client sends, then what the server answers
  std::vector<std::string> client_blocks;  // every header block, for the HPACK baseline
  std::vector<std::string> server_blocks;
};

std::string Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string frame;
  frame += static_cast<char>(payload.size() >> 16);
  frame += static_cast<char>(payload.size() >> 8);
  frame += static_cast<char>(payload.size());
  frame += static_cast<char>(type);
  frame += static_cast<char>(flags);
  for (int shift : {24, 16, 8, 0}) frame += static_cast<char>((stream >> shift) & 0xff);
  return frame + payload;
}

std::string Deflate(nghttp2_hd_deflater* deflater,
                    const std::vector<std::pair<std::string, std::string>>& headers) {
  std::vector<nghttp2_nv> nvs;
  for (const auto& [name, value] : headers) {
    nvs.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                   reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                   value.size(), NGHTTP2_NV_FLAG_NONE});
  }
  std::string out(nghttp2_hd_deflate_bound(deflater, nvs.data(), nvs.size()), '\0');
  const ssize_t n = nghttp2_hd_deflate_hd(deflater, reinterpret_cast<uint8_t*>(out.data()),
                                          out.size(), nvs.data(), nvs.size());
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

std::string GrpcMessage(size_t size) {
  std::string message(5, '\0');
  message[3] = static_cast<char>(size >> 8);
  message[4] = static_cast<char>(size);
  return message + std::string(size, 'm');
}

Http2Workload GrpcConnection(int count, size_t message_bytes) {
  constexpr uint8_t kData = 0, kHeaders = 1, kSettings = 4;
  constexpr uint8_t kEndStream = 1, kEndHeaders = 4;
  nghttp2_hd_deflater* client = nullptr;
  nghttp2_hd_deflater* server = nullptr;
  nghttp2_hd_deflate_new(&client, 4096);
  nghttp2_hd_deflate_new(&server, 4096);
  Http2Workload workload;
  for (int i = 0; i < count; ++i) {
    const auto stream = static_cast<uint32_t>(2 * i + 1);
    Exchange exchange;
    if (i == 0) {
      exchange.request =
          std::string("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") + Frame(kSettings, 0, 0, "");
      exchange.response = Frame(kSettings, 0, 0, "");
    }
    const std::string request_block =
        Deflate(client, {{":method", "POST"},
                         {":scheme", "http"},
                         {":path", "/emojivoto.v1.VotingService/VoteJoy"},
                         {":authority", "voting-svc:8080"},
                         {"content-type", "application/grpc"},
                         {"user-agent", "grpc-go/1.56.0"},
                         {"te", "trailers"},
                         {"grpc-timeout", "2S"}});
    const std::string response_block =
        Deflate(server, {{":status", "200"}, {"content-type", "application/grpc"}});
    const std::string trailers_block =
        Deflate(server, {{"grpc-status", "0"}, {"grpc-message", ""}});
    exchange.request += Frame(kHeaders, kEndHeaders, stream, request_block) +
                        Frame(kData, kEndStream, stream, GrpcMessage(message_bytes));
    exchange.response += Frame(kHeaders, kEndHeaders, stream, response_block) +
                         Frame(kData, 0, stream, GrpcMessage(message_bytes)) +
                         Frame(kHeaders, kEndHeaders | kEndStream, stream, trailers_block);
    workload.client_blocks.push_back(request_block);
    workload.server_blocks.push_back(response_block);
    workload.server_blocks.push_back(trailers_block);
    workload.exchanges.push_back(std::move(exchange));
  }
  nghttp2_hd_deflate_del(client);
  nghttp2_hd_deflate_del(server);
  return workload;
}

// Decodes every header block of one direction in order, as any observer must.
bool InflateAll(nghttp2_hd_inflater* inflater, const std::vector<std::string>& blocks) {
  for (const std::string& block : blocks) {
    auto* in = reinterpret_cast<const uint8_t*>(block.data());
    size_t left = block.size();
    for (;;) {
      nghttp2_nv nv;
      int flags = 0;
      const ssize_t used = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
      if (used < 0) return false;
      in += used;
      left -= static_cast<size_t>(used);
      if (flags & NGHTTP2_HD_INFLATE_FINAL) {
        nghttp2_hd_inflate_end_headers(inflater);
        break;
      }
      if ((flags & NGHTTP2_HD_INFLATE_EMIT) == 0 && left == 0) break;
    }
  }
  return true;
}

void BM_BareHpack(benchmark::State& state) {
  const Http2Workload workload = GrpcConnection(100, static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    nghttp2_hd_inflater* client = nullptr;
    nghttp2_hd_inflater* server = nullptr;
    nghttp2_hd_inflate_new(&client);
    nghttp2_hd_inflate_new(&server);
    const bool inflated =
        InflateAll(client, workload.client_blocks) && InflateAll(server, workload.server_blocks);
    nghttp2_hd_inflate_del(client);
    nghttp2_hd_inflate_del(server);
    if (!inflated) {
      state.SkipWithError("nghttp2 rejected the workload");
      return;
    }
  }
  SetCounters(state, workload.exchanges);
}

void BM_Http2GrpcParser(benchmark::State& state) {
  FeedConnection<http2::Parser>(state,
                                GrpcConnection(100, static_cast<size_t>(state.range(0))).exchanges);
}

// Response body sizes: headers only, a small JSON document, a page.
BENCHMARK(BM_BareLlhttp)->Arg(0)->Arg(128)->Arg(4096);
BENCHMARK(BM_Http1Parser)->Arg(0)->Arg(128)->Arg(4096);
// gRPC message sizes: a vote, a list, a large reply.
BENCHMARK(BM_BareHpack)->Arg(16)->Arg(1024)->Arg(16000);
BENCHMARK(BM_Http2GrpcParser)->Arg(16)->Arg(1024)->Arg(16000);

}  // namespace
}  // namespace nodemesh::parsers

BENCHMARK_MAIN();
