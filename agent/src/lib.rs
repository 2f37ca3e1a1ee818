//! Signal ingest, incidents, context snapshots, reasoners and hypothesis validation.
