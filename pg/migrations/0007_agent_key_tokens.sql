-- Grouping keys fenced in the log (arf-agent, arf-audit). Each time a replica
-- takes a key's advisory lock it draws the key a new token from one sequence (so
-- no token is issued twice) and marks the key as appending; its appends under the
-- key carry the token, and the log takes them only while the key's row still
-- holds it, locking the row for share until the append commits. A holder whose
-- lock's session was dropped behind its back (its advisory lock is gone, and a
-- peer took the key) appends nothing under the key after the peer drew its token;
-- a peer's draw waits for an append in flight under the old token, and the peer
-- then reads the log up to that append before it places anything.
CREATE SEQUENCE agent_key_tokens;
ALTER TABLE agent_keys ADD COLUMN token bigint NOT NULL DEFAULT 0;
