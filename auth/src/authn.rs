//! Deciding who a request comes from and whether it may do what it asks.
//!
//! [`Authenticator`] holds the cluster's public key and the newest credential set this node
//! has verified. A token is checked by its signature, expiry and the set's revocations; a
//! basic credential by the set's password hashes. Both checks are slow next to serving a
//! request (an Ed25519 verification, measured at ~60 µs of a ~25 µs GET in benches/api; Argon2
//! by design), so a credential that verified is remembered by its SHA-256 (never in clear):
//! a token with its claims, its expiry and revocation still checked on every use; a basic
//! credential until the set changes or a few minutes pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::credential::{self, Presented};
use crate::role::Role;
use crate::store::Store;
use crate::token::{TokenProblem, Verifier};

/// How long a verified basic credential is trusted without hashing it again.
const BASIC_CACHE_TTL: Duration = Duration::from_secs(300);
/// Most basic credentials remembered at once.
const BASIC_CACHE_MAX: usize = 1024;
/// Most verified tokens remembered at once (each a few hundred bytes).
const TOKEN_CACHE_MAX: usize = 4096;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub role: Role,
    /// The token's id, for a token.
    pub token_id: Option<String>,
}

/// A refused request: 401 (no valid credential) or 403 (a valid one that may not do this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Short label for the audit counters.
    pub reason: &'static str,
    /// What the client is told.
    pub message: String,
}

impl Refusal {
    fn unauthorized(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 401,
            reason,
            message: message.into(),
        }
    }
}

#[derive(Clone)]
struct CachedBasic {
    identity: Identity,
    serial: u64,
    at: Instant,
}

/// Authenticates and authorizes requests.
pub struct Authenticator {
    verifier: Option<Verifier>,
    set: RwLock<Arc<Store>>,
    basic: Mutex<HashMap<[u8; 32], CachedBasic>>,
    /// Tokens whose signature verified, by the SHA-256 of the token.
    tokens: Mutex<HashMap<[u8; 32], crate::token::Claims>>,
}

impl Authenticator {
    /// With the cluster's public key, if this node has it (without one no token verifies).
    pub fn new(verifier: Option<Verifier>) -> Self {
        Self {
            verifier,
            set: RwLock::new(Arc::new(Store::default())),
            basic: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The credential set in force.
    pub fn set(&self) -> Arc<Store> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `store` in force if it is newer than the one in force; true if it was.
    pub fn install(&self, store: Store) -> bool {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        if store.serial <= set.serial && !(store.serial == 0 && set.serial == 0) {
            return false;
        }
        *set = Arc::new(store);
        true
    }

    /// Verifies a signed set and puts it in force if it is newer; `Ok(true)` if it was.
    pub fn offer(&self, jwt: &str) -> Result<bool, TokenProblem> {
        let verifier = self.verifier.as_ref().ok_or(TokenProblem::UnknownKey)?;
        let store = Store::from_signed(verifier, jwt)?;
        Ok(self.install(store))
    }

    /// Who sent `header` (the `Authorization` value), at `now` (unix seconds). Verifying a
    /// basic credential not seen before costs an Argon2 hash (tens of milliseconds): run it
    /// where blocking is allowed.
    pub fn authenticate(&self, header: Option<&[u8]>, now: u64) -> Result<Identity, Refusal> {
        let Some(header) = header else {
            return Err(Refusal::unauthorized(
                "missing",
                "this API needs a credential: send `Authorization: token=<token>` (or Bearer, or HTTP basic)",
            ));
        };
        match credential::parse(header) {
            Err(credential::Malformed(why)) => Err(Refusal::unauthorized("malformed", why)),
            Ok(Presented::Token(jwt)) => self.token(&jwt, now),
            Ok(Presented::Basic { user, password }) => self.basic(&user, &password),
        }
    }

    /// Checks that `header` carries a master's peer token (Raft's messages between masters).
    pub fn authenticate_peer(&self, header: Option<&[u8]>, now: u64) -> Result<Identity, Refusal> {
        let refused = |why: &str| {
            Refusal::unauthorized(
                "not_a_master",
                format!("only masters may send Raft messages: {why}"),
            )
        };
        let Some(verifier) = &self.verifier else {
            return Err(refused("this node cannot verify tokens"));
        };
        let jwt = match header.map(credential::parse) {
            Some(Ok(Presented::Token(jwt))) => jwt,
            _ => return Err(refused("no peer token")),
        };
        let claims = verifier
            .verify_peer(&jwt, now)
            .map_err(|p| refused(p.message()))?;
        Ok(Identity {
            subject: claims.sub,
            role: claims.role,
            token_id: Some(claims.jti),
        })
    }

    /// Whether the cached form of a basic credential is fresh, so [`Self::authenticate`]
    /// will not hash (a token never hashes).
    pub fn is_cheap(&self, header: Option<&[u8]>) -> bool {
        match header.map(credential::parse) {
            Some(Ok(Presented::Basic { user, password })) => {
                let serial = self.set().serial;
                self.cached(&cache_key(&user, &password), serial).is_some()
            }
            _ => true,
        }
    }

    fn token(&self, jwt: &str, now: u64) -> Result<Identity, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Err(Refusal::unauthorized(
                "unknown_key",
                "this node has no public key to verify tokens with: install token.pub from the cluster's pki directory",
            ));
        };
        let key: [u8; 32] = sha2::Sha256::digest(jwt.as_bytes()).into();
        let cached = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let claims = match cached {
            Some(claims) if claims.is_expired(now) => {
                let p = TokenProblem::Expired;
                return Err(Refusal::unauthorized(p.reason(), p.message()));
            }
            Some(claims) => claims,
            None => {
                let claims = verifier
                    .verify_token(jwt, now)
                    .map_err(|p| Refusal::unauthorized(p.reason(), p.message()))?;
                let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
                if tokens.len() >= TOKEN_CACHE_MAX {
                    tokens.clear();
                }
                tokens.insert(key, claims.clone());
                claims
            }
        };
        if self.set().is_revoked(&claims.jti) {
            return Err(Refusal::unauthorized(
                "revoked",
                format!(
                    "token {} (subject {:?}) has been revoked",
                    claims.jti, claims.sub
                ),
            ));
        }
        Ok(Identity {
            subject: claims.sub,
            role: claims.role,
            token_id: Some(claims.jti),
        })
    }

    fn cached(&self, key: &[u8; 32], serial: u64) -> Option<Identity> {
        let cache = self.basic.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .get(key)
            .filter(|c| c.serial == serial && c.at.elapsed() < BASIC_CACHE_TTL)
            .map(|c| c.identity.clone())
    }

    fn basic(&self, user: &str, password: &str) -> Result<Identity, Refusal> {
        let set = self.set();
        let key = cache_key(user, password);
        if let Some(identity) = self.cached(&key, set.serial) {
            return Ok(identity);
        }
        let bad = || {
            // One message for both: which user names exist is not the client's business.
            Refusal::unauthorized("bad_password", "unknown user or wrong password")
        };
        let found = set.user(user).ok_or_else(bad)?;
        if !crate::password::verify(password, &found.hash) {
            return Err(bad());
        }
        let identity = Identity {
            subject: user.to_owned(),
            role: found.role,
            token_id: None,
        };
        let mut cache = self.basic.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= BASIC_CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            key,
            CachedBasic {
                identity: identity.clone(),
                serial: set.serial,
                at: Instant::now(),
            },
        );
        Ok(identity)
    }
}

/// Whether `identity` may make a request with `method`.
pub fn authorize(identity: &Identity, method: &str) -> Result<(), Refusal> {
    if identity.role.allows(method) {
        return Ok(());
    }
    Err(Refusal {
        status: 403,
        reason: "forbidden",
        message: format!(
            "{:?} has the {} role, which may only read (GET); {method} needs the admin role",
            identity.subject, identity.role
        ),
    })
}

fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::credential::{basic_header, token_header};
    use crate::token::Signer;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn signer() -> Signer {
        let (private, _) = Signer::generate().unwrap();
        Signer::from_pem(&private, Path::new("k")).unwrap()
    }

    #[test]
    fn tokens_users_roles_and_revocation() {
        let s = signer();
        let auth = Authenticator::new(Some(s.verifier().clone()));
        let mut store = Store::default();
        let (admin, admin_t) = store.issue(&s, "ops", Role::Admin, DAY, now()).unwrap();
        let (reader, _) = store.issue(&s, "grafana", Role::Read, DAY, now()).unwrap();
        store
            .set_user("marathon", Role::Admin, "a long enough password")
            .unwrap();
        assert_eq!(auth.offer(&store.sign(&s).unwrap()), Ok(true));

        let who = |h: &str| auth.authenticate(Some(h.as_bytes()), now());
        let admin_id = who(&token_header(&admin)).unwrap();
        assert_eq!(
            (admin_id.subject.as_str(), admin_id.role),
            ("ops", Role::Admin)
        );
        let read_id = who(&format!("Bearer {reader}")).unwrap();
        assert_eq!(authorize(&read_id, "GET"), Ok(()));
        let refused = authorize(&read_id, "POST").unwrap_err();
        assert_eq!((refused.status, refused.reason), (403, "forbidden"));
        assert!(
            refused.message.contains("admin role"),
            "{}",
            refused.message
        );

        let basic = basic_header("marathon", "a long enough password");
        assert!(!auth.is_cheap(Some(basic.as_bytes())));
        assert_eq!(who(&basic).unwrap().role, Role::Admin);
        assert!(
            auth.is_cheap(Some(basic.as_bytes())),
            "cached after one hash"
        );
        let wrong = who(&basic_header("marathon", "another long password")).unwrap_err();
        assert_eq!((wrong.status, wrong.reason), (401, "bad_password"));
        let nobody = who(&basic_header("nobody", "a long enough password")).unwrap_err();
        assert_eq!(nobody.message, wrong.message, "no hint which users exist");

        let missing = auth.authenticate(None, now()).unwrap_err();
        assert_eq!((missing.status, missing.reason), (401, "missing"));
        assert!(missing.message.contains("token=<token>"));

        // Revoke the admin token and remove the user: a newer set takes effect at once, the
        // cached basic credential included.
        store.revoke(&admin_t.id, now()).unwrap();
        store.remove_user("marathon").unwrap();
        let older = store.clone();
        assert_eq!(auth.offer(&store.sign(&s).unwrap()), Ok(true));
        let revoked = who(&token_header(&admin)).unwrap_err();
        assert_eq!(revoked.reason, "revoked");
        assert!(revoked.message.contains(&admin_t.id));
        assert_eq!(who(&basic).unwrap_err().reason, "bad_password");

        // A replayed older set, or a set of another key, changes nothing.
        let mut stale = older;
        stale.serial -= 1;
        assert_eq!(auth.offer(&stale.sign(&s).unwrap()), Ok(false));
        let forged = Store {
            serial: 99,
            ..Store::default()
        };
        assert_eq!(
            auth.offer(&forged.sign(&signer()).unwrap()),
            Err(TokenProblem::UnknownKey)
        );
        assert_eq!(who(&token_header(&admin)).unwrap_err().reason, "revoked");
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let s = signer();
        let auth = Authenticator::new(Some(s.verifier().clone()));
        let t = now();
        let (token, claims) = s
            .issue("x", Role::Read, Duration::from_secs(60), t)
            .unwrap();
        let header = token_header(&token);
        assert!(auth.authenticate(Some(header.as_bytes()), t).is_ok());
        assert!(
            auth.authenticate(Some(header.as_bytes()), t + 60).is_ok(),
            "from memory"
        );
        let late = auth
            .authenticate(Some(header.as_bytes()), claims.exp + 3600)
            .unwrap_err();
        assert_eq!(late.reason, "expired");
    }

    #[test]
    fn without_a_public_key_no_token_passes() {
        let s = signer();
        let (token, _) = s.issue("x", Role::Admin, DAY, now()).unwrap();
        let auth = Authenticator::new(None);
        let refused = auth
            .authenticate(Some(token_header(&token).as_bytes()), now())
            .unwrap_err();
        assert!(refused.message.contains("token.pub"), "{}", refused.message);
    }
}
