//! The masters' credential store: the tokens they issued (never the tokens themselves), the
//! revocations, and the basic users with their password hashes. Every change raises the
//! serial.
//!
//! The leading master signs the whole store as a JWT (`use: credential-set`) and publishes it
//! in gossip; every node verifies the signature with the cluster's public key and keeps the
//! set with the highest serial it has seen. A node that is not a master therefore cannot add
//! a user or lift a revocation by publishing a set of its own, nor roll one back by replaying
//! an older set.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::role::Role;
use crate::token::{ISSUER, MAX_TTL, Signer, TokenProblem, Usage, Verifier};

/// A token the masters issued, as `dcnet auth token list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    pub id: String,
    pub subject: String,
    pub role: Role,
    /// Unix seconds.
    pub issued: u64,
    pub expires: u64,
    pub revoked: bool,
}

/// A basic-auth user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string.
    pub hash: String,
}

/// The credential store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub serial: u64,
    pub tokens: Vec<IssuedToken>,
    /// Revoked token ids → until when the revocation must be kept (the token's expiry; for a
    /// token the store did not issue, the longest a token can live).
    pub revoked: BTreeMap<String, u64>,
    pub users: Vec<User>,
}

/// The claims of a signed store.
#[derive(Serialize, Deserialize)]
struct SetClaims {
    iss: String,
    #[serde(rename = "use")]
    usage: Usage,
    store: Store,
}

/// A user or subject name: what a person can type and a log can show.
fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Store(format!(
            "invalid {what} {name:?}: use 1 to 64 letters, digits, '-', '.', '_' or '@'"
        )))
    }
}

impl Store {
    /// Issues a token, records it and returns it (the only time the token is seen).
    pub fn issue(
        &mut self,
        signer: &Signer,
        subject: &str,
        role: Role,
        ttl: Duration,
        now: u64,
    ) -> Result<(String, IssuedToken), AuthError> {
        check_name("subject", subject)?;
        let (token, claims) = signer.issue(subject, role, ttl, now)?;
        let issued = IssuedToken {
            id: claims.jti,
            subject: claims.sub,
            role,
            issued: claims.iat,
            expires: claims.exp,
            revoked: false,
        };
        self.tokens.push(issued.clone());
        self.serial += 1;
        Ok((token, issued))
    }

    /// Revokes the token `id`. A token the store did not issue (made offline with the key)
    /// is revoked too, for as long as any token can live.
    pub fn revoke(&mut self, id: &str, now: u64) -> Result<Option<IssuedToken>, AuthError> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        if !ok {
            return Err(AuthError::Store(format!(
                "{id:?} is not a token id (a UUID, as `dcnet auth token list` shows)"
            )));
        }
        let known = self.tokens.iter_mut().find(|t| t.id == id);
        let until = match &known {
            Some(t) => t.expires,
            None => now + MAX_TTL.as_secs(),
        };
        let listed = known.map(|t| {
            t.revoked = true;
            t.clone()
        });
        self.revoked.insert(id.to_owned(), until);
        self.serial += 1;
        Ok(listed)
    }

    /// Whether the token `id` is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.revoked.contains_key(id)
    }

    /// Adds a basic user, or replaces its password and role.
    pub fn set_user(&mut self, name: &str, role: Role, password: &str) -> Result<(), AuthError> {
        check_name("user name", name)?;
        let hash = crate::password::hash(password)?;
        self.users.retain(|u| u.name != name);
        self.users.push(User {
            name: name.to_owned(),
            role,
            hash,
        });
        self.users.sort_by(|a, b| a.name.cmp(&b.name));
        self.serial += 1;
        Ok(())
    }

    /// Adds a basic user whose password was hashed already, or replaces the one of its name.
    pub fn put_user(&mut self, user: User) {
        self.users.retain(|u| u.name != user.name);
        self.users.push(user);
        self.users.sort_by(|a, b| a.name.cmp(&b.name));
        self.serial += 1;
    }

    /// Removes a basic user; an error if there is none of that name.
    pub fn remove_user(&mut self, name: &str) -> Result<(), AuthError> {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        if self.users.len() == before {
            return Err(AuthError::Store(format!("there is no user {name:?}")));
        }
        self.serial += 1;
        Ok(())
    }

    /// The user `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Forgets tokens and revocations past their expiry; true if anything went.
    pub fn purge(&mut self, now: u64) -> bool {
        let (tokens, revoked) = (self.tokens.len(), self.revoked.len());
        self.tokens.retain(|t| t.expires >= now);
        self.revoked.retain(|_, until| *until >= now);
        let changed = tokens != self.tokens.len() || revoked != self.revoked.len();
        if changed {
            self.serial += 1;
        }
        changed
    }

    /// The store signed for gossip.
    pub fn sign(&self, signer: &Signer) -> Result<String, AuthError> {
        signer.sign_set(&SetClaims {
            iss: ISSUER.to_owned(),
            usage: Usage::CredentialSet,
            store: self.clone(),
        })
    }

    /// A store from its signed form.
    pub fn from_signed(verifier: &Verifier, jwt: &str) -> Result<Self, TokenProblem> {
        verifier
            .verify_set::<SetClaims>(jwt)
            .map(|claims| claims.store)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn signer() -> Signer {
        let (private, _) = Signer::generate().unwrap();
        Signer::from_pem(&private, Path::new("k")).unwrap()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn every_change_raises_the_serial() {
        let s = signer();
        let mut store = Store::default();
        let (_, t) = store.issue(&s, "ci", Role::Read, DAY, 1000).unwrap();
        assert_eq!(store.serial, 1);
        store
            .set_user("ops", Role::Admin, "a long enough password")
            .unwrap();
        assert_eq!(store.serial, 2);
        let listed = store.revoke(&t.id, 1000).unwrap().unwrap();
        assert!(listed.revoked && store.is_revoked(&t.id));
        assert_eq!(store.serial, 3);
        store.remove_user("ops").unwrap();
        assert_eq!(store.serial, 4);
        assert!(store.remove_user("ops").is_err());
        assert_eq!(store.serial, 4, "a refused change changes nothing");
    }

    #[test]
    fn revocations_last_as_long_as_their_token() {
        let s = signer();
        let mut store = Store::default();
        let (_, t) = store.issue(&s, "ci", Role::Read, DAY, 1000).unwrap();
        store.revoke(&t.id, 1000).unwrap();
        let offline = uuid::Uuid::new_v4().to_string();
        assert_eq!(store.revoke(&offline, 1000).unwrap(), None);
        assert!(store.is_revoked(&offline));
        assert!(!store.purge(1000 + 3600));
        assert!(store.purge(1000 + DAY.as_secs() + 1));
        assert!(!store.is_revoked(&t.id) && store.tokens.is_empty());
        assert!(store.is_revoked(&offline), "kept for the longest lifetime");
        assert!(store.revoke("../etc", 0).is_err());
    }

    #[test]
    fn a_signed_store_verifies_only_with_its_key() {
        let s = signer();
        let mut store = Store::default();
        store
            .set_user("ops", Role::Admin, "a long enough password")
            .unwrap();
        let jwt = store.sign(&s).unwrap();
        assert_eq!(Store::from_signed(s.verifier(), &jwt), Ok(store));
        assert_eq!(
            Store::from_signed(signer().verifier(), &jwt),
            Err(TokenProblem::UnknownKey)
        );
        // A credential is not a set.
        let (token, _) = s.issue("x", Role::Admin, DAY, 1000).unwrap();
        assert_eq!(
            Store::from_signed(s.verifier(), &token),
            Err(TokenProblem::WrongKind)
        );
    }

    #[test]
    fn names_are_checked() {
        let mut store = Store::default();
        for bad in ["", "a b", "x/y", &"n".repeat(65)] {
            assert!(
                store
                    .set_user(bad, Role::Read, "a long enough password")
                    .is_err()
            );
        }
        assert!(store.set_user("ops", Role::Read, "short").is_err());
        assert_eq!(store.serial, 0);
    }
}
