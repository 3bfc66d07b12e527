//! The gossip keyring: one primary key that this node encrypts with, and any number of keys it
//! also accepts, so the cluster key is rotated without a moment of partition (as Serf does):
//! install the new key on every node, make it primary on every node, remove the old one.
//!
//! Keys are 32 random bytes, written in base64 (`dcnet keyring generate`). A key is named by
//! its id, the first 4 bytes of a SHA-256 over it, in hex: ids travel in every datagram and
//! in each node's published keyring fact, key bytes never do.
//!
//! The keyring lives in `<state_dir>/gossip-keyring.json` (mode 0600). A node that has none
//! starts one from the cluster secret; from then on the file wins over the secret, so a
//! rotation survives restarts (a changed secret is reported and ignored).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// Length of a key, in bytes.
pub const KEY_LEN: usize = 32;

/// A gossip key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

/// A key's public name: 4 bytes of a hash over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || KeyringError::BadKey {
            input: s.to_owned(),
        };
        if s.len() != 8 || !s.is_ascii() {
            return Err(bad());
        }
        let mut id = [0; 4];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(id))
    }
}

impl Key {
    /// A new random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key a cluster secret stands for (a node's first keyring is made from it).
    pub fn from_secret(secret: &Secret) -> Self {
        let mut h = Sha256::new();
        h.update(b"dcnet gossip key from the cluster secret\0");
        h.update(secret.as_bytes());
        Self(h.finalize().into())
    }

    /// Parses a key written in base64.
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let text = text.trim();
        let bytes = BASE64
            .decode(text)
            .ok()
            .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
            .ok_or_else(|| KeyringError::BadKey {
                input: if text.len() > 12 {
                    format!("{}…", &text[..text.floor_char_boundary(12)])
                } else {
                    text.to_owned()
                },
            })?;
        Ok(Self(bytes))
    }

    pub fn id(&self) -> KeyId {
        let mut h = Sha256::new();
        h.update(b"dcnet gossip key id\0");
        h.update(self.0);
        let digest = h.finalize();
        KeyId([digest[0], digest[1], digest[2], digest[3]])
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key in base64, as `dcnet keyring generate` prints it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id())
    }
}

/// What can go wrong with the keyring.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "{input:?} is not a gossip key: expected 32 bytes in base64 (make one with `dcnet keyring generate`) or, to name an installed key, its 8-hex-digit id from `dcnet keyring list`"
    )]
    BadKey { input: String },
    #[error("no installed key has id {id}; `dcnet keyring list` shows the installed ones")]
    Unknown { id: KeyId },
    #[error(
        "key {id} is this node's primary key; make another key primary (`dcnet keyring use`) before removing it"
    )]
    RemovePrimary { id: KeyId },
    #[error(
        "cannot read the gossip keyring {path}: {reason}; fix or remove the file (the node then starts one from the cluster secret)"
    )]
    Read { path: PathBuf, reason: String },
    #[error("cannot store the gossip keyring in {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One node's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Encrypts what this node sends.
    pub primary: Key,
    /// Accepted on receipt, the primary among them.
    pub installed: Vec<Key>,
}

impl Keys {
    fn new(primary: Key) -> Self {
        Self {
            installed: vec![primary.clone()],
            primary,
        }
    }

    /// The installed key with `id`.
    pub fn get(&self, id: KeyId) -> Option<&Key> {
        self.installed.iter().find(|k| k.id() == id)
    }

    /// What this node publishes about its keys.
    pub fn fact(&self) -> KeyringFact {
        KeyringFact {
            primary: self.primary.id().to_string(),
            keys: self.installed.iter().map(|k| k.id().to_string()).collect(),
        }
    }
}

/// A node's keyring as it tells the cluster (ids only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringFact {
    pub primary: String,
    pub keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct File {
    primary: String,
    keys: Vec<String>,
}

/// The keyring of a running node: shared by the transport (which reads it for every datagram)
/// and the API (which changes it), stored on every change.
#[derive(Clone)]
pub struct Keyring {
    keys: Arc<RwLock<Keys>>,
    path: Arc<PathBuf>,
}

/// Name of the keyring file in the state directory.
pub const KEYRING_FILE: &str = "gossip-keyring.json";

impl Keyring {
    /// Loads `<state_dir>/gossip-keyring.json`, or starts one from `secret` if there is none.
    /// The second value says whether the file's keys differ from the secret's (for a warning).
    pub fn open(state_dir: &Path, secret: &Secret) -> Result<(Self, bool), KeyringError> {
        let path = state_dir.join(KEYRING_FILE);
        let from_secret = Key::from_secret(secret);
        let (keys, ignored_secret) = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let keys = parse_file(&text).map_err(|reason| KeyringError::Read {
                    path: path.clone(),
                    reason,
                })?;
                let ignored = keys.get(from_secret.id()).is_none();
                (keys, ignored)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = Keys::new(from_secret);
                store(&path, &keys)?;
                (keys, false)
            }
            Err(e) => {
                return Err(KeyringError::Read {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        Ok((
            Self {
                keys: Arc::new(RwLock::new(keys)),
                path: Arc::new(path),
            },
            ignored_secret,
        ))
    }

    /// A keyring held in memory only (benchmarks, tests).
    pub fn in_memory(primary: Key) -> Self {
        Self {
            keys: Arc::new(RwLock::new(Keys::new(primary))),
            path: Arc::new(PathBuf::new()),
        }
    }

    /// The keys as they are now.
    pub fn keys(&self) -> Keys {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `f` on the current keys without copying them.
    pub fn with<R>(&self, f: impl FnOnce(&Keys) -> R) -> R {
        f(&self.keys.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Adds `key` to the accepted keys (a no-op if it is there). True if it was new.
    pub fn install(&self, key: Key) -> Result<bool, KeyringError> {
        self.change(|keys| {
            if keys.get(key.id()).is_some() {
                return Ok(false);
            }
            keys.installed.push(key);
            Ok(true)
        })
    }

    /// Makes the installed key `id` the primary one. True if it was not already.
    pub fn use_key(&self, id: KeyId) -> Result<bool, KeyringError> {
        self.change(|keys| {
            let key = keys.get(id).cloned().ok_or(KeyringError::Unknown { id })?;
            if keys.primary == key {
                return Ok(false);
            }
            keys.primary = key;
            Ok(true)
        })
    }

    /// Removes the key `id`, which must not be the primary one.
    pub fn remove(&self, id: KeyId) -> Result<(), KeyringError> {
        self.change(|keys| {
            if keys.primary.id() == id {
                return Err(KeyringError::RemovePrimary { id });
            }
            let before = keys.installed.len();
            keys.installed.retain(|k| k.id() != id);
            if keys.installed.len() == before {
                return Err(KeyringError::Unknown { id });
            }
            Ok(())
        })
    }

    /// Applies `f` to a copy, stores the copy, then makes it current: a change that cannot be
    /// stored does not happen (it would be undone by the next restart).
    fn change<R>(
        &self,
        f: impl FnOnce(&mut Keys) -> Result<R, KeyringError>,
    ) -> Result<R, KeyringError> {
        let mut guard = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let mut next = guard.clone();
        let r = f(&mut next)?;
        if next != *guard {
            if !self.path.as_os_str().is_empty() {
                store(&self.path, &next)?;
            }
            *guard = next;
        }
        Ok(r)
    }
}

fn parse_file(text: &str) -> Result<Keys, String> {
    let file: File = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let installed = file
        .keys
        .iter()
        .map(|k| Key::parse(k).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let primary = Key::parse(&file.primary).map_err(|e| e.to_string())?;
    if !installed.contains(&primary) {
        return Err("its primary key is not among its keys".into());
    }
    Ok(Keys { primary, installed })
}

fn store(path: &Path, keys: &Keys) -> Result<(), KeyringError> {
    let file = File {
        primary: keys.primary.to_base64(),
        keys: keys.installed.iter().map(Key::to_base64).collect(),
    };
    let text = serde_json::to_string_pretty(&file).unwrap_or_default();
    let tmp = path.with_extension("json.tmp");
    crate::state::write_atomically(path, &tmp, text.as_bytes(), 0o600).map_err(|source| {
        KeyringError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec())
    }

    #[test]
    fn a_keyring_starts_from_the_secret_and_then_wins_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, ignored) = Keyring::open(dir.path(), &secret("first-secret-0123")).unwrap();
        assert!(!ignored);
        let first = ring.keys().primary;
        assert_eq!(first, Key::from_secret(&secret("first-secret-0123")));
        let next = Key::generate();
        assert!(ring.install(next.clone()).unwrap());
        assert!(!ring.install(next.clone()).unwrap(), "installed twice");
        assert!(ring.use_key(next.id()).unwrap());
        ring.remove(first.id()).unwrap();

        // Restarted with a new secret: the file wins, and the caller is told.
        let (again, ignored) = Keyring::open(dir.path(), &secret("other-secret-0123")).unwrap();
        assert!(ignored);
        assert_eq!(again.keys().primary, next);
        assert_eq!(again.keys().installed, vec![next]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEYRING_FILE))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o077, 0, "keys readable by others: {mode:o}");
    }

    #[test]
    fn mistakes_are_refused_and_change_nothing() {
        let ring = Keyring::in_memory(Key::generate());
        let primary = ring.keys().primary.id();
        assert!(matches!(
            ring.remove(primary),
            Err(KeyringError::RemovePrimary { .. })
        ));
        let stranger = Key::generate().id();
        assert!(matches!(
            ring.use_key(stranger),
            Err(KeyringError::Unknown { .. })
        ));
        assert!(matches!(
            ring.remove(stranger),
            Err(KeyringError::Unknown { .. })
        ));
        assert!(matches!(
            Key::parse("c2hvcnQ="),
            Err(KeyringError::BadKey { .. })
        ));
        assert!(Key::parse("not base64 at all!").is_err());
        assert_eq!(ring.keys().installed.len(), 1);
    }

    #[test]
    fn keys_and_ids_round_trip_as_text() {
        let key = Key::generate();
        assert_eq!(Key::parse(&key.to_base64()).unwrap(), key);
        let id = key.id();
        assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
        assert!("123".parse::<KeyId>().is_err());
        assert!("zzzzzzzz".parse::<KeyId>().is_err());
    }
}
