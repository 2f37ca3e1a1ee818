//! The record format, its canonical hash, and verification of the chain.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use arf_core::canonical;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The kinds of record the log accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Signal,
    Incident,
    Snapshot,
    Investigation,
    Diagnosis,
    Decision,
    Approval,
    ExecutionStarted,
    ExecutionFinished,
    Verification,
    Rollback,
    Outcome,
    Checkpoint,
}

impl RecordKind {
    pub const ALL: [RecordKind; 13] = [
        Self::Signal,
        Self::Incident,
        Self::Snapshot,
        Self::Investigation,
        Self::Diagnosis,
        Self::Decision,
        Self::Approval,
        Self::ExecutionStarted,
        Self::ExecutionFinished,
        Self::Verification,
        Self::Rollback,
        Self::Outcome,
        Self::Checkpoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::Incident => "incident",
            Self::Snapshot => "snapshot",
            Self::Investigation => "investigation",
            Self::Diagnosis => "diagnosis",
            Self::Decision => "decision",
            Self::Approval => "approval",
            Self::ExecutionStarted => "execution_started",
            Self::ExecutionFinished => "execution_finished",
            Self::Verification => "verification",
            Self::Rollback => "rollback",
            Self::Outcome => "outcome",
            Self::Checkpoint => "checkpoint",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// What a writer asks to append; the log adds sequence, time, writer and hashes.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub incident_id: String,
    pub kind: RecordKind,
    pub payload: Value,
}

impl Entry {
    pub fn new(incident_id: impl Into<String>, kind: RecordKind, payload: Value) -> Self {
        Self { incident_id: incident_id.into(), kind, payload }
    }
}

/// One record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub time_ms: i64,
    pub writer: String,
    pub incident_id: String,
    pub kind: RecordKind,
    pub payload: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Every field of a record but `hash`, borrowed, with the fields in the bytewise
/// order of their names: serialized directly, it is the canonical JSON of those
/// fields (the payload is a `Value`, whose objects are sorted maps), without the
/// deep copies of building a `Value` first.
#[derive(Serialize)]
struct Unsigned<'a> {
    incident_id: &'a str,
    kind: RecordKind,
    payload: &'a Value,
    prev_hash: &'a str,
    seq: u64,
    time_ms: i64,
    writer: &'a str,
}

impl Record {
    /// The payload as the type its writer wrote it with (`arf_core::records`);
    /// a payload of another shape is an error naming this record.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, arf_core::records::Malformed> {
        arf_core::records::parse(&self.payload, self.seq, self.kind.as_str(), &self.writer)
    }

    /// Checks that the payload is in its kind's format (`arf_core::records`). A
    /// decision's `policy_input` is the governor's policy contract, checked where
    /// the governor reads it; here it must be an object.
    pub fn check_format(&self) -> Result<(), arf_core::records::Malformed> {
        use arf_core::records::{self as r, DecisionRecordKind};
        match self.kind {
            RecordKind::Signal => self.parse::<r::SignalRecord>().map(drop),
            RecordKind::Incident => self.parse::<r::IncidentRecord>().map(drop),
            RecordKind::Snapshot => self.parse::<r::SnapshotRecord>().map(drop),
            RecordKind::Investigation => self.parse::<r::InvestigationRecord>().map(drop),
            RecordKind::Diagnosis => self.parse::<r::DiagnosisRecord>().map(drop),
            RecordKind::Decision => match DecisionRecordKind::of(&self.payload) {
                DecisionRecordKind::Authorized => self.parse::<r::AuthorizedRecord>().map(drop),
                DecisionRecordKind::State => self.parse::<r::DecisionStateRecord>().map(drop),
                DecisionRecordKind::Decided => self.parse::<r::DecidedRecord>().map(drop),
                DecisionRecordKind::Event => self.parse::<r::GovernanceEvent>().map(drop),
            },
            RecordKind::Approval => self.parse::<r::ApprovalRecord>().map(drop),
            RecordKind::ExecutionStarted => self.parse::<r::ExecutionStartedRecord>().map(drop),
            RecordKind::ExecutionFinished => self.parse::<r::ExecutionFinishedRecord>().map(drop),
            RecordKind::Verification => self.parse::<r::VerificationRecord>().map(drop),
            RecordKind::Rollback => self.parse::<r::RollbackRecord>().map(drop),
            RecordKind::Outcome => self.parse::<r::OutcomeRecord>().map(drop),
            // The log's own records, checked by the log when it opens.
            RecordKind::Checkpoint => Ok(()),
        }
    }

    /// The hash over every field but `hash`, in canonical JSON.
    pub fn compute_hash(&self) -> String {
        let unsigned = Unsigned {
            incident_id: &self.incident_id,
            kind: self.kind,
            payload: &self.payload,
            prev_hash: &self.prev_hash,
            seq: self.seq,
            time_ms: self.time_ms,
            writer: &self.writer,
        };
        serde_json::to_vec(&unsigned).map(|b| canonical::sha256_hex(&b)).unwrap_or_default()
    }

    /// Builds the next record of a chain whose head is `(prev_seq, prev_hash)`.
    pub fn seal(prev_seq: u64, prev_hash: &str, time_ms: i64, writer: &str, entry: Entry) -> Self {
        let mut record = Self {
            seq: prev_seq + 1,
            time_ms,
            writer: writer.to_owned(),
            incident_id: entry.incident_id,
            kind: entry.kind,
            payload: entry.payload,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }
}

/// The first place a chain is broken.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("record {seq} is bad: {reason}")]
pub struct ChainError {
    /// The sequence number (or storage position) of the first bad record.
    pub seq: u64,
    pub reason: String,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub records: u64,
    pub head_hash: String,
}

/// Walks records in storage order, checking numbering, links and hashes.
///
/// Each item is `(storage position, record)`; the position is the sequence number
/// the store filed the record under, which catches a record moved to another slot.
/// A changed record fails its own hash, a removed one leaves a gap, a reordered or
/// inserted one breaks the numbering or the link to its predecessor.
pub fn verify_chain<I>(records: I) -> Result<ChainSummary, ChainError>
where
    I: IntoIterator<Item = Result<(u64, Record), ChainError>>,
{
    let mut expected_seq = 1u64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    for item in records {
        let (position, record) = item?;
        if position != expected_seq {
            return Err(ChainError {
                seq: expected_seq,
                reason: format!("expected record {expected_seq} next, found record filed at position {position}"),
            });
        }
        if record.seq != position {
            return Err(ChainError {
                seq: position,
                reason: format!("filed at position {position} but says it is record {}", record.seq),
            });
        }
        if record.prev_hash != prev_hash {
            return Err(ChainError {
                seq: record.seq,
                reason: "its link to the previous record does not match that record's hash".to_owned(),
            });
        }
        let computed = record.compute_hash();
        if computed != record.hash {
            return Err(ChainError {
                seq: record.seq,
                reason: "its contents do not match its hash (changed after it was written)".to_owned(),
            });
        }
        prev_hash = record.hash;
        expected_seq += 1;
    }
    Ok(ChainSummary { records: expected_seq - 1, head_hash: prev_hash })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: u64) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        for i in 0..n {
            let (seq, hash) = out.last().map(|r| (r.seq, r.hash.clone())).unwrap_or((0, GENESIS_HASH.to_owned()));
            out.push(Record::seal(seq, &hash, 1000 + i as i64, "agent", Entry::new("inc-1", RecordKind::Signal, json!({"n": i}))));
        }
        out
    }

    fn check(records: Vec<Record>) -> Result<ChainSummary, ChainError> {
        verify_chain(records.into_iter().enumerate().map(|(i, r)| Ok((i as u64 + 1, r))))
    }

    /// The borrowed encoding is byte for byte the canonical JSON the hash was defined
    /// over, so logs written before it still verify.
    #[test]
    fn the_hash_is_over_the_canonical_json_of_every_other_field() {
        let record = &chain(3)[2];
        let mut fields = serde_json::to_value(record).unwrap();
        fields.as_object_mut().unwrap().remove("hash");
        let expected = canonical::sha256_hex(&canonical::to_vec(&fields).unwrap());
        assert_eq!(record.compute_hash(), expected);
        let nested = Record::seal(0, GENESIS_HASH, 1, "agent", Entry::new("i", RecordKind::Signal, json!({"z": {"b": 1, "a": [2, {"d": 3, "c": 4}]}, "a": "x"})));
        let mut fields = serde_json::to_value(&nested).unwrap();
        fields.as_object_mut().unwrap().remove("hash");
        assert_eq!(nested.hash, canonical::sha256_hex(&canonical::to_vec(&fields).unwrap()));
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(check(chain(5)).unwrap().records, 5);
        assert_eq!(check(vec![]).unwrap().records, 0);
    }

    #[test]
    fn changed_record_is_named() {
        let mut records = chain(5);
        records[2].payload = json!({"n": 99});
        assert_eq!(check(records).unwrap_err().seq, 3);
    }

    #[test]
    fn removed_record_is_named() {
        let mut records = chain(5);
        records.remove(1);
        // Position 2 now holds record 3.
        assert_eq!(check(records).unwrap_err().seq, 2);
    }

    #[test]
    fn reordered_records_are_named() {
        let mut records = chain(5);
        records.swap(1, 3);
        assert_eq!(check(records).unwrap_err().seq, 2);
    }

    #[test]
    fn inserted_record_is_named() {
        let mut records = chain(5);
        let forged = Record::seal(2, &records[1].hash, 0, "agent", Entry::new("inc-1", RecordKind::Outcome, json!({})));
        records.insert(2, forged);
        // The forged record links correctly, so the break shows at the record after it.
        assert_eq!(check(records).unwrap_err().seq, 4);
    }
}
