//! The masters' credential store and its API (admin only):
//!
//! - `GET /v1/auth/tokens`, `POST /v1/auth/tokens` (`{"subject", "role", "ttl"}` → the token,
//!   shown once), `DELETE /v1/auth/tokens/{id}` (revoke);
//! - `GET /v1/auth/users`, `PUT /v1/auth/users/{name}` (`{"role", "password"}`),
//!   `DELETE /v1/auth/users/{name}`: HTTP basic users, as Marathon's `--http_credentials`.
//!
//! The store is part of the masters' replicated state (key `auth/store`, see
//! [`super::replicated`]): a change returns once a majority of masters has it. Every master
//! enforces the store as applied; the leader also signs it and publishes it in gossip
//! ([`crate::facts::CREDENTIAL_SET_KEY`]) for the agents, which are not part of Raft.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use dcnet_auth::{Authenticator, Identity, Role, Signer, Store};
use dcnet_consensus::{Command, Consensus, Data};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use super::replicated::{CREDENTIALS_KEY, credentials};

/// Lifetime of a token when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(90 * 86_400);

/// The key that signs the store, the check that enforces it on this node, and the Raft that
/// keeps it.
pub struct Credentials {
    signer: Signer,
    authn: Arc<Authenticator>,
    consensus: Arc<Consensus>,
    /// The last signed form and the serial it is of.
    signed: Mutex<Option<(u64, String)>>,
}

/// A refused change: the status and what to tell the client.
type Failed = (StatusCode, String);

impl Credentials {
    pub fn new(signer: Signer, authn: Arc<Authenticator>, consensus: Arc<Consensus>) -> Self {
        let credentials = Self {
            signer,
            authn,
            consensus,
            signed: Mutex::new(None),
        };
        let data = credentials.consensus.data().borrow().clone();
        credentials.sync(&data);
        credentials
    }

    /// Puts the store of `data` in force here (if newer than the one in force).
    pub fn sync(&self, data: &Data) {
        let store = credentials(data);
        if store.serial > self.authn.set().serial {
            self.authn.install(store);
        }
    }

    /// The store of `data` signed, to publish.
    pub fn signed(&self, data: &Data) -> Option<String> {
        let store = credentials(data);
        let mut signed = self.signed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((serial, jwt)) = &*signed
            && *serial == store.serial
        {
            return Some(jwt.clone());
        }
        match store.sign(&self.signer) {
            Ok(jwt) => {
                *signed = Some((store.serial, jwt.clone()));
                Some(jwt)
            }
            Err(e) => {
                warn!(error = %e, "cannot sign the credential store");
                None
            }
        }
    }

    /// Forgets expired tokens and revocations (the leader, now and then).
    pub async fn purge(&self) {
        let now = crate::unix_ms() / 1000;
        if let Err((_, e)) = self.change(|s| Ok(s.purge(now))).await {
            warn!(error = %e, "cannot purge expired credentials");
        }
    }

    /// Applies a change to the replicated store, on condition that nobody changed it since
    /// it was read (tried again a few times if somebody did). Nothing changes when `f`
    /// refuses or reports no change.
    async fn change<T>(
        &self,
        mut f: impl FnMut(&mut Store) -> Result<T, dcnet_auth::AuthError>,
    ) -> Result<T, Failed> {
        for _ in 0..3 {
            let data = self.consensus.data().borrow().clone();
            let before = data.entries.get(CREDENTIALS_KEY).cloned();
            let mut store = credentials(&data);
            let serial = store.serial;
            let out =
                f(&mut store).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
            if store.serial == serial {
                return Ok(out);
            }
            let mut command = Command::put(
                CREDENTIALS_KEY,
                serde_json::to_value(&store).unwrap_or_default(),
            );
            command.expect.insert(CREDENTIALS_KEY.to_owned(), before);
            match self.consensus.write(command).await {
                Ok(reply) if reply.applied => {
                    self.authn.install(store);
                    return Ok(out);
                }
                // Changed meanwhile: read again.
                Ok(_) => continue,
                Err(e) => return Err(super::service::consensus_failure(e)),
            }
        }
        Err((
            StatusCode::CONFLICT,
            "the credential store kept changing under this request; retry".into(),
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// The API

/// What the handlers need: the store (`None` in insecure mode) and a way to ask the
/// scheduler whether it leads.
#[derive(Clone)]
pub struct CredentialApi {
    pub credentials: Option<Arc<Credentials>>,
    pub require_leader: Arc<dyn Fn() -> Result<(), Box<Response>> + Send + Sync>,
    pub poke: Arc<dyn Fn() + Send + Sync>,
}

/// The routes (merged into the scheduler's router, behind its credential check).
pub fn router(api: CredentialApi) -> Router {
    Router::new()
        .route("/v1/auth/tokens", get(list_tokens).post(create_token))
        .route("/v1/auth/tokens/{id}", delete(revoke_token))
        .route("/v1/auth/users", get(list_users))
        .route("/v1/auth/users/{name}", put(set_user).delete(remove_user))
        .with_state(api)
}

fn answer(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"message": message.into()}))).into_response()
}

/// Checks that the caller is an admin (the role check lets readers GET; credentials are not
/// theirs to list) and that this scheduler leads; the store.
fn admin(
    api: &CredentialApi,
    identity: Option<&Identity>,
) -> Result<Arc<Credentials>, Box<Response>> {
    let Some(credentials) = api.credentials.clone() else {
        return Err(Box::new(answer(
            StatusCode::NOT_FOUND,
            "this cluster runs with [auth] insecure = true: there are no credentials to manage",
        )));
    };
    if identity.is_none_or(|id| id.role != Role::Admin) {
        return Err(Box::new(answer(
            StatusCode::FORBIDDEN,
            "managing credentials needs the admin role",
        )));
    }
    (api.require_leader)()?;
    Ok(credentials)
}

type Caller = Option<Extension<Identity>>;

fn who(caller: &Caller) -> Option<&Identity> {
    caller.as_ref().map(|Extension(id)| id)
}

async fn list_tokens(State(api): State<CredentialApi>, caller: Caller) -> Response {
    let credentials = match admin(&api, who(&caller)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let store = super::replicated::credentials(&credentials.consensus.data().borrow());
    axum::Json(json!({"tokens": store.tokens})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    subject: String,
    role: Role,
    /// e.g. "30d", "12h"; default 90 days.
    ttl: Option<String>,
}

async fn create_token(
    State(api): State<CredentialApi>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Response {
    let credentials = match admin(&api, who(&caller)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let request: NewToken = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"subject\": \"...\", \"role\": \"admin\"|\"read\", \"ttl\": \"30d\"}}: {e}"
                ),
            );
        }
    };
    let ttl = match request.ttl.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_TTL,
        Some(Ok(ttl)) => ttl,
        Some(Err(e)) => {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("ttl: {e} (write it as e.g. \"30d\" or \"12h\")"),
            );
        }
    };
    let now = crate::unix_ms() / 1000;
    let signer = credentials.signer.clone();
    match credentials
        .change(|s| s.issue(&signer, &request.subject, request.role, ttl, now))
        .await
    {
        Ok((token, issued)) => {
            info!(by = ?who(&caller).map(|i| &i.subject), subject = %issued.subject, role = %issued.role, id = %issued.id, "token issued");
            (api.poke)();
            (
                StatusCode::CREATED,
                axum::Json(
                    json!({"token": token, "id": issued.id, "subject": issued.subject,
                                  "role": issued.role, "expires": issued.expires}),
                ),
            )
                .into_response()
        }
        Err((status, message)) => answer(status, message),
    }
}

async fn revoke_token(
    State(api): State<CredentialApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Response {
    let credentials = match admin(&api, who(&caller)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let now = crate::unix_ms() / 1000;
    match credentials.change(|s| s.revoke(&id, now)).await {
        Ok(listed) => {
            info!(by = ?who(&caller).map(|i| &i.subject), %id, "token revoked");
            (api.poke)();
            axum::Json(json!({"revoked": id, "token": listed})).into_response()
        }
        Err((status, message)) => answer(status, message),
    }
}

async fn list_users(State(api): State<CredentialApi>, caller: Caller) -> Response {
    let credentials = match admin(&api, who(&caller)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let store = super::replicated::credentials(&credentials.consensus.data().borrow());
    let users: Vec<_> = store
        .users
        .iter()
        .map(|u| json!({"name": u.name, "role": u.role}))
        .collect();
    axum::Json(json!({"users": users})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetUser {
    role: Role,
    password: String,
}

async fn set_user(
    State(api): State<CredentialApi>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let credentials = match admin(&api, who(&caller)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let request: SetUser = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"role\": \"admin\"|\"read\", \"password\": \"...\"}}: {e}"),
            );
        }
    };
    // Argon2 takes tens of milliseconds: hashed once, off the async workers.
    let hashed = tokio::task::spawn_blocking(move || {
        let mut scratch = Store::default();
        scratch
            .set_user(&name, request.role, &request.password)
            .map(|()| scratch.users.remove(0))
    })
    .await;
    let user = match hashed {
        Ok(Ok(user)) => user,
        Ok(Err(e)) => return answer(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Err(e) => return answer(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let put = |s: &mut Store| {
        s.put_user(user.clone());
        Ok(())
    };
    match credentials.change(put).await {
        Ok(()) => {
            (api.poke)();
            answer(StatusCode::OK, "user set")
        }
        Err((status, message)) => answer(status, message),
    }
}

async fn remove_user(
    State(api): State<CredentialApi>,
    caller: Caller,
    Path(name): Path<String>,
) -> Response {
    let credentials = match admin(&api, who(&caller)) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match credentials.change(|s| s.remove_user(&name)).await {
        Ok(()) => {
            (api.poke)();
            answer(StatusCode::OK, format!("user {name} removed"))
        }
        Err((status, message)) => answer(status, message),
    }
}
