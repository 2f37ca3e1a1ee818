-- The log key's seal of where the chain ends (arf-audit): the signature, by the
-- audit front-ends' checkpoint key, of the head's sequence number and hash,
-- renewed in every append's transaction. A database client that is not an audit
-- front-end lacks the key, so records it inserts leave a head no seal matches,
-- and every front-end (and `arf audit verify --postgres`) refuses the log.
-- NULL on a log written before this migration: accepted only while a signed
-- checkpoint record is the head, which a front-end's clean stop leaves.
ALTER TABLE audit_head ADD COLUMN seal text;
