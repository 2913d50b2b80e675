// Small helpers for reading libpg_query's protobuf tree (see node_helpers.h).
#include "parser/node_helpers.h"

#include <charconv>

namespace shardgate::parser {

std::optional<std::string_view> stringValue(const pg_query::Node& node) {
  if (!node.has_string()) return std::nullopt;
  return std::string_view(node.string().sval());
}

std::string qualifiedName(const pg_query::RangeVar& rv) {
  std::string out;
  if (!rv.catalogname().empty()) out += rv.catalogname() + ".";
  if (!rv.schemaname().empty()) out += rv.schemaname() + ".";
  out += rv.relname();
  return out;
}

std::string dottedName(const NodeList& names) {
  std::string out;
  for (const pg_query::Node& n : names) {
    if (!out.empty()) out += '.';
    if (n.has_string()) {
      out += n.string().sval();
    } else if (n.has_a_star()) {
      out += '*';
    } else {
      out += std::string("(") + nodeKindName(n) + ")";
    }
  }
  return out;
}

std::optional<std::string_view> lastName(const NodeList& names) {
  if (names.empty()) return std::nullopt;
  return stringValue(names[names.size() - 1]);
}

const char* nodeKindName(const pg_query::Node& node) {
  if (node.node_case() == pg_query::Node::NODE_NOT_SET) return "(empty)";
  // The oneof's field numbers are the node cases; descriptor names live as long as the program.
  const google::protobuf::FieldDescriptor* field =
      pg_query::Node::descriptor()->FindFieldByNumber(static_cast<int>(node.node_case()));
  if (field == nullptr || field->message_type() == nullptr) return "(unknown)";
  return field->message_type()->name().c_str();
}

std::optional<int64_t> integerValue(const pg_query::Node& node) {
  if (node.has_integer()) return node.integer().ival();
  if (!node.has_a_const()) return std::nullopt;
  const pg_query::A_Const& c = node.a_const();
  if (c.isnull()) return std::nullopt;
  if (c.has_ival()) return c.ival().ival();
  if (c.has_fval()) {
    const std::string& text = c.fval().fval();
    int64_t v = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, v);  // rejects "1.5", "1e3", overflow
    if (ec == std::errc() && ptr == end && !text.empty()) return v;
  }
  return std::nullopt;
}

std::optional<std::string_view> stringConstant(const pg_query::Node& node) {
  if (!node.has_a_const() || node.a_const().isnull() || !node.a_const().has_sval()) {
    return std::nullopt;
  }
  return std::string_view(node.a_const().sval().sval());
}

bool isNullConstant(const pg_query::Node& node) {
  return node.has_a_const() && node.a_const().isnull();
}

std::optional<int> paramNumber(const pg_query::Node& node) {
  if (!node.has_param_ref()) return std::nullopt;
  return node.param_ref().number();
}

}  // namespace shardgate::parser
