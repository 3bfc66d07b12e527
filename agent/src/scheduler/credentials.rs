//! The masters' credential store and its API (admin only):
//!
//! - `GET /v1/auth/tokens`, `POST /v1/auth/tokens` (`{"subject", "role", "ttl"}` → the token,
//!   shown once), `DELETE /v1/auth/tokens/{id}` (revoke);
//! - `GET /v1/auth/users`, `PUT /v1/auth/users/{name}` (`{"role", "password"}`),
//!   `DELETE /v1/auth/users/{name}`: HTTP basic users, as Marathon's `--http_credentials`.
//!
//! The store lives in the state directory (`auth.json`) of every master. The leader signs it
//! and publishes it in gossip ([`crate::auth::SET_KEY`]); every master adopts a newer set it
//! hears (a standby keeps up, a new leader starts from the newest), so a change survives the
//! leader's loss once it has been heard.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use dcnet_auth::{Authenticator, Identity, Role, Signer, Store};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use crate::Error;
use crate::state::StateDir;

const FILE: &str = "auth.json";
/// Lifetime of a token when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(90 * 86_400);

/// The store, the key that signs it and the check that enforces it on this node.
pub struct Credentials {
    signer: Signer,
    authn: Arc<Authenticator>,
    dir: Arc<StateDir>,
    store: Mutex<Store>,
    /// The last signed form and the serial it is of.
    signed: Mutex<Option<(u64, String)>>,
}

impl Credentials {
    /// Loads `auth.json` (empty on a first start) and puts it in force here.
    pub fn load(
        signer: Signer,
        authn: Arc<Authenticator>,
        dir: Arc<StateDir>,
    ) -> Result<Self, Error> {
        let store = match dir.read(FILE)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| Error::StateCorrupt {
                path: dir.path().join(FILE),
                problem: format!("not a credential store ({e})"),
            })?,
            None => Store::default(),
        };
        authn.install(store.clone());
        Ok(Self {
            signer,
            authn,
            dir,
            store: Mutex::new(store),
            signed: Mutex::new(None),
        })
    }

    fn save(&self, store: &Store) -> Result<(), Error> {
        self.dir.write(
            FILE,
            &serde_json::to_string_pretty(store).unwrap_or_default(),
        )
    }

    /// Adopts a newer set this node heard (from the leader, or a leader before it).
    pub fn catch_up(&self) {
        let heard = self.authn.set();
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if heard.serial > store.serial {
            match self.save(&heard) {
                Ok(()) => {
                    info!(
                        serial = heard.serial,
                        "credential store caught up with the masters'"
                    );
                    *store = (*heard).clone();
                }
                Err(e) => warn!(error = %e, "cannot store the masters' credential set"),
            }
        }
    }

    /// The signed store to publish; forgets expired tokens and revocations first.
    pub fn signed(&self) -> Option<String> {
        let now = crate::unix_ms() / 1000;
        let _ = self.change(|s| Ok(s.purge(now)));
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner()).clone();
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

    /// Applies a change: stored first, then in force here. Nothing changes when `f` refuses
    /// or reports no change.
    fn change<T>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, dcnet_auth::AuthError>,
    ) -> Result<T, (StatusCode, String)> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        // On the newest set heard, or the change would drop another master's (and carry a
        // serial no node takes).
        let heard = self.authn.set();
        let mut next = if heard.serial > store.serial {
            (*heard).clone()
        } else {
            store.clone()
        };
        let before = next.serial;
        let out = f(&mut next).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        if next.serial == before && next.serial == store.serial {
            return Ok(out);
        }
        self.save(&next).map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("storing the credentials failed: {e}"),
            )
        })?;
        self.authn.install(next.clone());
        *store = next;
        Ok(out)
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
    let store = credentials.store.lock().unwrap_or_else(|p| p.into_inner());
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
    match credentials.change(|s| s.issue(&signer, &request.subject, request.role, ttl, now)) {
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
    match credentials.change(|s| s.revoke(&id, now)) {
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
    let store = credentials.store.lock().unwrap_or_else(|p| p.into_inner());
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
    // Argon2 takes tens of milliseconds: off the async workers.
    let changed = tokio::task::spawn_blocking(move || {
        credentials.change(|s| s.set_user(&name, request.role, &request.password))
    })
    .await;
    match changed {
        Ok(Ok(())) => {
            (api.poke)();
            answer(StatusCode::OK, "user set")
        }
        Ok(Err((status, message))) => answer(status, message),
        Err(e) => answer(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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
    match credentials.change(|s| s.remove_user(&name)) {
        Ok(()) => {
            (api.poke)();
            answer(StatusCode::OK, format!("user {name} removed"))
        }
        Err((status, message)) => answer(status, message),
    }
}
