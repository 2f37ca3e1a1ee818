//! Pathway runners, verification probes, rollback, idempotency and recovery.
