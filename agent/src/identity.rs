//! A node's identity: a stable id, created once and kept in the state directory, and a
//! generation that grows with every start.
//!
//! The gossip layer keys a node's state by (id, generation): a restarted node comes back under
//! the same id with a higher generation, so peers replace its old state instead of merging the
//! two, and the id stays the same in membership, DNS and leases.

use crate::Error;
use crate::state::StateDir;

const NODE_ID_FILE: &str = "node-id";
const GENERATION_FILE: &str = "generation";

/// This node's identity for this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Stable id (a UUID), the same across restarts.
    pub id: String,
    /// Start counter, strictly greater than at any earlier start.
    pub generation: u64,
}

impl NodeIdentity {
    /// Loads the node id (creating it on first start) and records a new generation.
    pub fn load_or_create(state: &StateDir) -> Result<Self, Error> {
        let corrupt = |name: &str, problem: String| Error::StateCorrupt {
            path: state.path().join(name),
            problem,
        };
        let id = match state.read(NODE_ID_FILE)? {
            Some(text) => {
                let text = text.trim();
                uuid::Uuid::parse_str(text)
                    .map_err(|e| corrupt(NODE_ID_FILE, format!("{text:?} is not a UUID: {e}")))?
                    .to_string()
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                state.write(NODE_ID_FILE, &format!("{id}\n"))?;
                id
            }
        };
        let previous = match state.read(GENERATION_FILE)? {
            Some(text) => text.trim().parse::<u64>().map_err(|e| {
                corrupt(
                    GENERATION_FILE,
                    format!("{:?} is not a number: {e}", text.trim()),
                )
            })?,
            None => 0,
        };
        // The clock too, so a start whose generation could not be written (a full disk) is
        // still above every earlier one, and so is the next after it.
        let generation = (previous + 1).max(crate::unix_ms());
        // Written before use: a crash right after start must not reuse this generation.
        if let Err(e) = state.write(GENERATION_FILE, &format!("{generation}\n")) {
            tracing::warn!(error = %e, generation,
                "cannot record this start's generation; going on with one from the clock");
        }
        Ok(Self { id, generation })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_generation_grows() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::load_or_create(&StateDir::open(dir.path()).unwrap()).unwrap();
        let second = NodeIdentity::load_or_create(&StateDir::open(dir.path()).unwrap()).unwrap();
        assert_eq!(first.id, second.id);
        assert!(second.generation > first.generation);
        // A clock set back does not take a generation back.
        std::fs::write(dir.path().join("generation"), format!("{}\n", u64::MAX / 2)).unwrap();
        let third = NodeIdentity::load_or_create(&StateDir::open(dir.path()).unwrap()).unwrap();
        assert_eq!(third.generation, u64::MAX / 2 + 1);
    }

    #[test]
    fn corrupt_id_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("node-id"), "not-a-uuid").unwrap();
        let err = NodeIdentity::load_or_create(&StateDir::open(dir.path()).unwrap()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("node-id") && msg.contains("not-a-uuid"),
            "{msg}"
        );
    }
}

/// The cluster as other clusters and operators know it: an id that never changes (derived
/// from the cluster CA, which every node has) and the cluster's name (`[gossip] cluster`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterIdentity {
    pub id: String,
    pub name: String,
    /// The DNS domain its tasks are named under (`mesos` by default).
    pub domain: String,
}

impl ClusterIdentity {
    /// The identity of the cluster whose CA is `ca_pem` (`None` in insecure mode: the id then
    /// comes from the name alone, and two insecure clusters of one name share it).
    pub fn new(ca_pem: Option<&str>, name: &str, domain: &str) -> Self {
        use sha2::Digest as _;
        let der = ca_pem
            .and_then(|pem| dcnet_auth::tls::certificates(pem).ok())
            .and_then(|certs| certs.into_iter().next());
        let digest: [u8; 32] = match der {
            Some(der) => sha2::Sha256::digest(der.as_ref()).into(),
            None => sha2::Sha256::digest(format!("dcnet insecure cluster {name}")).into(),
        };
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self {
            id: uuid::Builder::from_custom_bytes(bytes)
                .into_uuid()
                .to_string(),
            name: name.to_owned(),
            domain: domain.trim_end_matches('.').to_owned(),
        }
    }
}

#[cfg(test)]
mod cluster_tests {
    use super::ClusterIdentity;

    #[test]
    fn a_clusters_id_follows_its_ca_not_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dcnet_auth::PkiDir::new(dir.path());
        pki.init("east").unwrap();
        let pem = pki.ca_pem().unwrap();
        let a = ClusterIdentity::new(Some(&pem), "east", "mesos.");
        assert_eq!(a, ClusterIdentity::new(Some(&pem), "east", "mesos"));
        assert_eq!(a.domain, "mesos");
        assert_eq!(
            a.id,
            ClusterIdentity::new(Some(&pem), "renamed", "mesos").id
        );
        assert!(uuid::Uuid::parse_str(&a.id).is_ok());
        let other = tempfile::tempdir().unwrap();
        let pki = dcnet_auth::PkiDir::new(other.path());
        pki.init("east").unwrap();
        let b = ClusterIdentity::new(Some(&pki.ca_pem().unwrap()), "east", "mesos");
        assert_ne!(a.id, b.id, "two CAs, two clusters");
        assert_ne!(
            ClusterIdentity::new(None, "east", "mesos").id,
            ClusterIdentity::new(None, "west", "mesos").id
        );
    }
}
