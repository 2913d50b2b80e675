// PreparedStatement's result shape (what a check of a statement prepared again compares) and the
// registry giving a retired statement's text a statement of its own.
#include "backends/prepared_statements.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "proxy/wire/backend_messages.h"
#include "proxy/wire/protocol.h"

namespace shardgate::backends {
namespace {

wire::FieldDescription column(std::string name, int32_t type_oid, int32_t typmod = -1) {
  wire::FieldDescription f;
  f.name = std::move(name);
  f.table_oid = 16384;
  f.column_attr = 1;
  f.type_oid = type_oid;
  f.type_size = type_oid == 23 ? 4 : -1;
  f.type_modifier = typmod;
  return f;
}

// The payload of a RowDescription (what follows the type byte and length).
std::string payloadOf(const std::vector<wire::FieldDescription>& fields) {
  std::string message;
  wire::RowDescription{fields}.encode(message);
  return message.substr(5);
}

TEST(PreparedStatementShape, ComparedWithTheFirstDescription) {
  PreparedStatement s(1, "SELECT * FROM t", {});
  EXPECT_FALSE(s.described());
  const std::string two = payloadOf({column("a", 23), column("b", 25)});
  s.noteDescribed(wire::be::kRowDescription, two);
  EXPECT_TRUE(s.described());
  EXPECT_TRUE(s.sameResultShape(wire::be::kRowDescription, two));
  // A later description does not replace what the clients were told first.
  const std::string three = payloadOf({column("a", 23), column("b", 25), column("c", 23)});
  s.noteDescribed(wire::be::kRowDescription, three);
  EXPECT_FALSE(s.sameResultShape(wire::be::kRowDescription, three));  // a column added
  EXPECT_FALSE(s.sameResultShape(wire::be::kRowDescription, payloadOf({column("a", 23)})));
  EXPECT_FALSE(s.sameResultShape(wire::be::kRowDescription,
                                 payloadOf({column("a", 20), column("b", 25)})));  // a type
  EXPECT_FALSE(s.sameResultShape(wire::be::kRowDescription,
                                 payloadOf({column("a", 23), column("b", 25, 14)})));  // typmod
  EXPECT_FALSE(s.sameResultShape(wire::be::kRowDescription,
                                 payloadOf({column("a", 23), column("bb", 25)})));  // a name
  EXPECT_FALSE(s.sameResultShape(wire::be::kNoData, ""));
}

TEST(PreparedStatementShape, SourceTableAndFormatAreNotPartOfIt) {
  PreparedStatement s(1, "SELECT * FROM t", {});
  s.noteDescribed(wire::be::kRowDescription, payloadOf({column("a", 23)}));
  wire::FieldDescription other = column("a", 23);
  other.table_oid = 99999;  // the table dropped and made again the same
  other.column_attr = 3;
  other.format = 1;
  EXPECT_TRUE(s.sameResultShape(wire::be::kRowDescription, payloadOf({other})));
}

TEST(PreparedStatementShape, NoDataIsAShapeToo) {
  PreparedStatement s(1, "UPDATE t SET a = 1", {});
  s.noteDescribed(wire::be::kNoData, "");
  EXPECT_TRUE(s.sameResultShape(wire::be::kNoData, ""));
  // UPDATE ... RETURNING would have rows now: not what the client was told.
  EXPECT_FALSE(s.sameResultShape(wire::be::kRowDescription, payloadOf({column("a", 23)})));
}

TEST(StatementRegistry, RetiredStatementIsNotHandedOutAgain) {
  StatementRegistry registry;
  auto first = registry.intern("SELECT * FROM t", {}, 0);
  EXPECT_EQ(registry.intern("SELECT * FROM t", {}, 0), first);
  first->retire();
  auto second = registry.intern("SELECT * FROM t", {}, 0);
  EXPECT_NE(second, first);
  EXPECT_NE(second->serverName(), first->serverName());
  EXPECT_EQ(registry.intern("SELECT * FROM t", {}, 0), second);
  EXPECT_EQ(registry.size(), 1u);
}

}  // namespace
}  // namespace shardgate::backends
