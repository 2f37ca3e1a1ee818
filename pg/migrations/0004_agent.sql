-- The agents' shared state on PostgreSQL (arf-agent): any number of agent replicas
-- take signals into one log, and a storm spread over them still makes one incident
-- and one diagnosis. The incidents themselves are in the log; these tables only
-- arbitrate between replicas.

-- Each running agent holds a lease on its name, renewed while it runs; the
-- incidents it diagnoses are its own only while the lease holds.
CREATE TABLE agent_members (
    name        text PRIMARY KEY,
    incarnation text        NOT NULL,
    lease_until timestamptz NOT NULL
);

-- One row per grouping key (environment, service, family) that has taken signals.
-- A replica places signals of a key only while it holds the key's advisory lock,
-- and first reads the log up to `last_seq`, the last record the key's previous
-- holder appended. `appending` is set, outside the lock's transaction, before an
-- append and cleared after it is recorded here: a holder that died in between
-- leaves it set, and the next reads the log up to its head instead.
CREATE TABLE agent_keys (
    key       text    PRIMARY KEY,
    last_seq  bigint  NOT NULL DEFAULT 0,
    appending boolean NOT NULL DEFAULT false
);

-- Who diagnoses each incident: the replica that opened it, claimed before the
-- opening is logged; once that replica's lease lapses, another takes it over.
CREATE TABLE agent_incidents (
    incident_id text        PRIMARY KEY,
    owner       text        NOT NULL,
    done        boolean     NOT NULL DEFAULT false,
    claimed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_incidents_unfinished ON agent_incidents (owner) WHERE NOT done;
