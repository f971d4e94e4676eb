// fmt support for the Abseil types the agent prints.
#pragma once

#include <fmt/format.h>

#include <string_view>

#include "absl/strings/string_view.h"

#ifndef ABSL_USES_STD_STRING_VIEW
// Debian's Abseil keeps its own string_view (absl::Status::message() returns one).
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  auto format(absl::string_view text, fmt::format_context& context) const {
    return fmt::formatter<std::string_view>::format(std::string_view(text.data(), text.size()),
                                                    context);
  }
};
#endif
