//! `dcnet policy ...`: network policies through the leading scheduler's `/v2/policies`.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use super::{Client, call_json, expect_ok, expect_status};

/// `dcnet policy add FILE [--replace]`: the policy is checked here first, so a mistake is
/// explained before anything is sent.
pub fn add(client: &Client, file: &Path, replace: bool) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the policy file {}", file.display()))?;
    let policy = dcnet_policy::Policy::parse(&text)
        .with_context(|| format!("{} is not a valid policy", file.display()))?;
    let body = serde_json::to_value(&policy)?;
    let answer = if replace {
        let path = format!("/v2/policies/{}", policy.id);
        let (status, answer) = call_json(client, "PUT", &path, Some(&body))?;
        expect_ok(
            status,
            &answer,
            &format!("replacing the policy {}", policy.id),
        )?;
        answer
    } else {
        let (status, answer) = call_json(client, "POST", "/v2/policies", Some(&body))?;
        expect_status(
            status,
            201,
            &answer,
            &format!("adding the policy {}", policy.id),
        )?;
        answer
    };
    Ok(format!(
        "policy {} {}; it selects {}\n",
        policy.id,
        if replace { "replaced" } else { "added" },
        selects(&answer)
    ))
}

fn selects(policy: &Value) -> String {
    let apps: Vec<&str> = policy["selects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if apps.is_empty() {
        "no app now".to_owned()
    } else {
        apps.join(", ")
    }
}

/// `dcnet policy list`.
pub fn list(client: &Client, json: bool) -> anyhow::Result<String> {
    let (status, answer) = call_json(client, "GET", "/v2/policies", None)?;
    expect_ok(status, &answer, "listing the policies")?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&answer)?));
    }
    let rows: Vec<Vec<String>> = answer["policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let count = |key: &str| {
                p[key]
                    .as_array()
                    .map_or("-".to_owned(), |r| r.len().to_string())
            };
            vec![
                p["id"].as_str().unwrap_or_default().to_owned(),
                count("ingress"),
                count("egress"),
                p["denied"].as_u64().unwrap_or_default().to_string(),
                selects(p),
            ]
        })
        .collect();
    Ok(super::render_table(
        &["ID", "INGRESS RULES", "EGRESS RULES", "DENIED", "SELECTS"],
        &rows,
    ))
}

/// `dcnet policy remove ID`.
pub fn remove(client: &Client, id: &str) -> anyhow::Result<String> {
    let (status, answer) = call_json(client, "DELETE", &format!("/v2/policies/{id}"), None)?;
    expect_ok(status, &answer, &format!("removing the policy {id}"))?;
    Ok(format!("policy {id} removed\n"))
}
