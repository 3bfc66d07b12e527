//! The apps on disk: one JSON file in the state directory, rewritten atomically on every
//! change, so a restarted (or newly elected) scheduler has every app back.

use std::collections::BTreeMap;

use super::app::App;
use crate::Error;
use crate::state::StateDir;

const FILE: &str = "scheduler-apps.json";

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
        let app = super::super::app::parse(&json!({"id": "/web", "cmd": "x"}), None, "v")
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
