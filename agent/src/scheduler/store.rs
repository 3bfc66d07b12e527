//! The files a master kept before the scheduler's state moved to Raft: its apps
//! (`scheduler-apps.json`) and credentials (`auth.json`). A new leader imports them once
//! ([`super::service`]) and renames them `*.imported`.

use std::collections::BTreeMap;

use crate::Error;
use crate::app::App;
use crate::state::StateDir;

const FILE: &str = "scheduler-apps.json";
/// The credential store a master kept before Raft.
pub const CREDENTIALS_FILE: &str = "auth.json";

/// Loads the stored apps (none on first start).
pub fn load(dir: &StateDir) -> Result<BTreeMap<String, App>, Error> {
    let Some(text) = dir.read(FILE)? else {
        return Ok(BTreeMap::new());
    };
    let apps: Vec<App> = serde_json::from_str(&text).map_err(|e| Error::StateCorrupt {
        path: dir.path().join(FILE),
        problem: format!("not a list of apps ({e}); move it away to start without apps"),
    })?;
    Ok(apps.into_iter().map(|a| (a.id.clone(), a)).collect())
}

/// Renames the files once imported, so they are never imported again (and an operator can
/// still read them).
pub fn retire_files(dir: &StateDir) {
    for name in [FILE, CREDENTIALS_FILE] {
        let path = dir.path().join(name);
        if path.exists() {
            let _ = std::fs::rename(&path, dir.path().join(format!("{name}.imported")));
        }
    }
}

/// Replaces the stored apps.
pub fn save(dir: &StateDir, apps: &BTreeMap<String, App>) -> Result<(), Error> {
    let list: Vec<&App> = apps.values().collect();
    dir.write(
        FILE,
        &serde_json::to_string_pretty(&list).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn apps_survive_a_restart_and_corruption_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(tmp.path()).unwrap();
        assert!(load(&dir).unwrap().is_empty());
        let app = crate::app::parse(&json!({"id": "/web", "cmd": "x"}), None, "v")
            .unwrap()
            .app;
        let apps = BTreeMap::from([(app.id.clone(), app)]);
        save(&dir, &apps).unwrap();
        assert_eq!(load(&dir).unwrap(), apps);
        std::fs::write(tmp.path().join(FILE), "{").unwrap();
        let err = load(&dir).unwrap_err().to_string();
        assert!(err.contains(FILE) && err.contains("move it away"), "{err}");
    }
}
