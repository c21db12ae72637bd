//! After healing: waiting for the edges to converge, then reading what the managers and every edge hold.

use std::{collections::HashMap, sync::Arc, time::Duration};

use serde_json::Value;

use crate::{
    check::{EdgeState, Final, KeyState},
    deploy::{BOOTSTRAP, Deployment},
    history::Answer,
    load::Clients,
};

/// Waits until every edge is `ok`, has applied the head it was shown, and all hold the same head, twice
/// in a row; false if that did not happen within `within`.
pub async fn converge(deployment: &Deployment, within: Duration) -> bool {
    let end = tokio::time::Instant::now() + within;
    let mut agreed = 0;
    while tokio::time::Instant::now() < end {
        let mut heads = Vec::new();
        for edge in &deployment.edges {
            let health = deployment.health(&edge.url).await.unwrap_or(Value::Null);
            let (applied, head) = (health["applied_seq"].as_u64(), health["head_seq"].as_u64());
            let current = health["status"] == "ok" && applied.is_some() && applied >= head;
            heads.push(current.then_some(applied).flatten());
        }
        let first = heads.first().copied().flatten();
        if first.is_some() && heads.iter().all(|h| *h == first) {
            agreed += 1;
            if agreed == 2 {
                return true;
            }
        } else {
            agreed = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// Every key the managers hold, by id, read page by page from the first manager that answers.
async fn key_states(http: &reqwest::Client, managers: &[String]) -> HashMap<String, KeyState> {
    for manager in managers {
        let mut states = HashMap::new();
        let mut cursor: Option<String> = None;
        let complete = loop {
            let mut request = http
                .get(format!("{manager}/v1/keys"))
                .bearer_auth(BOOTSTRAP)
                .query(&[("limit", "1000")]);
            if let Some(c) = &cursor {
                request = request.query(&[("cursor", c)]);
            }
            let Ok(page) = request.send().await else {
                break false;
            };
            let Ok(page) = page.json::<Value>().await else {
                break false;
            };
            for key in page["keys"].as_array().into_iter().flatten() {
                let status = key["status"].as_str().unwrap_or_default().to_owned();
                if let Some(id) = key["id"].as_str() {
                    states.insert(id.to_owned(), KeyState { status });
                }
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break true,
            }
        };
        if complete {
            return states;
        }
    }
    HashMap::new()
}

/// What the managers and every edge hold for every key of the history.
pub async fn gather(deployment: &Deployment, clients: &Arc<Clients>) -> anyhow::Result<Final> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut states = key_states(&http, &deployment.manager_urls()).await;
    let keys = clients.all_keys();
    let ids: Vec<String> = {
        let history = clients
            .history
            .lock()
            .map_err(|_| anyhow::anyhow!("history lock poisoned"))?;
        history.keys.iter().map(|k| k.id.clone()).collect()
    };
    let mut edges = Vec::new();
    let mut asking = tokio::task::JoinSet::new();
    for (i, edge) in deployment.edges.iter().enumerate() {
        let (clients, keys, url, count) =
            (clients.clone(), keys.clone(), edge.url.clone(), ids.len());
        asking.spawn(async move {
            let mut answers = vec![Answer::Nothing; count];
            for (key, secret) in &keys {
                let mut answer = Answer::Nothing;
                for _ in 0..3 {
                    answer = clients.verify(&url, secret).await;
                    if answer != Answer::Nothing {
                        break;
                    }
                }
                if let Some(slot) = answers.get_mut(*key as usize) {
                    *slot = answer;
                }
            }
            (i, answers)
        });
    }
    let mut answers: Vec<Vec<Answer>> = vec![Vec::new(); deployment.edges.len()];
    while let Some(done) = asking.join_next().await {
        let (i, found) = done?;
        answers[i] = found;
    }
    for (edge, answers) in deployment.edges.iter().zip(answers) {
        let health = deployment.health(&edge.url).await.unwrap_or(Value::Null);
        edges.push(EdgeState {
            id: edge.id.clone(),
            applied: health["applied_seq"].as_u64(),
            head: health["head_seq"].as_u64(),
            answers,
        });
    }
    Ok(Final {
        keys: ids.iter().map(|id| states.remove(id)).collect(),
        edges,
    })
}
