-- The governors' leadership on PostgreSQL (arf-governor): of any number of governor
-- replicas on one log, the one holding the lease named `leader` decides, takes
-- approvals and dispatches; the others stand by. Its incarnation names the replica
-- and its process. Once the lease lapses, and one more lease has passed, a standby
-- takes it, rebuilds the decisions from the log and carries on.
CREATE TABLE governor_members (
    name        text PRIMARY KEY,
    incarnation text        NOT NULL,
    lease_until timestamptz NOT NULL
);
