//! The cluster's key material, in one directory (`/etc/dcnet/pki` by default):
//!
//! | file | who needs it | what it is |
//! |---|---|---|
//! | `ca.crt` | every node and client | the cluster CA (ECDSA P-256, 10 years) |
//! | `ca.key` | masters | its key: masters issue their own TLS certificates with it |
//! | `token.pub` | every node | Ed25519 public key: verifies tokens and credential sets |
//! | `token.key` | masters | its private key: signs tokens and credential sets |
//!
//! `init` makes them once; operators copy the directory to the masters and `ca.crt` and
//! `token.pub` to every other node, as they copy the cluster secret. A master issues itself a
//! fresh server certificate (1 year, its addresses and names) at every start, so a changed
//! address never needs a manual step.

use std::fs;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::AuthError;
use crate::token::{Signer, Verifier};

/// The default directory.
pub const DEFAULT_DIR: &str = "/etc/dcnet/pki";

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TOKEN_KEY: &str = "token.key";
const TOKEN_PUB: &str = "token.pub";

const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 86_400);
/// Certificates start this long in the past, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// A server certificate and its key, PEM.
pub struct ServerCert {
    /// The certificate followed by the CA's.
    pub chain_pem: String,
    pub key_pem: String,
}

/// The key material directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiDir {
    path: PathBuf,
}

fn read(what: &'static str, path: &Path) -> Result<String, AuthError> {
    fs::read_to_string(path).map_err(|source| AuthError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `text` to a new file `path` with `mode`; never overwrites.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), AuthError> {
    let err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(err)
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

impl PkiDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.path.join(CA_CERT)
    }

    /// Makes the CA and the token key pair. Refuses if any of the files exists.
    pub fn init(&self, cluster: &str) -> Result<(), AuthError> {
        for name in [CA_CERT, CA_KEY, TOKEN_KEY, TOKEN_PUB] {
            let path = self.path.join(name);
            if path.exists() {
                return Err(AuthError::Exists { path });
            }
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.path)
            .map_err(|source| AuthError::Write {
                path: self.path.clone(),
                source,
            })?;
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AuthError::crypto("generating the CA key")(&e))?;
        let ca = ca_params(cluster)
            .self_signed(&ca_key)
            .map_err(|e| AuthError::crypto("making the CA certificate")(&e))?;
        let (token_key, token_pub) = Signer::generate()?;
        // Keys first, so a crash leaves no certificate without its key.
        write_new(&self.path.join(CA_KEY), &ca_key.serialize_pem(), 0o600)?;
        write_new(&self.path.join(TOKEN_KEY), &token_key, 0o600)?;
        write_new(&self.path.join(TOKEN_PUB), &token_pub, 0o644)?;
        write_new(&self.path.join(CA_CERT), &ca.pem(), 0o644)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Result<String, AuthError> {
        read("CA certificate", &self.path.join(CA_CERT))
    }

    /// The token signer (masters).
    pub fn signer(&self) -> Result<Signer, AuthError> {
        let path = self.path.join(TOKEN_KEY);
        Signer::from_pem(&read("token signing key", &path)?, &path)
    }

    /// The token verifier (every node).
    pub fn verifier(&self) -> Result<Verifier, AuthError> {
        let path = self.path.join(TOKEN_PUB);
        Verifier::from_pem(&read("token public key", &path)?, &path)
    }

    /// Issues a server certificate for `dns_names` and `ips`, signed by the CA.
    pub fn issue_server(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<ServerCert, AuthError> {
        let ca_pem = self.ca_pem()?;
        let key_path = self.path.join(CA_KEY);
        let ca_key =
            KeyPair::from_pem(&read("CA key", &key_path)?).map_err(|e| AuthError::Invalid {
                what: "CA key (PKCS#8 PEM)",
                path: key_path.clone(),
                detail: e.to_string(),
            })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| AuthError::Invalid {
            what: "CA certificate",
            path: self.ca_cert_path(),
            detail: e.to_string(),
        })?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().cloned().unwrap_or_else(|| "dcnet".into()),
        );
        params.distinguished_name = dn;
        for name in dns_names {
            let name = name
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| AuthError::Crypto {
                    action: "naming the server certificate",
                    detail: format!("{name:?}: {e}"),
                })?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params
            .subject_alt_names
            .extend(ips.iter().copied().map(SanType::IpAddress));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, SERVER_LIFETIME);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| AuthError::crypto("generating a server key")(&e))?;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| AuthError::crypto("signing the server certificate")(&e))?;
        Ok(ServerCert {
            chain_pem: format!("{}{}", cert.pem(), ca_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "dcnet");
    dn.push(DnType::CommonName, format!("dcnet cluster CA ({cluster})"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_LIFETIME);
    params
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn init_makes_private_keys_private_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path().join("pki"));
        pki.init("test").unwrap();
        for (name, mode) in [
            (CA_KEY, 0o600),
            (TOKEN_KEY, 0o600),
            (CA_CERT, 0o644),
            (TOKEN_PUB, 0o644),
        ] {
            let m = fs::metadata(pki.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(m & 0o777, mode, "{name}");
        }
        let before = pki.ca_pem().unwrap();
        let err = pki.init("test").unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(pki.ca_pem().unwrap(), before);
        // The pair on disk matches.
        let signer = pki.signer().unwrap();
        assert_eq!(signer.verifier().kid(), pki.verifier().unwrap().kid());
    }

    #[test]
    fn a_server_certificate_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = PkiDir::new(dir.path());
        pki.init("test").unwrap();
        let cert = pki
            .issue_server(
                &["node-1".into(), "leader.mesos".into()],
                &["10.0.0.1".parse().unwrap()],
            )
            .unwrap();
        // Verified by rustls the way clients will: chain, name and address.
        let config = crate::tls::client_config(&pki.ca_pem().unwrap()).unwrap();
        let server = crate::tls::server_config(&cert.chain_pem, &cert.key_pem).unwrap();
        for name in ["node-1", "leader.mesos", "10.0.0.1"] {
            crate::tls::tests::handshake(config.clone(), server.clone(), name).unwrap();
        }
        let err = crate::tls::tests::handshake(config, server, "10.0.0.2").unwrap_err();
        assert!(err.contains("NotValidForName"), "{err}");
    }
}
