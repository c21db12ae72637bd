//! Usage alerts from the edges: recorded once each, revoked by policy, counted, and passed on to webhooks.
//!
//! An edge's alert names the rule it broke; what happens then is the manager's decision, from its own copy
//! of the usage policy: a rule with `"action": "revoke"` revokes the key at once (reason `anomaly`), any
//! other rule, or one this manager does not know, only records the alert. Revoking is the safe direction,
//! so an edge can at worst cause a revocation its operator's policy allows; it can never make a key valid.
//! Alert ids are chosen by the edge, so a report retried after a lost answer is recorded once, and a
//! revoking rule is applied again on the retry (revocation is idempotent) in case the first attempt
//! stopped between recording and revoking.

use std::{collections::BTreeMap, sync::Mutex};

pub use quench_api::alerts::AlertOutcome;
use quench_api::alerts::{AlertReport, UsageAlert};
use quench_core::{KeyId, Timestamp, usage::Action};
use quench_store::{Actor, NewAlert, StoreError};

use crate::{Manager, metrics::ManagerMetrics};

/// Most alerts in one report.
pub const MAX_ALERTS: usize = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Alerts counted per rule of the manager's policy (others under `other`, so an edge cannot grow the
/// label set), and revocations they caused.
#[derive(Debug, Default)]
pub struct AlertMetrics {
    by_rule: Mutex<BTreeMap<(String, &'static str), u64>>,
}

impl AlertMetrics {
    fn count(&self, rule: &str, action: &'static str) {
        if let Ok(mut counts) = self.by_rule.lock() {
            *counts.entry((rule.to_owned(), action)).or_default() += 1;
        }
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP quench_alerts_total Usage alerts recorded, by rule and action.\n# TYPE quench_alerts_total counter"
        );
        if let Ok(counts) = self.by_rule.lock() {
            for ((rule, action), n) in counts.iter() {
                let _ = writeln!(
                    out,
                    "quench_alerts_total{{rule=\"{rule}\",action=\"{action}\"}} {n}"
                );
            }
        }
    }
}

fn check(report: &AlertReport) -> Result<(), AlertError> {
    let invalid = |m: String| Err(AlertError::Invalid(m));
    if report.alerts.is_empty() || report.alerts.len() > MAX_ALERTS {
        return invalid(format!("alerts: between 1 and {MAX_ALERTS}"));
    }
    let name_ok = |text: &str, max: usize| {
        !text.is_empty()
            && text.len() <= max
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
    };
    if !name_ok(&report.edge, 128) || !name_ok(&report.region, 128) {
        return invalid("edge and region: 1 to 128 letters, digits and - _ . : @".into());
    }
    for alert in &report.alerts {
        if !(16..=64).contains(&alert.id.len()) || !alert.id.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return invalid(format!("alert id {:?}: 16 to 64 hex digits", alert.id));
        }
        if !name_ok(&alert.rule, 64) || !name_ok(&alert.kind, 32) {
            return invalid(format!(
                "alert {}: rule and kind must be short names",
                alert.id
            ));
        }
        let m = &alert.measures;
        if ![m.requests, m.distinct_addresses, m.usual]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
        {
            return invalid(format!(
                "alert {}: measures must be finite and not negative",
                alert.id
            ));
        }
    }
    Ok(())
}

impl Manager {
    /// Records an edge's alerts and applies the policy's actions; one outcome per alert, in order.
    pub async fn receive_alerts(
        &self,
        report: &AlertReport,
        source: Option<String>,
    ) -> Result<Vec<AlertOutcome>, AlertError> {
        check(report)?;
        // The keys' owners in one query; a key not found has none (and is not revoked).
        let ids: Vec<KeyId> = report.alerts.iter().map(|a| a.key_id).collect();
        let owners: std::collections::HashMap<KeyId, quench_core::Owner> =
            self.store.owners(&ids).await?.into_iter().collect();
        let mut outcomes = Vec::with_capacity(report.alerts.len());
        let mut revoked_events = Vec::new();
        for alert in &report.alerts {
            let owner = owners.get(&alert.key_id).cloned();
            let (outcome, event) = self
                .receive_alert(report, alert, owner, source.clone())
                .await?;
            outcomes.push(outcome);
            revoked_events.extend(event);
        }
        if !revoked_events.is_empty() {
            self.publish(&revoked_events).await;
        }
        self.notifications.wake();
        Ok(outcomes)
    }

    async fn receive_alert(
        &self,
        report: &AlertReport,
        alert: &UsageAlert,
        owner: Option<quench_core::Owner>,
        source: Option<String>,
    ) -> Result<(AlertOutcome, Option<quench_core::Event>), AlertError> {
        let rule = self.config.usage_policy.rule(&alert.rule);
        let action = rule.map_or(Action::Alert, |r| r.action);
        let known = owner.is_some();
        let details = serde_json::json!({
            "region": report.region,
            "window_seconds": alert.window_seconds,
            "measures": alert.measures,
        });
        let now = Timestamp::now();
        let (record, new) = self
            .store
            .record_alert(&NewAlert {
                id: alert.id.to_ascii_lowercase(),
                key_id: alert.key_id,
                owner,
                rule: alert.rule.clone(),
                kind: alert.kind.clone(),
                action,
                edge: report.edge.clone(),
                raised_at: alert.raised_at,
                received_at: now,
                details: details.to_string(),
            })
            .await?;
        if new {
            let label = if rule.is_some() { &alert.rule } else { "other" };
            self.alert_metrics.count(label, action.as_str());
            tracing::warn!(key = %alert.key_id, rule = %alert.rule, edge = %report.edge,
                action = action.as_str(), "usage alert recorded");
        }
        let mut event = None;
        // The recorded action, not this report's view: a retry follows what was decided the first time.
        if record.alert.action == Action::Revoke && known {
            event = self
                .revoke_for_anomaly(alert.key_id, &alert.rule, &report.edge, source)
                .await?;
        }
        let outcome = AlertOutcome {
            id: record.alert.id,
            seq: record.seq,
            new,
            action: record.alert.action.as_str().to_owned(),
            revoked: event.is_some(),
        };
        Ok((outcome, event))
    }

    async fn revoke_for_anomaly(
        &self,
        key: KeyId,
        rule: &str,
        edge: &str,
        source: Option<String>,
    ) -> Result<Option<quench_core::Event>, AlertError> {
        // Rule (64) and edge (128) names are short ASCII, checked in `check`: always within REASON_MAX.
        let reason = format!("anomaly: usage rule {rule} at edge {edge}");
        let actor = Actor {
            principal: format!("usage-policy:{rule}"),
            source,
            at: Timestamp::now(),
        };
        let revoked = self.store.revoke_key(key, &reason, &actor).await?;
        if revoked.event.is_some() {
            ManagerMetrics::add(&self.metrics.keys_revoked, 1);
            ManagerMetrics::add(&self.metrics.anomalies_revoked, 1);
            tracing::warn!(%key, rule, edge, "key revoked by usage policy");
        }
        Ok(revoked.event)
    }
}
