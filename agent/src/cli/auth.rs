//! `dcnet auth ...`: the cluster's key material, tokens and basic users.
//!
//! `init` and `token create --offline` work on the key files directly (root on a master, no
//! agent needed: that is how the first admin credential comes to be). Everything else goes
//! through the local agent to the leading scheduler, with an admin credential.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use dcnet_auth::client::CredentialFile;
use dcnet_auth::{PkiDir, Role};
use serde_json::{Value, json};

use super::{Client, call_json, expect_status, render_table};

/// How long the credential `init` writes lives.
pub const INIT_TTL: Duration = Duration::from_secs(365 * 86_400);

fn unix_now() -> u64 {
    crate::unix_ms() / 1000
}

/// `dcnet auth init`: makes the cluster CA and token keys in `pki_dir`, and an admin token
/// for `subject` saved as a credential file at `credentials`.
pub fn init(
    pki_dir: &Path,
    cluster: &str,
    credentials: &Path,
    subject: &str,
) -> anyhow::Result<()> {
    let pki = PkiDir::new(pki_dir);
    pki.init(cluster)?;
    let signer = pki.signer()?;
    let (token, claims) = signer.issue(subject, Role::Admin, INIT_TTL, unix_now())?;
    dcnet_auth::client::write(
        credentials,
        &CredentialFile {
            token: Some(token),
            ..CredentialFile::default()
        },
    )?;
    let dir = pki_dir.display();
    println!("cluster keys made in {dir}:");
    println!("  ca.crt, token.pub   copy to every node ({dir}/ on each)");
    println!("  ca.key, token.key   copy to every master only; keep them secret (mode 0600)");
    println!(
        "admin credential for {subject:?} (token {}, valid 365 days) saved in {}",
        claims.jti,
        credentials.display()
    );
    println!(
        "next: start the agents; make further credentials with `dcnet auth token create` and revoke this one when done bootstrapping"
    );
    Ok(())
}

/// Saves `token` as a credential file, or prints it.
fn deliver(token: &str, save: Option<&Path>) -> anyhow::Result<()> {
    match save {
        Some(path) => {
            dcnet_auth::client::write(
                path,
                &CredentialFile {
                    token: Some(token.to_owned()),
                    ..CredentialFile::default()
                },
            )?;
            eprintln!("saved to {} (mode 0600)", path.display());
        }
        None => println!("{token}"),
    }
    Ok(())
}

/// `dcnet auth token create --offline`: signs a token with the key file itself.
pub fn create_offline(
    pki_dir: &Path,
    subject: &str,
    role: Role,
    ttl: Duration,
    save: Option<&Path>,
) -> anyhow::Result<()> {
    let signer = PkiDir::new(pki_dir).signer()?;
    let (token, claims) = signer.issue(subject, role, ttl, unix_now())?;
    eprintln!(
        "token {} for {subject:?} ({role}), made offline: it is not listed by `dcnet auth token list`, but can be revoked by its id",
        claims.jti
    );
    deliver(&token, save)
}

/// `dcnet auth token create`: a token issued (and recorded) by the leading scheduler.
pub fn create(
    client: &Client,
    subject: &str,
    role: Role,
    ttl: Duration,
    save: Option<&Path>,
) -> anyhow::Result<()> {
    let request = json!({"subject": subject, "role": role, "ttl": humantime::format_duration(ttl).to_string()});
    let (status, body) = call_json(client, "POST", "/v1/auth/tokens", Some(&request))?;
    expect_status(status, 201, &body, "creating a token")?;
    let token = body["token"]
        .as_str()
        .context("the scheduler's answer has no token")?;
    eprintln!(
        "token {} for {subject:?} ({role})",
        body["id"].as_str().unwrap_or("?")
    );
    deliver(token, save)
}

/// `dcnet auth token list`.
pub fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "GET", "/v1/auth/tokens", None)?;
    expect_status(status, 200, &body, "listing tokens")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body["tokens"])?);
        return Ok(());
    }
    let when = |v: &Value| {
        let s = v.as_u64().unwrap_or(0);
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(s))
            .to_string()
    };
    let rows: Vec<Vec<String>> = body["tokens"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            vec![
                t["id"].as_str().unwrap_or("?").to_owned(),
                t["subject"].as_str().unwrap_or("?").to_owned(),
                t["role"].as_str().unwrap_or("?").to_owned(),
                when(&t["expires"]),
                if t["revoked"] == true {
                    "revoked"
                } else {
                    "valid"
                }
                .to_owned(),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(&["ID", "SUBJECT", "ROLE", "EXPIRES", "STATE"], &rows)
    );
    Ok(())
}

/// `dcnet auth token revoke ID`.
pub fn revoke(client: &Client, id: &str) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "DELETE", &format!("/v1/auth/tokens/{id}"), None)?;
    expect_status(status, 200, &body, &format!("revoking {id}"))?;
    println!("token {id} revoked: every node refuses it once it hears (a few gossip rounds)");
    Ok(())
}

/// `dcnet auth user set NAME`: adds a basic user or changes its role and password. Without
/// a password file a password is generated and printed once.
pub fn set_user(
    client: &Client,
    name: &str,
    role: Role,
    password_file: Option<&Path>,
) -> anyhow::Result<()> {
    let (password, generated) = match password_file {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the password file {}", path.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            false,
        ),
        None => (dcnet_auth::password::generate(), true),
    };
    let request = json!({"role": role, "password": password});
    let (status, body) = call_json(
        client,
        "PUT",
        &format!("/v1/auth/users/{name}"),
        Some(&request),
    )?;
    expect_status(status, 200, &body, &format!("setting user {name}"))?;
    if generated {
        println!("user {name} ({role}), password: {password}");
    } else {
        println!("user {name} ({role}) set");
    }
    Ok(())
}

/// `dcnet auth user list`.
pub fn users(client: &Client, json: bool) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "GET", "/v1/auth/users", None)?;
    expect_status(status, 200, &body, "listing users")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body["users"])?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = body["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            vec![
                u["name"].as_str().unwrap_or("?").to_owned(),
                u["role"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    print!("{}", render_table(&["NAME", "ROLE"], &rows));
    Ok(())
}

/// `dcnet auth user remove NAME`.
pub fn remove_user(client: &Client, name: &str) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "DELETE", &format!("/v1/auth/users/{name}"), None)?;
    expect_status(status, 200, &body, &format!("removing user {name}"))?;
    println!("user {name} removed");
    Ok(())
}

/// `dcnet auth whoami`: who the local agent takes the caller for.
pub fn whoami(client: &Client) -> anyhow::Result<()> {
    let (status, body) = call_json(client, "GET", "/v1/auth/whoami", None)?;
    expect_status(status, 200, &body, "asking the agent")?;
    match body["subject"].as_str() {
        Some(subject) => println!(
            "{subject} ({}){}",
            body["role"].as_str().unwrap_or("?"),
            body["token_id"]
                .as_str()
                .map(|id| format!(", token {id}"))
                .unwrap_or_default()
        ),
        None => println!("anyone (this cluster runs with [auth] insecure = true)"),
    }
    Ok(())
}
