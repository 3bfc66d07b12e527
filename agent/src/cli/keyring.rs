//! `dcnet keyring list|generate|install|use|remove`: the gossip keys of the local node, and
//! where the cluster stands in a rotation.
//!
//! A rotation, as with Serf: `install` the new key on every node, `use` it on every node,
//! `remove` the old one on every node. Each step is refused (409) while a live node is not
//! ready for it, so a step taken in the wrong order cannot cut a node off.

use serde_json::{Value, json};

use super::{Client, call_json, expect_ok, render_table};
use crate::gossip::keyring::Key;

/// `dcnet keyring list`: each node's keys, by id, and the primary one.
pub fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "GET", "/v1/keyring", None)?;
    expect_ok(status, &body, "listing the gossip keys")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let keys = &n["keyring"];
            let primary = keys["primary"].as_str().unwrap_or("");
            let others: Vec<&str> = keys["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .filter(|k| *k != primary)
                .collect();
            vec![
                n["name"]
                    .as_str()
                    .or(n["node_id"].as_str())
                    .unwrap_or("?")
                    .to_owned(),
                if n["up"] == true { "up" } else { "down" }.to_owned(),
                if keys.is_null() { "?" } else { primary }.to_owned(),
                others.join(","),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["NODE", "STATE", "PRIMARY", "ALSO ACCEPTS"], &rows)
    );
    Ok(())
}

/// `dcnet keyring generate`: a new random key, printed in base64.
pub fn generate() {
    let key = Key::generate();
    eprintln!(
        "key id {}: install it on every node with `dcnet keyring install`",
        key.id()
    );
    println!("{}", key.to_base64());
}

/// `dcnet keyring install KEY`.
pub fn install(client: &Client, key: &str) -> anyhow::Result<()> {
    let (status, body) = call_json(
        client,
        "POST",
        "/v1/keyring/keys",
        Some(&json!({"key": key})),
    )?;
    expect_ok(status, &body, "installing the gossip key")?;
    let id = body["key"].as_str().unwrap_or("?");
    if body["installed"] == true {
        println!(
            "installed key {id}; once every node has it, make it primary with `dcnet keyring use {id}`"
        );
    } else {
        println!("key {id} was already installed");
    }
    Ok(())
}

/// `dcnet keyring use KEY`.
pub fn use_key(client: &Client, key: &str, force: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(
        client,
        "PUT",
        "/v1/keyring/primary",
        Some(&json!({"key": key, "force": force})),
    )?;
    expect_ok(status, &body, "making the gossip key primary")?;
    println!(
        "this node now sends with key {}",
        body["primary"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `dcnet keyring remove KEY`.
pub fn remove(client: &Client, key: &str, force: bool) -> anyhow::Result<()> {
    let path = format!(
        "/v1/keyring/keys/{key}{}",
        if force { "?force=true" } else { "" }
    );
    let (status, body) = call_json(client, "DELETE", &path, None)?;
    expect_ok(status, &body, "removing the gossip key")?;
    println!("removed key {}", body["removed"].as_str().unwrap_or("?"));
    Ok(())
}
