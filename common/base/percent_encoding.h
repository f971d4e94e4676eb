// Percent-encoding (RFC 3986, section 2.1) of what goes into a URL, and its decoding, for
// every reader and writer of URLs and of gRPC's grpc-message header.
#pragma once

#include <string>
#include <string_view>

namespace nodemesh {

// `text` with every byte but RFC 3986's unreserved characters (ALPHA, DIGIT, '-', '.', '_',
// '~') and those in `also_kept` written as %XX (uppercase hex digits). With nothing kept, the
// result is safe as a path segment and as a query parameter's name or value.
std::string PercentEncode(std::string_view text, std::string_view also_kept = {});

// %XX decoded, every other byte as it is. A '%' not followed by two hex digits stays as
// written rather than failing the whole text: gRPC asks this of grpc-message's readers, and
// the admin API reads its queries the same way. '+' stays a '+' (a path, grpc-message).
std::string PercentDecode(std::string_view text);

// A query parameter's name or value as an HTML form or curl's --data-urlencode writes it:
// PercentDecode, with '+' read as a space.
std::string QueryDecode(std::string_view text);

}  // namespace nodemesh
