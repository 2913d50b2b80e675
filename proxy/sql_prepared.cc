// planSqlPrepared: rewrites statement names in PREPARE / EXECUTE / DEALLOCATE with the parser.
#include "proxy/sql_prepared.h"

#include "parser/parser.h"
#include "proxy/startup_parameters.h"

namespace shardgate::proxy {

namespace {
SqlPreparedPlan pin(std::string reason) {
  SqlPreparedPlan plan;
  plan.action = SqlPreparedPlan::Action::kPin;
  plan.pin_reason = std::move(reason);
  return plan;
}
}  // namespace

SqlPreparedPlan planSqlPrepared(std::string_view sql, const ClientStatements& statements,
                                backends::StatementRegistry& registry, uint64_t scope,
                                const std::function<bool(uint64_t)>& server_has) {
  auto parsed = parser::parse(sql);
  if (!parsed.ok()) return {};  // the server reports the syntax error as it would
  const parser::ParsedQuery& query = **parsed;
  if (query.statementCount() == 1) {
    const pg_query::Node& node = query.statement(0);
    if (node.has_prepare_stmt()) {
      const pg_query::PrepareStmt& prepare = node.prepare_stmt();
      if (statements.count(prepare.name()) > 0) {
        // Postgres refuses a second definition. The server, which knows the statement by
        // shardgate's name only, raises the error (in a failed transaction it gives 25P02
        // instead, as Postgres would); sent as written, the PREPARE would define the client's name
        // on that shared connection, for every later client of it to EXECUTE.
        const std::string body =
            "BEGIN RAISE EXCEPTION USING ERRCODE = 'duplicate_prepared_statement', MESSAGE = " +
            quoteLiteral("prepared statement \"" + prepare.name() + "\" already exists") + "; END";
        SqlPreparedPlan plan;
        plan.action = SqlPreparedPlan::Action::kForward;
        plan.sql = "DO " + quoteLiteral(body);
        return plan;
      }
      // The statement without its name identifies it; the server copy is named by shardgate.
      pg_query::Node unnamed = node;
      unnamed.mutable_prepare_stmt()->set_name("sg_key");
      auto key = parser::deparseStatement(unnamed);
      if (!key.ok()) return pin("PREPARE shardgate cannot rewrite");
      auto statement = registry.internSql(*key, scope, [&](const std::string& server_name) {
        pg_query::Node named = node;
        named.mutable_prepare_stmt()->set_name(server_name);
        auto text = parser::deparseStatement(named);
        return text.ok() ? *text : std::string();
      });
      if (statement->query().empty()) return pin("PREPARE shardgate cannot rewrite");
      SqlPreparedPlan plan;
      plan.defines = prepare.name();
      plan.defined = statement;
      if (server_has(statement->id())) {
        plan.action = SqlPreparedPlan::Action::kAnswer;
        plan.tag = "PREPARE";
      } else {
        plan.action = SqlPreparedPlan::Action::kForward;
        plan.sql = statement->query();
      }
      return plan;
    }
    if (node.has_deallocate_stmt()) {
      const std::string& name = node.deallocate_stmt().name();
      if (name.empty()) return {};  // DEALLOCATE ALL: the server forgets everything too
      if (statements.count(name) == 0) return {};  // the server gives the 26000 error
      SqlPreparedPlan plan;
      plan.action = SqlPreparedPlan::Action::kAnswer;
      plan.tag = "DEALLOCATE";
      plan.forgets = name;
      return plan;
    }
  }
  // EXECUTE anywhere in the string: rename what the client prepared.
  pg_query::ParseResult tree = query.tree;
  SqlPreparedPlan plan;
  for (int i = 0; i < tree.stmts_size(); ++i) {
    pg_query::Node* node = tree.mutable_stmts(i)->mutable_stmt();
    if (node->has_prepare_stmt() || node->has_deallocate_stmt()) {
      return pin("PREPARE or DEALLOCATE among other statements");
    }
    // EXECUTE, also inside EXPLAIN and CREATE TABLE ... AS.
    if (node->has_explain_stmt() && node->explain_stmt().has_query()) {
      node = node->mutable_explain_stmt()->mutable_query();
    } else if (node->has_create_table_as_stmt() && node->create_table_as_stmt().has_query()) {
      node = node->mutable_create_table_as_stmt()->mutable_query();
    }
    if (!node->has_execute_stmt()) continue;
    auto it = statements.find(node->execute_stmt().name());
    if (it == statements.end()) continue;
    node->mutable_execute_stmt()->set_name(it->second->serverName());
    plan.needed.push_back(it->second);
  }
  if (plan.needed.empty()) return {};
  auto text = parser::deparse(tree);
  if (!text.ok()) return pin("EXECUTE shardgate cannot rewrite");
  plan.action = SqlPreparedPlan::Action::kForward;
  plan.sql = std::move(*text);
  return plan;
}

}  // namespace shardgate::proxy
