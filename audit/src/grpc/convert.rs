//! Proto ↔ domain conversions for the audit service.

use tonic::Status;

use arf_proto::v1 as pb;

use crate::record::{Entry, Record, RecordKind};
use crate::store::{Fence, MAX_INCIDENT_ID_BYTES, Quiet};

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

/// The most grouping keys one append may be made under: an ingest batch's keys,
/// at most one per signal of the largest batch an agent makes.
const MAX_FENCE_KEYS: usize = 65_536;
/// The longest grouping key: an agent names a key by the JSON of its environment,
/// service and family, each of up to 1,024 bytes before escaping.
const MAX_FENCE_KEY_BYTES: usize = 16_384;

/// The lease an append is fenced by, in the members' table of the caller's role
/// (from its credentials; the request names only the member and incarnation),
/// and for an agent the grouping keys it appends under.
pub fn fence(role: arf_core::identity::Role, writer: &str, fence: pb::Fence) -> Result<Fence, Status> {
    use arf_core::identity::Role;
    let table = match role {
        Role::Agent => "agent_members",
        Role::Governor => "governor_members",
        Role::Executor => "executor_members",
        _ => return Err(Status::invalid_argument(format!("`fence`: `{writer}` is not a replicated service and holds no lease"))),
    };
    for (field, value) in [("member", &fence.member), ("incarnation", &fence.incarnation)] {
        if value.is_empty() || value.len() > 256 {
            return Err(Status::invalid_argument(format!("`fence.{field}` must be 1 to 256 bytes long")));
        }
    }
    if !fence.keys.is_empty() && role != Role::Agent {
        return Err(Status::invalid_argument(format!("`fence.keys`: `{writer}` is not an agent and holds no grouping keys")));
    }
    if fence.keys.len() > MAX_FENCE_KEYS {
        return Err(Status::invalid_argument(format!("`fence.keys` holds {} keys; at most {MAX_FENCE_KEYS}", fence.keys.len())));
    }
    if let Some((i, _)) = fence.keys.iter().enumerate().find(|(_, k)| k.key.is_empty() || k.key.len() > MAX_FENCE_KEY_BYTES || k.key.chars().any(char::is_control)) {
        return Err(Status::invalid_argument(format!("`fence.keys[{i}].key` must be 1 to {MAX_FENCE_KEY_BYTES} bytes long, with no control characters")));
    }
    let keys = fence.keys.into_iter().map(|k| (k.key, k.token)).collect();
    Ok(Fence { table, member: fence.member, incarnation: fence.incarnation, keys })
}

/// The condition an append is taken under: another writer silent in an incident.
pub fn quiet(quiet: pb::Quiet) -> Result<Quiet, Status> {
    if quiet.incident_id.is_empty() || quiet.incident_id.len() > MAX_INCIDENT_ID_BYTES {
        return Err(Status::invalid_argument(format!("`quiet.incident_id` must be 1 to {MAX_INCIDENT_ID_BYTES} bytes long")));
    }
    if quiet.writer.is_empty() || quiet.writer.len() > 256 {
        return Err(Status::invalid_argument("`quiet.writer` must be 1 to 256 bytes long"));
    }
    Ok(Quiet { incident_id: quiet.incident_id, writer: quiet.writer, after_seq: quiet.after_seq })
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
