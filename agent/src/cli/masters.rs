//! `dcnet master list|add|remove`: the masters' quorum, through the leading scheduler.

use serde_json::json;

use super::{Client, call_json, expect_ok, render_table};

/// `dcnet master list`.
pub fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "GET", "/v1/masters", None)?;
    expect_ok(status, &body, "listing the masters")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let leader = body["leader"]["id"].as_u64();
    let rows: Vec<Vec<String>> = body["masters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = match (m["id"].as_u64() == leader, m["voter"] == true) {
                (true, _) => "leader",
                (false, true) => "voter",
                (false, false) => "learner",
            };
            vec![
                m["url"].as_str().unwrap_or("?").to_owned(),
                role.to_owned(),
                m["id"]
                    .as_u64()
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    print!("{}", render_table(&["MASTER", "ROLE", "RAFT ID"], &rows));
    println!("term {}", body["term"].as_u64().unwrap_or(0));
    Ok(())
}

/// `dcnet master add ADDRESS`.
pub fn add(client: &Client, address: &str) -> anyhow::Result<()> {
    eprintln!("adding {address}: it catches up on the log first, then votes");
    let (status, body) = call_json(
        client,
        "POST",
        "/v1/masters",
        Some(&json!({"address": address})),
    )?;
    expect_ok(status, &body, &format!("adding master {address}"))?;
    println!("{}", body["message"].as_str().unwrap_or("added"));
    Ok(())
}

/// `dcnet master remove ADDRESS`.
pub fn remove(client: &Client, address: &str) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "DELETE", &format!("/v1/masters/{address}"), None)?;
    expect_ok(status, &body, &format!("removing master {address}"))?;
    println!("{}", body["message"].as_str().unwrap_or("removed"));
    Ok(())
}
