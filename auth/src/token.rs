//! Tokens: JWTs signed by the cluster with Ed25519 (`EdDSA`, RFC 8037), as DC/OS issued them.
//!
//! A token names a subject and a role, has an id (`jti`) by which it can be revoked, and an
//! expiry no further than [`MAX_TTL`] from its issue, so a revocation need only be kept that
//! long. The same key signs the masters' credential set ([`crate::store`]); the `use` claim
//! keeps one kind of signed document from passing for the other.
//!
//! Masters hold the signing key (`token.key`); every node holds the public key (`token.pub`)
//! and verifies on its own, with no call to a master.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::AuthError;
use crate::role::Role;

/// The `iss` of every token and set.
pub const ISSUER: &str = "dcnet";
/// The longest a token may live.
pub const MAX_TTL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Clock skew tolerated between nodes.
const LEEWAY_S: u64 = 30;

/// What a signed document is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    /// A credential presented by a client.
    Credential,
    /// The masters' credential set (revocations, basic users).
    CredentialSet,
    /// A master speaking to another (Raft's messages); accepted nowhere else.
    Peer,
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub jti: String,
    pub iat: u64,
    pub exp: u64,
    pub role: Role,
    #[serde(rename = "use")]
    pub usage: Usage,
}

impl Claims {
    /// Whether the token has expired at `now` (unix seconds), with the tolerated skew.
    pub fn is_expired(&self, now: u64) -> bool {
        self.exp + LEEWAY_S < now
    }
}

/// Why a token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Not a JWT we can read, or claims of the wrong shape.
    Malformed,
    /// Signed by a key this node does not know.
    UnknownKey,
    /// The signature does not match.
    BadSignature,
    Expired,
    /// Issued in the future, or for longer than [`MAX_TTL`].
    BadLifetime,
    /// Not issued by dcnet, or not a credential.
    WrongKind,
}

impl TokenProblem {
    /// The audit counters' reason label.
    pub fn reason(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "malformed",
            TokenProblem::UnknownKey => "unknown_key",
            TokenProblem::BadSignature => "bad_signature",
            TokenProblem::Expired => "expired",
            TokenProblem::BadLifetime => "bad_lifetime",
            TokenProblem::WrongKind => "wrong_kind",
        }
    }

    /// What the client is told.
    pub fn message(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "the token cannot be read: it is not a dcnet token",
            TokenProblem::UnknownKey => {
                "the token was signed by a key this cluster does not know (a token of another cluster?)"
            }
            TokenProblem::BadSignature => {
                "the token's signature is not valid: it was altered or forged"
            }
            TokenProblem::Expired => {
                "the token has expired: ask an admin for a new one (`dcnet auth token create`)"
            }
            TokenProblem::BadLifetime => {
                "the token's lifetime is not acceptable (issued in the future, or valid for more than a year)"
            }
            TokenProblem::WrongKind => "the token is not a dcnet credential",
        }
    }
}

/// The key id of a public key: the first 8 bytes of its SHA-256, in hex.
fn key_id(raw_public: &[u8]) -> String {
    let digest = sha2::Sha256::digest(raw_public);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------

/// Verifies tokens and sets with the cluster's public key.
#[derive(Clone)]
pub struct Verifier {
    kid: String,
    key: DecodingKey,
}

impl Verifier {
    /// Reads a public key in SPKI PEM form (`token.pub`).
    pub fn from_pem(pem: &str, path: &std::path::Path) -> Result<Self, AuthError> {
        let invalid = |detail: String| AuthError::Invalid {
            what: "Ed25519 public key (PEM)",
            path: path.to_path_buf(),
            detail,
        };
        let spki =
            rcgen::SubjectPublicKeyInfo::from_pem(pem).map_err(|e| invalid(e.to_string()))?;
        use rcgen::PublicKeyData as _;
        if spki.algorithm() != &rcgen::PKCS_ED25519 {
            return Err(invalid("not an Ed25519 key".into()));
        }
        let raw = spki.der_bytes();
        let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            kid: key_id(raw),
            key,
        })
    }

    /// This key's id, as tokens name it in their header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Verifies a signed document of kind `usage` and returns its claims.
    fn verify<T: DeserializeOwned>(
        &self,
        jwt: &str,
        usage: Usage,
        expires: bool,
    ) -> Result<T, TokenProblem> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|_| TokenProblem::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenProblem::Malformed);
        }
        if header.kid.as_deref() != Some(self.kid.as_str()) {
            return Err(TokenProblem::UnknownKey);
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_S;
        validation.set_issuer(&[ISSUER]);
        validation.validate_exp = expires;
        if expires {
            validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        } else {
            validation.set_required_spec_claims(&["iss"]);
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &self.key, &validation).map_err(
            |e| match e.kind() {
                ErrorKind::InvalidSignature => TokenProblem::BadSignature,
                ErrorKind::ExpiredSignature => TokenProblem::Expired,
                ErrorKind::InvalidIssuer => TokenProblem::WrongKind,
                _ => TokenProblem::Malformed,
            },
        )?;
        if data.claims.get("use") != serde_json::to_value(usage).ok().as_ref() {
            return Err(TokenProblem::WrongKind);
        }
        serde_json::from_value(data.claims).map_err(|_| TokenProblem::Malformed)
    }

    /// Verifies a client's token: signature, issuer, kind, expiry and lifetime at `now` (unix
    /// seconds).
    pub fn verify_token(&self, jwt: &str, now: u64) -> Result<Claims, TokenProblem> {
        let claims: Claims = self.verify(jwt, Usage::Credential, true)?;
        if claims.iat > now + LEEWAY_S || claims.exp.saturating_sub(claims.iat) > MAX_TTL.as_secs()
        {
            return Err(TokenProblem::BadLifetime);
        }
        // jsonwebtoken checks `exp` against the real clock; `now` is the caller's clock.
        if claims.is_expired(now) {
            return Err(TokenProblem::Expired);
        }
        Ok(claims)
    }

    /// Verifies a master's token for Raft's messages: signed by the cluster's key (which only
    /// masters hold), of kind `peer`, not expired.
    pub fn verify_peer(&self, jwt: &str, now: u64) -> Result<Claims, TokenProblem> {
        let claims: Claims = self.verify(jwt, Usage::Peer, true)?;
        if claims.iat > now + LEEWAY_S || claims.is_expired(now) {
            return Err(TokenProblem::Expired);
        }
        Ok(claims)
    }

    /// Verifies a credential set and returns its claims.
    pub fn verify_set<T: DeserializeOwned>(&self, jwt: &str) -> Result<T, TokenProblem> {
        self.verify(jwt, Usage::CredentialSet, false)
    }
}

// ---------------------------------------------------------------------------------------------

/// Signs tokens and sets with the cluster's private key (masters only).
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    verifier: Verifier,
    public_pem: String,
}

impl Signer {
    /// A new Ed25519 key pair: (private key as PKCS#8 PEM, public key as SPKI PEM).
    pub fn generate() -> Result<(String, String), AuthError> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| AuthError::crypto("generating the token signing key")(&e))?;
        Ok((pair.serialize_pem(), pair.public_key_pem()))
    }

    /// Reads a private key in PKCS#8 PEM form (`token.key`).
    pub fn from_pem(pem: &str, path: &std::path::Path) -> Result<Self, AuthError> {
        let invalid = |detail: String| AuthError::Invalid {
            what: "Ed25519 private key (PKCS#8 PEM)",
            path: path.to_path_buf(),
            detail,
        };
        let pair = rcgen::KeyPair::from_pem(pem).map_err(|e| invalid(e.to_string()))?;
        if !pair.is_compatible(&rcgen::PKCS_ED25519) {
            return Err(invalid("not an Ed25519 key".into()));
        }
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let public_pem = pair.public_key_pem();
        let verifier = Verifier::from_pem(&public_pem, path)?;
        Ok(Self {
            key,
            verifier,
            public_pem,
        })
    }

    /// The verifier of what this signs.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The public key, SPKI PEM.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.verifier.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| AuthError::crypto("signing")(&e))
    }

    /// Issues a token for `subject` with `role`, valid for `ttl` from `now` (unix seconds).
    pub fn issue(
        &self,
        subject: &str,
        role: Role,
        ttl: Duration,
        now: u64,
    ) -> Result<(String, Claims), AuthError> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(AuthError::Store(format!(
                "a token's lifetime must be above 0 and at most {} days",
                MAX_TTL.as_secs() / 86_400
            )));
        }
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: subject.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
            role,
            usage: Usage::Credential,
        };
        Ok((self.sign(&claims)?, claims))
    }

    /// A token by which master `subject` speaks to the other masters, valid for `ttl`.
    pub fn issue_peer(&self, subject: &str, ttl: Duration, now: u64) -> Result<String, AuthError> {
        self.sign(&Claims {
            iss: ISSUER.to_owned(),
            sub: subject.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + ttl.as_secs(),
            role: Role::Admin,
            usage: Usage::Peer,
        })
    }

    /// Signs a credential set (`claims` must carry `iss` and `use: credential-set`).
    pub fn sign_set<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        self.sign(claims)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use base64::Engine as _;

    use super::*;

    fn signer() -> Signer {
        let (private, _) = Signer::generate().unwrap();
        Signer::from_pem(&private, Path::new("token.key")).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_token_verifies_with_its_public_key_only() {
        let s = signer();
        let (token, claims) = s.issue("ci", Role::Read, HOUR, now()).unwrap();
        let public = Verifier::from_pem(s.public_pem(), Path::new("token.pub")).unwrap();
        assert_eq!(public.verify_token(&token, now()), Ok(claims.clone()));
        assert_eq!(claims.sub, "ci");
        assert_eq!(claims.role, Role::Read);
    }

    #[test]
    fn refusals_say_why() {
        let s = signer();
        let v = s.verifier();
        let t = now();
        let (good, _) = s.issue("x", Role::Admin, HOUR, t).unwrap();

        let (expired, _) = s.issue("x", Role::Admin, HOUR, t - 3 * 3600).unwrap();
        assert_eq!(v.verify_token(&expired, t), Err(TokenProblem::Expired));

        let (future, _) = s.issue("x", Role::Admin, HOUR, t + 3600).unwrap();
        assert_eq!(v.verify_token(&future, t), Err(TokenProblem::BadLifetime));

        let other = signer();
        let (foreign, _) = other.issue("x", Role::Admin, HOUR, t).unwrap();
        assert_eq!(v.verify_token(&foreign, t), Err(TokenProblem::UnknownKey));

        // Another key under our key id: the signature gives it away.
        let parts: Vec<&str> = foreign.split('.').collect();
        let ours: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{}.{}", ours[0], parts[1], parts[2]);
        assert_eq!(v.verify_token(&forged, t), Err(TokenProblem::BadSignature));

        // Our signature over claims changed to admin-forever.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(ours[1]).unwrap()).unwrap();
        claims["sub"] = "mallory".into();
        let altered = format!("{}.{}.{}", ours[0], b64.encode(claims.to_string()), ours[2]);
        assert_eq!(v.verify_token(&altered, t), Err(TokenProblem::BadSignature));

        assert_eq!(v.verify_token("a.b.c", t), Err(TokenProblem::Malformed));

        // An unsigned token (`alg: none`) never passes.
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            ours[1]
        );
        assert_eq!(v.verify_token(&none, t), Err(TokenProblem::Malformed));

        // A set is not a credential.
        let set = s
            .sign_set(&serde_json::json!({"iss": ISSUER, "use": "credential-set", "sub": "x", "exp": t + 60}))
            .unwrap();
        assert_eq!(v.verify_token(&set, t), Err(TokenProblem::WrongKind));
    }

    #[test]
    fn peer_tokens_are_for_masters_only() {
        let s = signer();
        let t = now();
        let peer = s.issue_peer("master:node-1", HOUR, t).unwrap();
        assert_eq!(
            s.verifier().verify_peer(&peer, t).unwrap().sub,
            "master:node-1"
        );
        // Not a credential for the APIs, and a credential is not a peer token.
        assert_eq!(
            s.verifier().verify_token(&peer, t),
            Err(TokenProblem::WrongKind)
        );
        let (credential, _) = s.issue("ops", Role::Admin, HOUR, t).unwrap();
        assert_eq!(
            s.verifier().verify_peer(&credential, t),
            Err(TokenProblem::WrongKind)
        );
        assert_eq!(
            signer().verifier().verify_peer(&peer, t),
            Err(TokenProblem::UnknownKey)
        );
        assert_eq!(
            s.verifier().verify_peer(&peer, t + 2 * 3600),
            Err(TokenProblem::Expired)
        );
    }

    #[test]
    fn lifetimes_are_bounded() {
        let s = signer();
        assert!(s.issue("x", Role::Read, MAX_TTL + HOUR, now()).is_err());
        assert!(s.issue("x", Role::Read, Duration::ZERO, now()).is_err());
        assert!(s.issue("x", Role::Read, MAX_TTL, now()).is_ok());
    }

    #[test]
    fn bad_key_files_are_named() {
        let err = Signer::from_pem("junk", Path::new("/etc/dcnet/pki/token.key"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/etc/dcnet/pki/token.key"), "{err}");
        let ecdsa = rcgen::KeyPair::generate().unwrap();
        let err = Verifier::from_pem(&ecdsa.public_key_pem(), Path::new("token.pub"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("Ed25519"), "{err}");
    }
}
