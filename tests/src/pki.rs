//! Key material made by a test: a CA, server and client certificates signed by it (rcgen),
//! and an RSA key pair for service-account logins (openssl, as operators make them).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A CA in a directory of the test's own.
pub struct TestPki {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM and as files.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestPki {
    /// Makes a CA named `name` and writes its certificate to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let pki = Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        };
        std::fs::write(pki.ca_file_named(name), cert.pem())?;
        Ok(pki)
    }

    fn ca_file_named(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-ca.pem"))
    }

    /// A server certificate for `ip`, written as `<dir>/<file>.crt` and `.key`.
    pub fn server(&self, file: &str, ip: IpAddr) -> Result<Issued> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::IpAddress(ip)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, params)
    }

    /// A client certificate for `name`, written as `<dir>/<file>.crt` and `.key`.
    pub fn client(&self, file: &str, name: &str) -> Result<Issued> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file, params)
    }

    fn issue(&self, file: &str, params: CertificateParams) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file: self.dir.join(format!("{file}.crt")),
            key_file: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&issued.cert_file, &issued.cert_pem)?;
        std::fs::write(&issued.key_file, &issued.key_pem)?;
        Ok(issued)
    }
}

/// An RSA key pair (2048 bits) made with openssl: the private key's PEM and the public key's.
pub fn rsa_key_pair(dir: &Path, name: &str) -> Result<(String, String)> {
    let private = dir.join(format!("{name}.pem"));
    let run = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .context("running openssl (apt install openssl, or scripts/setup.sh)")?;
        if !out.status.success() {
            bail!(
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    };
    let path = private.to_string_lossy().into_owned();
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &path,
    ])?;
    let public = run(&["pkey", "-in", &path, "-pubout"])?;
    Ok((
        std::fs::read_to_string(&private)?,
        String::from_utf8(public)?,
    ))
}
