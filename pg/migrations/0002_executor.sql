-- The executor's state on PostgreSQL (arf-executor): any number of executors share
-- it, and a decision runs once whichever of them it reaches.

-- Each running executor holds a lease on its name, renewed while it runs. Its
-- executions and target locks are its own only while the lease holds; after it
-- lapses, another executor takes them over and settles what was cut off.
CREATE TABLE executor_members (
    name        text PRIMARY KEY,
    -- Random per process start: a second process under the same name waits for
    -- the first one's lease to lapse instead of sharing it.
    incarnation text        NOT NULL,
    lease_until timestamptz NOT NULL
);

-- One row per claimed decision: the claim is the row's insertion, so two executors
-- that see one decision cannot both claim it.
CREATE TABLE executor_executions (
    decision_id   text   PRIMARY KEY,
    target        text   NOT NULL,
    phase         text   NOT NULL,
    outcome       text   NOT NULL,
    -- The member whose execution this is, and the fencing token of its ownership:
    -- each takeover raises it, and a write by an earlier owner matches no row.
    owner         text   NOT NULL,
    fence         bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    -- The execution's state and the decision as admitted, as JSON.
    state         bytea  NOT NULL,
    decision      bytea
);
CREATE INDEX executor_executions_unfinished ON executor_executions (target) WHERE phase <> 'finished';

-- Who works on a target: one executor at a time, while its member lease holds.
CREATE TABLE executor_target_locks (
    target text   PRIMARY KEY,
    owner  text   NOT NULL,
    fence  bigint NOT NULL
);
