// Log line formats: shardgate's key=value events turned into JSON objects (general.log_format).
#pragma once

#include <string>
#include <string_view>

namespace shardgate {

// Appends `text` to `out` as the body of a JSON string (quotes, backslashes and control
// characters escaped; bytes that are not valid UTF-8 are replaced by U+FFFD).
void appendJsonEscaped(std::string& out, std::string_view text);

// Turns an event message written as `key=value key2="quoted value"` into JSON members
// (`"key":"value","key2":"quoted value"`, no braces), appended to `out`. Values made of digits
// only become JSON numbers. A quoted value ends at the quote that is followed by the end of the
// message or by ` key=`, so a value may itself contain quotes (error messages quote names).
// A message that is not in key=value form becomes one member "msg".
void appendEventAsJsonMembers(std::string& out, std::string_view message);

}  // namespace shardgate
