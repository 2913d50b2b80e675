// The client session's side of routing lookups (directory keys, column orders) and of the
// shardgate.move_key call it answers itself.
#include <string>

#include "proxy/client_session.h"
#include "proxy/routing_lookups.h"
#include "proxy/wire/backend_messages.h"
#include "proxy/worker.h"

namespace shardgate::proxy {

LookupWait& ClientSession::lookupWait() {
  if (!lookup_wait_) lookup_wait_ = std::make_unique<LookupWait>();
  return *lookup_wait_;
}

bool ClientSession::awaitLookups(const planner::RouteDecision& decision) {
  // The input stays pending meanwhile (routeClientMessages stops while lookup_wait_ waits).
  return lookupWait().start(worker_.lookups(), decision, [this] { processPending(); });
}

bool ClientSession::awaitCollation(const planner::RouteDecision& decision) {
  if (!decision.multi || !decision.multi->merge ||
      worker_.lookups().collation(database_->name) != nullptr) {
    return false;
  }
  planner::RouteDecision lookup;
  lookup.kind = planner::RouteDecision::Kind::kNeedsLookup;
  lookup.needs_collation = true;
  lookup.reason = "collation of database " + database_->name;  // the wait's signature
  return awaitLookups(lookup);
}

bool ClientSession::interceptShardgateCall(std::string_view sql) {
  auto call = parseMoveKeyCall(*database_, sql);
  if (!call) return false;
  if (!call->ok()) {
    refuseStatement(call->error(), /*extended_protocol=*/false);
    return true;
  }
  if (user_ == nullptr || !user_->admin) {
    refuseStatement(Error::make("42501", "permission denied for shardgate.move_key", {},
                                "Only users with admin = true in the config may move keys."),
                    false);
    return true;
  }
  if (transaction_status_ != 'I') {
    // The directory write commits on its own: it cannot be part of the client's transaction.
    refuseStatement(Error::make(sqlstate::kFeatureNotSupported,
                                "shardgate.move_key cannot run inside a transaction block"),
                    false);
    return true;
  }
  const MoveKeyCall& c = call->value();
  std::string shard_name = database_->shards[c.shard].name;
  lookupWait().startMoveKey(worker_.lookups(), *database_, *c.table, c.key, c.shard,
                            [this, shard_name = std::move(shard_name)](std::optional<Error> error) {
                              if (error) {
                                refuseStatement(*error, false);
                              } else {
                                std::string reply;
                                wire::RowDescription description;
                                wire::FieldDescription field;
                                field.name = "move_key";
                                field.type_oid = 25;  // text
                                field.type_size = -1;
                                field.type_modifier = -1;
                                description.fields.push_back(field);
                                description.encode(reply);
                                wire::DataRow{{shard_name}}.encode(reply);
                                wire::CommandComplete{"SELECT 1"}.encode(reply);
                                wire::writeReadyForQuery(reply, transaction_status_);
                                answer(std::move(reply));
                              }
                              processPending();
                            });
  return true;
}

}  // namespace shardgate::proxy
