//! Proto ↔ domain conversions for the audit service.

use tonic::Status;

use arf_proto::v1 as pb;

use crate::record::{Entry, Record, RecordKind};

pub fn entries(request: pb::AppendRequest) -> Result<Vec<Entry>, Status> {
    request
        .entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let kind = RecordKind::parse(&entry.kind)
                .ok_or_else(|| Status::invalid_argument(format!("`entries[{i}].kind`: unknown record kind `{}`", entry.kind)))?;
            let payload = serde_json::from_str(&entry.payload_json)
                .map_err(|e| Status::invalid_argument(format!("`entries[{i}].payload_json` is not JSON: {e}")))?;
            Ok(Entry { incident_id: entry.incident_id, kind, payload })
        })
        .collect()
}

pub fn record(record: &Record) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: record.seq,
        time_ms: record.time_ms,
        writer: record.writer.clone(),
        incident_id: record.incident_id.clone(),
        kind: record.kind.as_str().to_owned(),
        payload_json: arf_core::canonical::to_string(&record.payload).unwrap_or_default(),
        prev_hash: record.prev_hash.clone(),
        hash: record.hash.clone(),
    }
}
