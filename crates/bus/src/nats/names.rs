//! The stream and subjects of one deployment, laid out so NATS permissions can confine each party:
//!
//! * `quench.<deployment>.events` (the JetStream stream `QUENCH_<DEPLOYMENT>`) and
//!   `quench.<deployment>.heartbeat`: published by managers only, read by every edge.
//! * `quench.<deployment>.acks.<edge>`: each edge publishes only its own acknowledgements there; managers
//!   read `quench.<deployment>.acks.*` and drop an acknowledgement whose subject names another edge than
//!   the one it claims to come from.
//! * `_INBOX.<deployment>.<edge>.>`: an edge's reply subjects (its JetStream consumer's messages and API
//!   answers), so no edge reads another's.
//!
//! An edge id may contain `.`, which separates NATS subject tokens: it becomes `_` in subjects.

use crate::BusError;

/// Stream and subject names for one deployment.
#[derive(Debug, Clone)]
pub struct Names {
    pub deployment: String,
    pub stream: String,
    pub events: String,
    pub heartbeats: String,
    /// Every edge's acknowledgements (a wildcard): what managers subscribe to.
    pub acks: String,
}

impl Names {
    /// `deployment`: 1 to 32 of `a-z 0-9 _ -`, starting with a letter or digit.
    pub fn for_deployment(deployment: &str) -> Result<Self, BusError> {
        let valid = (1..=32).contains(&deployment.len())
            && deployment
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && deployment.as_bytes()[0].is_ascii_alphanumeric();
        if !valid {
            return Err(BusError::InvalidDeployment(deployment.to_owned()));
        }
        Ok(Self {
            deployment: deployment.to_owned(),
            stream: format!(
                "QUENCH_{}",
                deployment.to_ascii_uppercase().replace('-', "_")
            ),
            events: format!("quench.{deployment}.events"),
            heartbeats: format!("quench.{deployment}.heartbeat"),
            acks: format!("quench.{deployment}.acks.*"),
        })
    }

    /// Where edge `edge` publishes its acknowledgements.
    pub fn acks_of(&self, edge: &str) -> String {
        format!("quench.{}.acks.{}", self.deployment, subject_token(edge))
    }

    /// The reply-subject prefix of edge `edge`'s connection.
    pub fn inbox_of(&self, edge: &str) -> String {
        format!("_INBOX.{}.{}", self.deployment, subject_token(edge))
    }

    /// Whether an acknowledgement received on `subject` may claim to come from `edge`.
    pub fn ack_subject_matches(&self, subject: &str, edge: &str) -> bool {
        subject == self.acks_of(edge)
    }
}

/// An edge id as one subject token. Edge ids are labels (letters, digits and `. _ : @ / + -`), so only
/// `.` needs replacing.
pub fn subject_token(edge: &str) -> String {
    edge.replace('.', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_edge_acknowledges_on_a_subject_of_its_own() {
        let names = Names::for_deployment("prod").expect("valid");
        assert_eq!(names.acks, "quench.prod.acks.*");
        assert_eq!(names.acks_of("edge-eu-1"), "quench.prod.acks.edge-eu-1");
        assert_eq!(names.acks_of("eu.1"), "quench.prod.acks.eu_1");
        assert_eq!(names.inbox_of("eu.1"), "_INBOX.prod.eu_1");
        assert!(names.ack_subject_matches("quench.prod.acks.eu_1", "eu.1"));
        assert!(!names.ack_subject_matches("quench.prod.acks.edge-2", "edge-1"));
    }
}
