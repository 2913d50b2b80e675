// Stack budget for libpg_query's recursive passes: a depth bound from the scanner, the exact depth
// of a serialized tree, and a runner that moves deep work onto a thread with a large enough stack.
//
// Why: libpg_query 15-4.0 converts trees to protobuf, deparses and fingerprints them by plain C
// recursion without a stack-depth check, so "SELECT 1+1+...+1" with enough terms (a few hundred KB
// of text) overflows an 8 MB thread stack and kills the whole proxy. Postgres's bison parser itself
// is iterative, so the only dangerous part is after parsing; we bound the depth before that part
// runs and run it on a big private stack when the bound is large.
#pragma once

#include <cstddef>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "common/result.h"

namespace shardgate::parser::internal {

// Stack bytes per protobuf message level, measured with libpg_query 15-4.0 on x86-64 (peak use per
// level of depth: converting the raw tree to protobuf ~180 B, reading it into C++ ~120 B, deparsing
// ~960 B, fingerprinting ~70 B) with at least 2x headroom. Parse and fingerprint are charged per
// unit of depthBound(), which is itself at least 1.5x the real depth.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr size_t kSanitizerFactor = 4;  // instrumented frames are several times larger
#else
inline constexpr size_t kSanitizerFactor = 1;
#endif
inline constexpr size_t kParseStackPerLevel = 256 * kSanitizerFactor;
inline constexpr size_t kDeparseStackPerLevel = 2048 * kSanitizerFactor;
inline constexpr size_t kFingerprintStackPerLevel = 256 * kSanitizerFactor;

// Work needing at most this much stack runs on the caller's thread; it assumes callers run on
// threads with the usual 8 MB stack (glibc's default) and have used little of it.
inline constexpr size_t kInlineStackBytes = 1024 * 1024;
// The largest helper stack we ask for (virtual memory, touched only as deep as the work goes).
inline constexpr size_t kMaxHelperStackBytes = 512 * 1024 * 1024;

// Bound on the message depth of libpg_query's tree for `sql`, never below the real depth
// (parser_stack_budget_test checks this on a corpus of deep constructs). Computed from the tokens
// of Postgres's own scanner: inside one pair of brackets every nesting step costs at least one
// token that is not a literal or a comma, and every bracket pair adds a constant; statements do not
// add up. Iterative and linear in the input. Short statements get a cheaper, looser bound from byte
// counts. 0 when the parser is certain to fail before it builds a tree (brackets nest deeper than
// bison's stack allows).
size_t depthBound(const std::string& sql);

// Exact message depth of a serialized pg_query.ParseResult (ParseResult itself is level 1), walked
// iteratively with the descriptors. Fails with XX000 on malformed bytes, or with 54001 once the
// depth exceeds max_depth.
Result<size_t> serializedTreeDepth(std::string_view bytes, size_t max_depth);

// Exact message depth of libpg_query's JSON parse tree (pg_query_parse's output): its objects nest
// exactly like the protobuf messages. Used for statements with a large depthBound(): turning a deep
// tree into protobuf takes time quadratic in its depth (protobuf-c sizes every sub-message again at
// each level: ~25 s at 300k levels) while the JSON output is linear, so the depth is checked on the
// JSON before the protobuf conversion is allowed to run.
size_t jsonObjectDepth(std::string_view json);

// 54001 "stack depth limit exceeded", as Postgres reports over-deep statements; detail says why.
Error stackDepthExceeded(std::string detail);

// Runs fn(arg) on a new thread whose stack is stack_bytes large and waits for it; fails only if the
// thread cannot be started. fn must not throw.
Status runOnHelperThread(size_t stack_bytes, void (*fn)(void*), void* arg);

// Runs fn() where stack_bytes of stack are available: inline when that is little, else on a helper
// thread. Fails with 54001 above kMaxHelperStackBytes. An exception thrown by fn on the helper
// thread is rethrown on the caller's, as if fn had run inline.
template <typename Fn>
Status runWithStack(size_t stack_bytes, Fn&& fn) {
  if (stack_bytes <= kInlineStackBytes) {
    fn();
    return {};
  }
  if (stack_bytes > kMaxHelperStackBytes) {
    return stackDepthExceeded("it could need more than " +
                              std::to_string(kMaxHelperStackBytes >> 20) + " MB of parser stack");
  }
  struct Call {
    std::remove_reference_t<Fn>* fn;
    std::exception_ptr thrown;
  } call{&fn, nullptr};
  auto trampoline = [](void* arg) {
    auto* c = static_cast<Call*>(arg);
    try {
      (*c->fn)();
    } catch (...) {
      c->thrown = std::current_exception();
    }
  };
  Status started = runOnHelperThread(stack_bytes + kInlineStackBytes, trampoline, &call);
  if (call.thrown) std::rethrow_exception(call.thrown);
  return started;
}

}  // namespace shardgate::parser::internal
