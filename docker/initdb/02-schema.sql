-- Primary init (docker-entrypoint-initdb.d, first start only, run in POSTGRES_DB = app): the demo
-- tables of conf/demo.toml. Every shard has every table; shardgate decides which rows live where:
-- users and orders hash on the user id, events by id range, countries is a reference table (a full
-- copy on each shard), and any other table lives on shard0 only.

CREATE TABLE users (
  id         bigint PRIMARY KEY,
  name       text,
  country    text,
  created_at timestamptz DEFAULT now()
);

-- The primary key starts with the sharding key: uniqueness can only be enforced within a shard.
CREATE TABLE orders (
  id         bigint,
  user_id    bigint,
  amount     numeric(12, 2),
  status     text,
  created_at timestamptz DEFAULT now(),
  PRIMARY KEY (user_id, id)
);

CREATE TABLE events (
  id         bigint PRIMARY KEY,
  kind       text,
  payload    jsonb,
  created_at timestamptz DEFAULT now()
);

CREATE TABLE countries (
  code text PRIMARY KEY,
  name text
);
