"""The differential suite: the same data in one plain Postgres and behind shardgate, the same queries, results compared."""
