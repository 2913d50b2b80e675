// CopySplit: reads COPY FROM's column list and options into the split of its rows across shards,
// and COPY TO's output format.
#include "planner/copy_split.h"

#include <algorithm>

#include "parser/node_helpers.h"

namespace shardgate::planner {

namespace {

Error notSupported(std::string message, std::string hint = {}) {
  return Error::make(sqlstate::kFeatureNotSupported, std::move(message), {}, std::move(hint));
}

// An option's value as text: strings, booleans (legacy "CSV HEADER") and integers.
std::optional<std::string> optionText(const pg_query::DefElem& option) {
  if (!option.has_arg()) return std::nullopt;
  const pg_query::Node& arg = option.arg();
  if (auto s = parser::stringValue(arg)) return std::string(*s);
  if (arg.has_boolean()) return arg.boolean().boolval() ? "true" : "false";
  if (arg.has_integer()) return std::to_string(arg.integer().ival());
  return std::nullopt;
}

// Postgres's boolean option spellings (defGetBoolean): no value means true.
Result<bool> optionBool(const pg_query::DefElem& option) {
  std::optional<std::string> text = optionText(option);
  if (!text) return true;
  std::string v = *text;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "true" || v == "on" || v == "1" || v == "match") return true;
  if (v == "false" || v == "off" || v == "0") return false;
  return Error::make(sqlstate::kSyntaxError, option.defname() + " requires a Boolean value");
}

Result<char> optionChar(const pg_query::DefElem& option) {
  std::optional<std::string> text = optionText(option);
  if (!text || text->size() != 1) {
    return notSupported("COPY " + option.defname() +
                        " of more than one byte is not supported "
                        "for sharded tables");
  }
  return (*text)[0];
}

}  // namespace

Result<CopyOutFormat> readCopyOutFormat(const pg_query::CopyStmt& copy) {
  CopyOutFormat out;
  for (const pg_query::Node& node : copy.options()) {
    if (!node.has_def_elem()) continue;
    const pg_query::DefElem& option = node.def_elem();
    if (option.defname() == "format") {
      std::optional<std::string> format = optionText(option);
      if (format && *format == "binary") {
        out.binary = true;
      } else if (!format || (*format != "text" && *format != "csv")) {
        return Error::make(sqlstate::kInvalidParameterValue,
                           "COPY format \"" + format.value_or("") + "\" not recognized");
      }
    } else if (option.defname() == "header") {
      auto b = optionBool(option);
      if (!b.ok()) return b.error();
      out.header = *b;
    }
  }
  return out;
}

Status requireCopyFromStdin(const pg_query::CopyStmt& copy, const std::string& table,
                            std::string_view table_kind) {
  if (copy.filename().empty() && !copy.is_program()) return {};
  Error e =
      notSupported("COPY " + table + " FROM a server file or program is not supported: " + table +
                       " is " + std::string(table_kind),
                   "Use COPY " + table + " FROM STDIN (psql: \\copy).");
  e.detail = "Each shard would read its own file on its own server.";
  return e;
}

Result<CopySplit> planCopySplit(const pg_query::CopyStmt& copy, const conf::ShardedTable& table,
                                size_t shard_count, const std::vector<std::string>* column_order) {
  const std::string name = table.tableName().display();
  if (Status stdin_only = requireCopyFromStdin(copy, name, "sharded"); !stdin_only.ok()) {
    return std::move(stdin_only).error();
  }
  CopySplit split;
  split.table = table;
  split.shard_count = shard_count;
  bool csv = false;
  std::optional<char> delimiter, quote, escape;
  std::optional<std::string> null_string;
  for (const pg_query::Node& node : copy.options()) {
    if (!node.has_def_elem()) continue;
    const pg_query::DefElem& option = node.def_elem();
    const std::string& key = option.defname();
    if (key == "format") {
      std::optional<std::string> format = optionText(option);
      if (format && *format == "csv") {
        csv = true;
      } else if (format && *format == "binary") {
        return notSupported(
            "COPY " + name + " FROM in binary format is not supported: " + name + " is sharded",
            "Use the text or csv format.");
      } else if (!format || *format != "text") {
        return Error::make(sqlstate::kInvalidParameterValue,
                           "COPY format \"" + format.value_or("") + "\" not recognized");
      }
    } else if (key == "delimiter") {
      auto c = optionChar(option);
      if (!c.ok()) return c.error();
      delimiter = *c;
    } else if (key == "quote") {
      auto c = optionChar(option);
      if (!c.ok()) return c.error();
      quote = *c;
    } else if (key == "escape") {
      auto c = optionChar(option);
      if (!c.ok()) return c.error();
      escape = *c;
    } else if (key == "null") {
      null_string = optionText(option).value_or("");
    } else if (key == "header") {
      auto b = optionBool(option);
      if (!b.ok()) return b.error();
      split.header = *b;
    }
    // freeze, encoding, force_*, default...: each shard applies them itself.
  }
  split.format = csv ? CopySplit::Format::kCsv : CopySplit::Format::kText;
  split.delimiter = delimiter.value_or(csv ? ',' : '\t');
  split.quote = quote.value_or('"');
  split.escape = escape.value_or(split.quote);
  split.null_string = null_string.value_or(csv ? "" : "\\N");
  if (!csv && split.header) {
    // Postgres 15 accepts HEADER for text too: the first line is skipped on each shard.
    split.header = true;
  }

  std::vector<std::string> columns;
  if (copy.attlist_size() > 0) {
    for (const pg_query::Node& column : copy.attlist()) {
      columns.emplace_back(parser::stringValue(column).value_or(""));
    }
  } else if (column_order != nullptr) {
    columns = *column_order;
  } else {
    return Error::make(sqlstate::kInternalError, "the column order of " + name + " is not known");
  }
  auto it = std::find(columns.begin(), columns.end(), table.column);
  if (it == columns.end()) {
    return Error::make(
        "42703", "COPY into sharded table " + name + " must copy its sharding key " + table.column,
        "shardgate sends each row to the shard of its key; a default would only be "
        "computed on a shard after the row had been sent.",
        "List " + table.column + " among the copied columns.");
  }
  split.key_field = static_cast<uint32_t>(it - columns.begin());
  return split;
}

}  // namespace shardgate::planner
