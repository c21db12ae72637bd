//! What the clients did and saw: every operation with its start and end on this machine's one clock, in
//! microseconds since the Unix epoch. Keys are named by their ids only; their secrets stay in memory.

use std::{
    io::Write,
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

pub type Micros = i64;

pub fn now_us() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as Micros)
}

/// An edge's answer to a verification, or that there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Valid,
    Revoked,
    Expired,
    Stale,
    Unknown,
    /// Another refusal (`forbidden`, `malformed`, `busy`, ...).
    Refused,
    /// No answer: the connection failed, timed out, or the body was not a verdict.
    #[serde(rename = "no_answer")]
    Nothing,
}

impl Answer {
    /// The answer an edge's `/v1/verify` body gives.
    pub fn from_body(body: &serde_json::Value) -> Self {
        if body["valid"] == true {
            return Self::Valid;
        }
        match body["reason"].as_str() {
            Some("revoked") => Self::Revoked,
            Some("expired") => Self::Expired,
            Some("stale") => Self::Stale,
            Some("unknown") => Self::Unknown,
            Some(_) => Self::Refused,
            None => Self::Nothing,
        }
    }
}

/// One verification: which edge (an index into [`History::edges`], the edge's id at the time), which
/// key (an index into [`History::keys`]), and what it answered.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Verification {
    pub start: Micros,
    pub end: Micros,
    pub edge: u16,
    pub key: u32,
    pub answer: Answer,
}

/// A key a client saw created.
#[derive(Debug, Clone, Serialize)]
pub struct Key {
    pub id: String,
    pub owner: String,
    /// When the create call started and ended.
    pub created: (Micros, Micros),
}

/// How a call to a manager ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened (2xx).
    Ok,
    /// It was refused and changed nothing (4xx).
    Refused(u16),
    /// Nobody knows: a timeout, a lost connection or a server error. It may have committed.
    Indeterminate(String),
}

/// A change a client asked a manager for. Key references are indices into [`History::keys`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A new key; `key` is set when the call succeeded.
    Create {
        owner: String,
        key: Option<u32>,
    },
    Revoke {
        key: u32,
        wait_all: bool,
    },
    BulkIds {
        keys: Vec<u32>,
        wait_all: bool,
    },
    BulkOwner {
        owner: String,
        revoked: Vec<u32>,
    },
    /// A rotation with no grace: the old key stops at once; `new_key` is set when the call succeeded.
    Rotate {
        key: u32,
        new_key: Option<u32>,
        wait_all: bool,
    },
    Leak {
        key: u32,
        revoked: bool,
    },
}

/// One call to a manager.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    pub start: Micros,
    pub end: Micros,
    pub manager: usize,
    #[serde(flatten)]
    pub change: Change,
    pub outcome: Outcome,
    /// The edges the answer named as having applied the change (`wait=all`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub confirmed_by: Vec<String>,
}

/// A fault as it was injected and healed.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub start: Micros,
    pub end: Micros,
    pub fault: String,
}

#[derive(Debug, Default, Serialize)]
pub struct History {
    pub keys: Vec<Key>,
    pub edges: Vec<String>,
    pub operations: Vec<Operation>,
    pub verifications: Vec<Verification>,
    pub faults: Vec<FaultRecord>,
}

impl History {
    /// The index of an edge id, added if new.
    pub fn edge_index(&mut self, id: &str) -> u16 {
        if let Some(at) = self.edges.iter().position(|e| e == id) {
            return at as u16;
        }
        self.edges.push(id.to_owned());
        (self.edges.len() - 1) as u16
    }

    /// Writes the history as JSON lines a person can read: one line per fault, key, operation and
    /// verification, each with its kind, in time order within each kind.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::fs::File::create(path)?;
        let mut out = std::io::BufWriter::new(file);
        for fault in &self.faults {
            line(&mut out, "fault", fault)?;
        }
        for key in &self.keys {
            line(&mut out, "key", key)?;
        }
        for op in &self.operations {
            line(&mut out, "operation", op)?;
        }
        for v in &self.verifications {
            let named = serde_json::json!({
                "start": v.start, "end": v.end, "answer": v.answer,
                "edge": self.edges[usize::from(v.edge)], "key": self.keys[v.key as usize].id,
            });
            line(&mut out, "verification", &named)?;
        }
        out.flush()?;
        Ok(())
    }
}

fn line(out: &mut impl Write, kind: &str, value: &impl Serialize) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(value)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("record".to_owned(), kind.into());
    }
    serde_json::to_writer(&mut *out, &value)?;
    out.write_all(b"\n")?;
    Ok(())
}
