//! `dcnet cluster ...`: this cluster's identity, linked clusters, and the CLI's context.
//!
//! A link is kept by this cluster's masters ([`crate::scheduler::links`]); `link` asks the
//! other cluster who it is (`GET /v1/cluster`, with the credential and CA given) and where
//! its DNS answers (its nodes, port 53, unless `--dns` says otherwise) before storing it.
//! The context (`switch`) is this user's: a file naming the linked cluster every other
//! command then talks to, as `--cluster` does for one command.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::{Client, call_json, expect_ok, expect_status};
use crate::identity::ClusterIdentity;

/// Environment variable naming the context file (default `~/.config/dcnet/context`).
pub const ENV_CONTEXT: &str = "DCNET_CONTEXT";

/// The file that names the current cluster context.
pub fn context_path() -> PathBuf {
    if let Some(path) = std::env::var_os(ENV_CONTEXT).filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"))
        .join("dcnet")
        .join("context")
}

/// The linked cluster commands talk to by default, if a `switch` chose one.
pub fn current_context() -> anyhow::Result<Option<String>> {
    let path = context_path();
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|n| !n.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the cluster context {}", path.display())),
    }
}

/// What `dcnet cluster link` is given.
pub struct LinkArgs<'a> {
    pub url: &'a str,
    pub name: &'a str,
    pub ca: Option<&'a Path>,
    pub token_file: Option<&'a Path>,
    pub dns: &'a [SocketAddr],
}

/// A token from `path`: a credential file (`token = "..."`) or the bare token.
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = match toml::from_str::<dcnet_auth::client::CredentialFile>(&text) {
        Ok(file) => file.token.with_context(|| {
            format!(
                "{} is a credential file without a token: a link needs a token",
                path.display()
            )
        })?,
        Err(_) => text.trim().to_owned(),
    };
    if token.is_empty() {
        bail!("{} holds no token", path.display());
    }
    Ok(token)
}

/// `dcnet cluster link`: asks the other cluster who it is, then stores the link.
pub fn link(local: &Client, args: &LinkArgs<'_>) -> anyhow::Result<String> {
    let ca = args
        .ca
        .map(|p| {
            std::fs::read_to_string(p).with_context(|| format!("reading the CA {}", p.display()))
        })
        .transpose()?;
    let token = args.token_file.map(read_token).transpose()?;
    let url = args.url.trim_end_matches('/');
    if url.starts_with("https://") && ca.is_none() {
        bail!("{url} is HTTPS: give the other cluster's CA certificate with --ca (its pki/ca.crt)");
    }
    let remote = local
        .clone()
        .to_url(args.name, url, ca.clone(), token.as_deref());
    let (status, who) = call_json(&remote, "GET", "/v1/cluster", None)?;
    expect_ok(status, &who, &format!("asking {url} which cluster it is"))?;
    let identity: ClusterIdentity = serde_json::from_value(who)
        .with_context(|| format!("{url}/v1/cluster is not a dcnet cluster's answer"))?;
    let dns = if args.dns.is_empty() {
        let (status, nodes) = call_json(&remote, "GET", "/v1/nodes", None)?;
        expect_ok(
            status,
            &nodes,
            &format!("listing {url}'s nodes for its DNS servers"),
        )?;
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["state"] == "up")
            .filter_map(|n| n["address"].as_str()?.parse().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
    } else {
        args.dns.to_vec()
    };
    let body = json!({
        "id": identity.id,
        "cluster": identity.name,
        "url": url,
        "ca": ca,
        "token": token,
        "domain": identity.domain,
        "dns": dns,
    });
    let (status, answer) = call_json(
        local,
        "PUT",
        &format!("/cluster/v1/links/{}", args.name),
        Some(&body),
    )?;
    if status != 201 {
        expect_ok(
            status,
            &answer,
            &format!("storing the link {:?}", args.name),
        )?;
    }
    let servers: Vec<String> = dns.iter().map(ToString::to_string).collect();
    Ok(format!(
        "linked {} ({}, id {}) as {:?}: `--cluster {}` on any command, or `dcnet cluster switch {}`, talks to it; its names resolve here as <task>.<framework>.{}.<domain> (asking {})\n",
        identity.name,
        url,
        identity.id,
        args.name,
        args.name,
        args.name,
        args.name,
        if servers.is_empty() {
            "nobody: it listed no node up".to_owned()
        } else {
            servers.join(", ")
        }
    ))
}

/// `dcnet cluster unlink`.
pub fn unlink(local: &Client, name: &str) -> anyhow::Result<String> {
    let (status, answer) = call_json(local, "DELETE", &format!("/cluster/v1/links/{name}"), None)?;
    expect_ok(status, &answer, &format!("unlinking {name:?}"))?;
    if current_context()?.as_deref() == Some(name) {
        std::fs::remove_file(context_path()).ok();
        return Ok(format!(
            "{name} unlinked; the CLI talks to this cluster again\n"
        ));
    }
    Ok(format!("{name} unlinked\n"))
}

/// `dcnet cluster switch NAME` (or `--local`): the context for later commands.
pub fn switch(local: &Client, name: Option<&str>) -> anyhow::Result<String> {
    let path = context_path();
    let Some(name) = name else {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        return Ok("commands talk to this cluster\n".to_owned());
    };
    // Only to a link that exists, and whose credential this user may use.
    let remote = local.clone().for_cluster(name)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, format!("{name}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(format!(
        "commands talk to the cluster linked as {name} ({}) until `dcnet cluster switch --local`\n",
        remote.base_url()
    ))
}

/// `dcnet cluster list`: this cluster, then its links; `*` marks the context.
pub fn list(local: &Client) -> anyhow::Result<(Value, String)> {
    let (status, answer) = call_json(local, "GET", "/cluster/v1/links", None)?;
    expect_status(status, 200, &answer, "listing the linked clusters")?;
    let context = current_context()?;
    let me = &answer["cluster"];
    let mut rows = vec![vec![
        if context.is_none() { "*" } else { "" }.to_owned(),
        "(this cluster)".to_owned(),
        me["name"].as_str().unwrap_or_default().to_owned(),
        me["id"].as_str().unwrap_or_default().to_owned(),
        local.base_url(),
        String::new(),
    ]];
    for link in answer["links"].as_array().into_iter().flatten() {
        let name = link["name"].as_str().unwrap_or_default();
        let dns: Vec<&str> = link["dns"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push(vec![
            if context.as_deref() == Some(name) {
                "*"
            } else {
                ""
            }
            .to_owned(),
            name.to_owned(),
            link["cluster"].as_str().unwrap_or_default().to_owned(),
            link["id"].as_str().unwrap_or_default().to_owned(),
            link["url"].as_str().unwrap_or_default().to_owned(),
            dns.join(","),
        ]);
    }
    let table = super::render_table(&["", "LINK", "CLUSTER", "ID", "URL", "DNS"], &rows);
    Ok((answer, table))
}
