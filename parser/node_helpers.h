// Small helpers for reading libpg_query's protobuf tree: names, constants, node kinds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pg_query.pb.h"

namespace shardgate::parser {

using NodeList = google::protobuf::RepeatedPtrField<pg_query::Node>;

// The text of a String node (names in ColumnRef.fields, FuncCall.funcname, A_Expr.name, ...).
std::optional<std::string_view> stringValue(const pg_query::Node& node);

// "schema.table", or "table" without a schema ("catalog.schema.table" if a catalog was written).
// Names are as Postgres's parser left them: unquoted ones folded to lower case, no quotes added.
std::string qualifiedName(const pg_query::RangeVar& rv);

// A name list joined with dots: "pg_catalog.count", "t.id", "t.*" (A_Star prints as "*"). Elements
// that are neither String nor A_Star print as their kind, e.g. "(A_Indices)".
std::string dottedName(const NodeList& names);

// The last element of a name list when it is a String: the unqualified function, column or operator
// name ("count" for pg_catalog.count, "=" for OPERATOR(pg_catalog.=)).
std::optional<std::string_view> lastName(const NodeList& names);

// The node's kind for messages: "SelectStmt", "A_Expr", "RangeVar", ...; "(empty)" if unset.
const char* nodeKindName(const pg_query::Node& node);

// The value of an integer constant: an A_Const holding an Integer, or holding a Float whose text is
// a plain decimal integer that fits in int64 (Postgres's grammar makes literals beyond int32 Float
// nodes), or a bare Integer node. Negative literals are folded by the grammar, so -5 works too.
std::optional<int64_t> integerValue(const pg_query::Node& node);

// The text of a string constant ('abc' as A_Const sval); nullopt for anything else.
std::optional<std::string_view> stringConstant(const pg_query::Node& node);

// True for the NULL constant (A_Const with isnull).
bool isNullConstant(const pg_query::Node& node);

// The number of a parameter reference: 1 for $1; nullopt for anything else.
std::optional<int> paramNumber(const pg_query::Node& node);

}  // namespace shardgate::parser
