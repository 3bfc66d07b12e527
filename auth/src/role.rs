//! Roles and what each may do: `admin` everything, `read` only what changes nothing.

use serde::{Deserialize, Serialize};

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: `GET` and `HEAD` (dashboards, monitoring, `dcnet nodes`).
    Read,
    /// Everything, including running commands on every node through the scheduler.
    Admin,
}

impl Role {
    /// Whether this role may make a request with `method`.
    pub fn allows(self, method: &str) -> bool {
        match self {
            Role::Admin => true,
            Role::Read => matches!(method, "GET" | "HEAD"),
        }
    }

    /// The role's name as written in tokens, files and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use `admin` or `read`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_may_only_read() {
        for (role, method, allowed) in [
            (Role::Read, "GET", true),
            (Role::Read, "HEAD", true),
            (Role::Read, "POST", false),
            (Role::Read, "PUT", false),
            (Role::Read, "PATCH", false),
            (Role::Read, "DELETE", false),
            (Role::Read, "OPTIONS", false),
            (Role::Admin, "DELETE", true),
            (Role::Admin, "POST", true),
        ] {
            assert_eq!(role.allows(method), allowed, "{role} {method}");
        }
    }

    #[test]
    fn names_round_trip() {
        for role in [Role::Read, Role::Admin] {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().unwrap_err().contains("admin"));
    }
}
