//! `dcnet nodes`: the cluster membership as the local agent sees it; `dcnet node
//! decommission|decommissioned`, through the leading scheduler.

use super::{Client, call_json, expect_ok};
use crate::node::{Member, NodeState};

/// `dcnet node decommission NODE`.
pub fn decommission(client: &Client, node: &str) -> anyhow::Result<()> {
    let (status, body) = call_json(
        client,
        "PUT",
        &format!("/v1/decommissioned/{node}"),
        Some(&serde_json::json!({})),
    )?;
    expect_ok(status, &body, &format!("decommissioning {node}"))?;
    println!("{}", body["message"].as_str().unwrap_or("decommissioned"));
    Ok(())
}

/// `dcnet node decommissioned`.
pub fn decommissioned(client: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "GET", "/v1/decommissioned", None)?;
    expect_ok(status, &body, "listing the decommissioned nodes")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body["nodes"])?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = body["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            ["name", "id", "at"]
                .iter()
                .map(|k| n[*k].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .collect();
    print!(
        "{}",
        super::render_table(&["NAME", "ID", "DECOMMISSIONED AT"], &rows)
    );
    Ok(())
}

/// Renders members as an aligned table, one line per node.
pub fn render_table(members: &[Member]) -> String {
    let header = [
        "NAME",
        "STATE",
        "ADDRESS",
        "REGION",
        "ZONE",
        "ROLES",
        "LAST HEARD",
        "ID",
    ];
    let rows: Vec<[String; 8]> = members
        .iter()
        .map(|m| {
            let name = m.name.clone().unwrap_or_else(|| "?".into());
            [
                if m.is_self { format!("{name} *") } else { name },
                match m.state {
                    NodeState::Up => "up".into(),
                    NodeState::Down => "down".into(),
                },
                m.address.map_or_else(|| "-".into(), |a| a.to_string()),
                m.region.clone().unwrap_or_else(|| "-".into()),
                m.zone.clone().unwrap_or_else(|| "-".into()),
                if m.roles.is_empty() {
                    "-".into()
                } else {
                    m.roles.join(",")
                },
                format!("{:.1}s ago", m.last_heard_secs_ago),
                m.id.clone(),
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    super::render_table(&header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_and_marks_self() {
        let member = |name: &str, state, is_self| Member {
            id: format!("id-{name}"),
            name: Some(name.into()),
            address: Some("10.0.0.1".parse().unwrap()),
            region: Some("r1".into()),
            zone: None,
            roles: vec!["agent".into()],
            state,
            last_heard: String::new(),
            last_heard_secs_ago: 0.25,
            generation: 1,
            is_self,
        };
        let table = render_table(&[
            member("node-1", NodeState::Up, true),
            member("n2", NodeState::Down, false),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME      STATE"), "{table}");
        assert!(lines[1].starts_with("node-1 *  up     10.0.0.1"), "{table}");
        assert!(lines[2].starts_with("n2        down"), "{table}");
        assert!(
            lines[2].ends_with("0.2s ago    id-n2") || lines[2].ends_with("0.3s ago    id-n2"),
            "{table}"
        );
    }
}
