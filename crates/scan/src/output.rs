//! Reports: text for people, JSON for scripts, SARIF 2.1.0 for code-scanning tools.

use serde_json::{Value, json};

use crate::Finding;

pub const RULE_ID: &str = "quench-api-key";

pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let commit = f
            .location
            .commit
            .as_deref()
            .map(|c| format!(" (commit {})", &c[..c.len().min(12)]))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}:{}:{}: Quench key {}{commit}\n",
            f.location.path, f.location.line, f.location.column, f.redacted
        ));
    }
    out
}

pub fn json(findings: &[Finding]) -> Value {
    json!({ "findings": findings })
}

pub fn sarif(findings: &[Finding]) -> Value {
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": RULE_ID,
                "level": "error",
                "message": {"text": format!("Quench API key {} (confirmed by its checksum). Revoke it.", f.redacted)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.location.path},
                        "region": {"startLine": f.location.line, "startColumn": f.location.column}
                    }
                }],
                "partialFingerprints": {"quenchKeyId/v1": format!("{}_{}", f.prefix, f.key_id)}
            });
            if let Some(commit) = &f.location.commit {
                result["properties"] = json!({"commit": commit});
            }
            result
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "quench",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": [{
                    "id": RULE_ID,
                    "name": "QuenchApiKey",
                    "shortDescription": {"text": "Quench API key"},
                    "fullDescription": {"text": "A Quench API key, confirmed by its CRC32 checksum: not a look-alike string."},
                    "defaultConfiguration": {"level": "error"},
                    "help": {"text": "Revoke the key (quench keys revoke ID --reason leaked, or quench scan --report) and issue a new one."}
                }]
            }},
            "results": results
        }]
    })
}
