//! What a webhook can be told about. The names are wire text: receivers see them in the `type` field and
//! the `Quench-Event` header, and admins choose them when subscribing, so they never change.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEvent {
    /// A key was revoked (by an admin, a leak report or a usage rule).
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    /// An edge reported a usage alert.
    #[serde(rename = "alert.raised")]
    AlertRaised,
}

impl WebhookEvent {
    /// Every event, in the order the API lists them.
    pub const ALL: [Self; 2] = [Self::KeyRevoked, Self::AlertRaised];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyRevoked => "key.revoked",
            Self::AlertRaised => "alert.raised",
        }
    }

    /// The event named `text`, exactly as on the wire.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|event| event.as_str() == text)
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for event in WebhookEvent::ALL {
            assert_eq!(WebhookEvent::parse(event.as_str()), Some(event));
            let json = serde_json::to_string(&event).expect("serialises");
            assert_eq!(json, format!("\"{event}\""));
            assert_eq!(
                serde_json::from_str::<WebhookEvent>(&json).expect("parses"),
                event
            );
        }
        assert_eq!(WebhookEvent::parse("key.Revoked"), None);
        assert_eq!(WebhookEvent::parse(""), None);
    }
}
