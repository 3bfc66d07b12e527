//! `dcnet app add|update|list|remove|scale|restart|versions|rollback`, `dcnet task
//! list|kill` and `dcnet deployment list|rollback`.
//!
//! Apps go through the local agent, which forwards `/v2` calls to the leading scheduler;
//! `task list` reads the tasks' own reports from gossip (`/v1/tasks`), so it works while no
//! scheduler runs.

use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

use super::{Client, call_json, render_table};
use crate::api::TaskRow;

/// Turns an error answer into a message: Marathon's `details` one per line.
fn failure(status: u16, body: &Value, what: &str) -> anyhow::Error {
    let mut text = format!(
        "{what}: {} ({status})",
        body["message"].as_str().unwrap_or("the scheduler refused")
    );
    if let Some(details) = body["details"].as_array() {
        for d in details {
            let errors: Vec<&str> = d["errors"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            text += &format!(
                "\n  {}: {}",
                d["path"].as_str().unwrap_or("?"),
                errors.join("; ")
            );
        }
    }
    anyhow::anyhow!(text)
}

/// Reads an app definition file as JSON.
fn read_definition(file: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the app definition {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!("{} is not valid JSON; an app definition looks like {{\"id\": \"/web\", \"cmd\": \"...\", \"instances\": 3}}", file.display())
    })
}

/// `dcnet app update FILE`: replaces an app's definition with FILE's. A change to what its
/// tasks run is a new version, rolled out as the app's upgrade strategy allows.
pub fn update(api: &Client, file: &Path, json: bool) -> anyhow::Result<()> {
    let value = read_definition(file)?;
    let Some(id) = value["id"].as_str() else {
        bail!(
            "{} has no \"id\": the app to update is named by it",
            file.display()
        );
    };
    check_id(id)?;
    let id = crate::app::absolute_id(id);
    let (status, body) = call_json(api, "GET", &format!("/v2/apps{id}"), None)?;
    if status != 200 {
        return Err(failure(status, &body, &format!("updating {id}")));
    }
    // What tasks run changes with the configuration's version, not with a scale.
    let config_version = |app: &Value| app["versionInfo"]["lastConfigChangeAt"].clone();
    let before = config_version(&body["app"]);
    let (status, body) = call_json(api, "PUT", &format!("/v2/apps{id}"), Some(&value))?;
    if status != 200 {
        return Err(failure(status, &body, &format!("updating {id}")));
    }
    let (_, after) = call_json(api, "GET", &format!("/v2/apps{id}"), None)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else if config_version(&after["app"]) == before {
        println!("app {id} updated; its tasks run as before (no new version)");
    } else {
        println!(
            "app {id} updated to version {}: new tasks start, old ones stop as new ones are ready",
            config_version(&after["app"]).as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `dcnet app add FILE`: the app definition in FILE (JSON, as for Marathon).
pub fn add(api: &Client, file: &Path, json: bool) -> anyhow::Result<()> {
    let value = read_definition(file)?;
    let (status, body) = call_json(api, "POST", "/v2/apps", Some(&value))?;
    if status != 201 {
        return Err(failure(
            status,
            &body,
            &format!("adding {}", file.display()),
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    println!(
        "app {} added: {} instance(s); follow it with `dcnet app list` and `dcnet task list`",
        body["id"].as_str().unwrap_or("?"),
        body["instances"]
    );
    // The scheduler names them in a header; the same parser says which they are here.
    if let Ok(parsed) = crate::app::parse(&value, None, "")
        && !parsed.ignored.is_empty()
    {
        println!(
            "note: dcnet ignored these fields: {}",
            parsed.ignored.join(", ")
        );
    }
    Ok(())
}

/// `dcnet app list`.
pub fn list(api: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(api, "GET", "/v2/apps", None)?;
    if status != 200 {
        return Err(failure(status, &body, "listing apps"));
    }
    let (status, queue) = call_json(api, "GET", "/v2/queue", None)?;
    if status != 200 {
        return Err(failure(status, &queue, "reading the launch queue"));
    }
    let mut apps = body["apps"].as_array().cloned().unwrap_or_default();
    with_waiting(&mut apps, &queue);
    if json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
        return Ok(());
    }
    print!("{}", apps_table(&apps));
    Ok(())
}

/// Adds to each app why it waits (`waiting`, the CLI's own field), from the launch queue.
fn with_waiting(apps: &mut [Value], queue: &Value) {
    for item in queue["queue"].as_array().into_iter().flatten() {
        let why = &item["processedOffersSummary"]["rejectSummaryLastOffers"][0]["reason"];
        if let Some(app) = apps.iter_mut().find(|a| a["id"] == item["app"]["id"])
            && why.is_string()
        {
            app["waiting"] = why.clone();
        }
    }
}

/// The apps as a table.
pub fn apps_table(apps: &[Value]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let network = a["networks"][0]["name"]
                .as_str()
                .map_or_else(|| "host".to_owned(), |n| format!("overlay {n}"));
            let ports = a["container"]["portMappings"]
                .as_array()
                .or_else(|| a["portDefinitions"].as_array());
            let vips: Vec<String> = ports
                .into_iter()
                .flatten()
                .flat_map(|p| p["labels"].as_object().into_iter().flatten())
                .filter(|(k, _)| k.starts_with("VIP_"))
                .filter_map(|(_, v)| v.as_str().map(str::to_owned))
                .collect();
            vec![
                a["id"].as_str().unwrap_or("?").to_owned(),
                format!("{}/{}", a["tasksRunning"], a["instances"]),
                if a["healthChecks"].as_array().is_some_and(|h| !h.is_empty()) {
                    format!("{}", a["tasksHealthy"])
                } else {
                    "-".into()
                },
                a["cpus"].to_string(),
                a["mem"].to_string(),
                network,
                if vips.is_empty() {
                    "-".into()
                } else {
                    vips.join(",")
                },
                a["waiting"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    render_table(
        &[
            "ID", "RUNNING", "HEALTHY", "CPUS", "MEM", "NETWORK", "VIPS", "WAITING",
        ],
        &rows,
    )
}

/// `dcnet app remove ID`.
pub fn remove(api: &Client, id: &str) -> anyhow::Result<()> {
    let id = crate::app::absolute_id(id);
    let (status, body) = call_json(api, "DELETE", &format!("/v2/apps{id}"), None)?;
    if status != 200 {
        return Err(failure(status, &body, &format!("removing {id}")));
    }
    println!("app {id} removed; its tasks are being stopped");
    Ok(())
}

/// `dcnet app scale ID N`.
pub fn scale(api: &Client, id: &str, instances: u32) -> anyhow::Result<()> {
    let id = crate::app::absolute_id(id);
    let (status, body) = call_json(api, "GET", &format!("/v2/apps{id}"), None)?;
    if status != 200 {
        return Err(failure(status, &body, &format!("scaling {id}")));
    }
    let patch = serde_json::json!({ "instances": instances });
    let (status, body) = call_json(api, "PUT", &format!("/v2/apps{id}"), Some(&patch))?;
    if status != 200 {
        return Err(failure(status, &body, &format!("scaling {id}")));
    }
    println!("app {id} scaled to {instances}");
    Ok(())
}

/// `dcnet app restart ID`.
pub fn restart(api: &Client, id: &str) -> anyhow::Result<()> {
    let id = crate::app::absolute_id(id);
    let (status, body) = call_json(
        api,
        "POST",
        &format!("/v2/apps{id}/restart"),
        Some(&serde_json::json!({})),
    )?;
    if status != 200 {
        return Err(failure(status, &body, &format!("restarting {id}")));
    }
    println!(
        "app {id} restarting: new tasks start, old ones stop as new ones are ready (deployment {})",
        body["deploymentId"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `dcnet app versions ID`.
pub fn versions(api: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let id = crate::app::absolute_id(id);
    let (status, body) = call_json(api, "GET", &format!("/v2/apps{id}/versions"), None)?;
    if status != 200 {
        return Err(failure(
            status,
            &body,
            &format!("listing the versions of {id}"),
        ));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&body["versions"])?);
        return Ok(());
    }
    for v in body["versions"].as_array().into_iter().flatten() {
        println!("{}", v.as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `dcnet app rollback ID VERSION`.
pub fn rollback(api: &Client, id: &str, version: &str) -> anyhow::Result<()> {
    let id = crate::app::absolute_id(id);
    let body = serde_json::json!({ "version": version });
    let (status, answer) = call_json(api, "PUT", &format!("/v2/apps{id}"), Some(&body))?;
    if status != 200 {
        return Err(failure(status, &answer, &format!("rolling {id} back")));
    }
    println!("app {id} going back to version {version}");
    Ok(())
}

/// `dcnet task kill TASK [--scale]`.
pub fn kill(api: &Client, task: &str, scale: bool) -> anyhow::Result<()> {
    let body = serde_json::json!({ "ids": [task] });
    let (status, answer) = call_json(
        api,
        "POST",
        &format!("/v2/tasks/delete?scale={scale}"),
        Some(&body),
    )?;
    if status != 200 {
        return Err(failure(status, &answer, &format!("killing {task}")));
    }
    if scale {
        println!("task {task} killed; its app runs one instance fewer");
    } else {
        println!("task {task} killed; its app gets a new one");
    }
    Ok(())
}

/// `dcnet deployment list`.
pub fn deployments(api: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(api, "GET", "/v2/deployments", None)?;
    if status != 200 {
        return Err(failure(status, &body, "listing the deployments"));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    print!(
        "{}",
        deployments_table(body.as_array().map_or(&[][..], Vec::as_slice))
    );
    Ok(())
}

/// The deployments as a table: one line per app a deployment changes.
pub fn deployments_table(deployments: &[Value]) -> String {
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .flat_map(|d| {
            d["currentActions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| {
                    vec![
                        d["id"].as_str().unwrap_or("?").to_owned(),
                        a["app"].as_str().unwrap_or("?").to_owned(),
                        a["action"].as_str().unwrap_or("?").to_owned(),
                        d["version"].as_str().unwrap_or("?").to_owned(),
                    ]
                })
        })
        .collect();
    render_table(&["DEPLOYMENT", "APP", "ACTION", "SINCE"], &rows)
}

/// `dcnet deployment rollback ID [--force]`.
pub fn rollback_deployment(api: &Client, id: &str, force: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(
        api,
        "DELETE",
        &format!("/v2/deployments/{id}?force={force}"),
        None,
    )?;
    match (status, force) {
        (202, true) => println!("deployment {id} forgotten; its apps stay as they are"),
        (200, false) => println!(
            "deployment {id} rolled back by deployment {}",
            body["deploymentId"].as_str().unwrap_or("?")
        ),
        _ => {
            return Err(failure(
                status,
                &body,
                &format!("rolling deployment {id} back"),
            ));
        }
    }
    Ok(())
}

/// `dcnet task list`.
pub fn tasks(api: &Client, json: bool) -> anyhow::Result<()> {
    let rows: Vec<TaskRow> = super::get_json(api, "/v1/tasks")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    print!("{}", tasks_table(&rows));
    Ok(())
}

/// The tasks as a table.
pub fn tasks_table(rows: &[TaskRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = &r.status;
            vec![
                s.task_id.clone(),
                s.app_id.clone(),
                r.node.clone(),
                match (&r.region, &r.zone) {
                    (None, None) => "-".into(),
                    (region, zone) => format!(
                        "{}/{}",
                        region.as_deref().unwrap_or("-"),
                        zone.as_deref().unwrap_or("-")
                    ),
                },
                s.ip.map_or_else(|| "-".into(), |ip| ip.to_string()),
                s.state.as_str().trim_start_matches("TASK_").to_lowercase(),
                match s.healthy {
                    None => "-".into(),
                    Some(true) => "healthy".into(),
                    Some(false) if s.health_pending => "pending".into(),
                    Some(false) => "unhealthy".into(),
                },
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    render_table(
        &[
            "TASK",
            "APP",
            "NODE",
            "REGION/ZONE",
            "IP",
            "STATE",
            "HEALTH",
            "MESSAGE",
        ],
        &cells,
    )
}

/// Refuses an app id that cannot be one, before any request.
pub fn check_id(id: &str) -> anyhow::Result<()> {
    if id.trim_matches('/').is_empty() {
        bail!("{id:?} is not an app id: give one such as /web");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::facts::launched::TaskState;

    #[test]
    fn app_table_shows_counts_network_and_vips() {
        let apps = vec![json!({
            "id": "/web", "instances": 3, "tasksRunning": 2, "tasksHealthy": 2, "cpus": 0.1, "mem": 32.0,
            "networks": [{"mode": "container", "name": "dcos"}],
            "container": {"portMappings": [{"containerPort": 80, "labels": {"VIP_0": "/web:80"}}]},
            "healthChecks": [{"protocol": "HTTP"}],
        })];
        let t = apps_table(&apps);
        let line = t.lines().nth(1).unwrap();
        assert!(
            line.contains("/web")
                && line.contains("2/3")
                && line.contains("overlay dcos")
                && line.contains("/web:80"),
            "{t}"
        );
    }

    #[test]
    fn failures_list_each_field() {
        let body = json!({"message": "Object is not valid", "details": [{"path": "/cpus", "errors": ["expected a number above 0"]}]});
        let e = failure(422, &body, "adding app.json").to_string();
        assert!(
            e.contains("Object is not valid (422)")
                && e.contains("/cpus: expected a number above 0"),
            "{e}"
        );
    }

    #[test]
    fn deployments_list_one_line_per_app() {
        let d = json!([{"id": "d1", "version": "t", "currentActions": [
            {"action": "ScaleApplication", "app": "/web"},
            {"action": "StopApplication", "app": "/db"}]}]);
        let t = deployments_table(d.as_array().unwrap());
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.contains("ScaleApplication") && t.contains("/db"), "{t}");
    }

    #[test]
    fn task_table_lower_cases_states() {
        let mut status =
            crate::facts::launched::tests_support::status("web.1", TaskState::TaskRunning);
        status.healthy = Some(false);
        let rows = vec![TaskRow {
            node: "node-2".into(),
            node_id: "x".into(),
            region: Some("r1".into()),
            zone: Some("z2".into()),
            status,
        }];
        let t = tasks_table(&rows);
        assert!(
            t.contains("running") && t.contains("unhealthy") && t.contains("node-2"),
            "{t}"
        );
        assert!(t.contains("r1/z2"), "{t}");
        let mut rows = rows;
        rows[0].status.health_pending = true;
        let t = tasks_table(&rows);
        assert!(t.contains("pending") && !t.contains("unhealthy"), "{t}");
    }
}
