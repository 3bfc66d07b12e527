//! Where a client (the `dcnet` CLI, the CNI plugin) finds its credential, like kubeconfig:
//!
//! 1. `DCNET_TOKEN` in the environment (a token);
//! 2. the file given with `--credentials`, or in `DCNET_CREDENTIALS`;
//! 3. `/etc/dcnet/credentials` for root, `$XDG_CONFIG_HOME/dcnet/credentials` (or
//!    `~/.config/dcnet/credentials`) for everyone else.
//!
//! The file is TOML with either `token = "..."` or `user` and `password`, readable by its
//! owner only (mode 0600); `dcnet auth` writes it so.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::credential;
use crate::error::AuthError;

/// Root's credential file.
pub const ROOT_FILE: &str = "/etc/dcnet/credentials";
/// Environment variable naming a credential file.
pub const ENV_FILE: &str = "DCNET_CREDENTIALS";
/// Environment variable holding a token.
pub const ENV_TOKEN: &str = "DCNET_TOKEN";

/// A credential file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// A credential ready to send, and where it came from (for messages).
#[derive(Clone)]
pub struct ClientCredential {
    /// The `Authorization` header value.
    pub header: String,
    pub source: String,
}

impl std::fmt::Debug for ClientCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientCredential(from {})", self.source)
    }
}

/// The default credential file of the user running this process.
pub fn default_path() -> PathBuf {
    if nix_is_root() {
        return PathBuf::from(ROOT_FILE);
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from(".config"));
    config.join("dcnet").join("credentials")
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The file a client reads: `explicit`, else `DCNET_CREDENTIALS`, else the default.
pub fn path(explicit: Option<&Path>) -> PathBuf {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var_os(ENV_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(default_path)
}

/// The client's credential. `Ok(None)` when none is configured and the default file does
/// not exist (the request goes without, and the server's 401 says what to do); an error when
/// a named file is missing or unreadable or holds nothing usable.
pub fn load(explicit: Option<&Path>) -> Result<Option<ClientCredential>, AuthError> {
    if let Some(token) = std::env::var(ENV_TOKEN)
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Some(ClientCredential {
            header: credential::token_header(token.trim()),
            source: format!("${ENV_TOKEN}"),
        }));
    }
    let named = explicit.is_some() || std::env::var_os(ENV_FILE).is_some_and(|v| !v.is_empty());
    let path = path(explicit);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(source) => {
            return Err(AuthError::Read {
                what: "credential file",
                path,
                source,
            });
        }
    };
    let invalid = |detail: String| AuthError::Invalid {
        what: "credential file (TOML with `token = \"...\"`, or `user` and `password`)",
        path: path.clone(),
        detail,
    };
    let file: CredentialFile = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    let header = match (&file.token, &file.user, &file.password) {
        (Some(token), None, None) => credential::token_header(token.trim()),
        (None, Some(user), Some(password)) => credential::basic_header(user, password),
        _ => {
            return Err(invalid(
                "set either `token`, or both `user` and `password`".into(),
            ));
        }
    };
    Ok(Some(ClientCredential {
        header,
        source: path.display().to_string(),
    }))
}

/// A warning if the credential file at `path` can be read by others.
pub fn permission_warning(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "warning: {} can be read by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )
    })
}

/// Writes a credential file (mode 0600, parents 0700), replacing any.
pub fn write(path: &Path, file: &CredentialFile) -> Result<(), AuthError> {
    let err = |source| AuthError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(err)?;
    }
    let text = format!(
        "# dcnet credential (keep it secret: it lets its holder act on the cluster)\n{}",
        toml::to_string(file).unwrap_or_default()
    );
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("credentials");
        let file = CredentialFile {
            token: Some("a.b.c".into()),
            ..Default::default()
        };
        write(&path, &file).unwrap();
        assert_eq!(permission_warning(&path), None);
        let loaded = load(Some(&path)).unwrap().unwrap();
        assert_eq!(loaded.header, "token=a.b.c");
        assert_eq!(loaded.source, path.display().to_string());

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(permission_warning(&path).unwrap().contains("chmod 600"));

        fs::write(&path, "user = \"ops\"\npassword = \"pw\"\n").unwrap();
        assert!(
            load(Some(&path))
                .unwrap()
                .unwrap()
                .header
                .starts_with("Basic ")
        );

        fs::write(&path, "user = \"ops\"\n").unwrap();
        let err = load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("both `user` and `password`"), "{err}");

        let missing = dir.path().join("nope");
        let err = load(Some(&missing)).unwrap_err().to_string();
        assert!(
            err.contains("credential file") && err.contains("nope"),
            "{err}"
        );
    }
}
