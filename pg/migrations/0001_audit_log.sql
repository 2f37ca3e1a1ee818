-- The audit log (arf-audit): the same records, byte for byte, as the file store's frames.
CREATE TABLE audit_records (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    incident_id text   NOT NULL,
    writer      text   NOT NULL,
    kind        text   NOT NULL,
    -- The record's JSON exactly as the log hashed and wrote it. Not jsonb: jsonb
    -- reorders keys and renormalizes numbers, and these bytes are what is verified.
    body        bytea  NOT NULL
);
CREATE INDEX audit_records_by_incident ON audit_records (incident_id, seq) WHERE incident_id <> '';

-- One row: the last record's sequence number and hash. Every append locks it
-- (SELECT ... FOR UPDATE) in the transaction that inserts its records, so appends
-- through any number of audit front-ends form one chain.
CREATE TABLE audit_head (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    seq  bigint  NOT NULL CHECK (seq >= 0),
    hash text    NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (true, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- The latest signed checkpoint (the file store's `checkpoint` file): a log found
-- shorter than it, or disagreeing with it, does not open.
CREATE TABLE audit_checkpoint (
    id   boolean PRIMARY KEY DEFAULT true CHECK (id),
    size bigint  NOT NULL,
    note text    NOT NULL
);

-- Records are never changed or removed by ARF. This refuses it from any client
-- that does not first disable triggers (which takes the table's owner or a
-- superuser); the hash chain and signed checkpoints catch what it cannot stop.
CREATE FUNCTION audit_records_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on audit_records refused', TG_OP;
END
$$;
CREATE TRIGGER audit_records_no_update BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_append_only();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_records_append_only();
