//! The query parameters of Marathon's `/v2` calls: `embed` (repeatable), the app filters
//! `id`, `cmd` and `label` (Marathon's label selector), and the flags `scale`, `force`,
//! `wipe`. Pure, so the selector grammar is tested without a server.

use std::collections::{BTreeMap, BTreeSet};

use crate::app::{App, Command};

/// A call's query string, parsed: every value of every key, in order.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A flag such as `scale=true`; absent is false. Anything but `true`/`false` is refused.
    pub fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(format!(
                "query parameter {key}={v:?}: expected true or false"
            )),
        }
    }

    /// The `embed` values, each also split at commas (`embed=apps.tasks,apps.counts`), with
    /// the `app.`/`apps.` prefix taken off: `tasks`, `counts`, `lastTaskFailure`, ...
    pub fn embeds(&self) -> BTreeSet<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == "embed")
            .flat_map(|(_, v)| v.split(','))
            .map(|e| {
                let e = e.trim();
                e.strip_prefix("apps.")
                    .or_else(|| e.strip_prefix("app."))
                    .unwrap_or(e)
                    .to_owned()
            })
            .collect()
    }

    /// The app filters of `GET /v2/apps`.
    pub fn app_filter(&self) -> Result<AppFilter, String> {
        Ok(AppFilter {
            id: self.get("id").map(str::to_owned),
            cmd: self.get("cmd").map(str::to_owned),
            label: self.get("label").map(Selector::parse).transpose()?,
        })
    }
}

/// `GET /v2/apps?id=&cmd=&label=`: an app is listed when it passes every filter given.
#[derive(Debug, Default)]
pub struct AppFilter {
    /// Part of the app's id.
    pub id: Option<String>,
    /// Part of its command line.
    pub cmd: Option<String>,
    pub label: Option<Selector>,
}

impl AppFilter {
    pub fn matches(&self, app: &App) -> bool {
        let id = self.id.as_deref().is_none_or(|part| app.id.contains(part));
        let cmd = self.cmd.as_deref().is_none_or(|part| match &app.command {
            Command::Shell(cmd) => cmd.contains(part),
            Command::Args(_) => false,
        });
        let label = self.label.as_ref().is_none_or(|s| s.matches(&app.labels));
        id && cmd && label
    }
}

/// Marathon's label selector: requirements separated by commas, all of which must hold.
/// `key` (the label exists), `key==value`, `key!=value`, `key in (a, b)`, `key notin (a, b)`;
/// a backslash escapes the next character (a comma or parenthesis in a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Exists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |what: &str| {
            format!(
                "label selector {text:?}: {what}; a selector is requirements separated by commas, \
                 each `key`, `key==value`, `key!=value`, `key in (a,b)` or `key notin (a,b)`"
            )
        };
        let mut requirements = Vec::new();
        for part in split_unescaped(text, ',', true) {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad("an empty requirement"));
            }
            let r = if let Some((k, v)) = split_op(part, "==") {
                Requirement::Equals(k, v)
            } else if let Some((k, v)) = split_op(part, "!=") {
                Requirement::NotEquals(k, v)
            } else if let Some((k, set)) = split_set(part, " notin ") {
                Requirement::NotIn(k, set.map_err(|e| bad(&e))?)
            } else if let Some((k, set)) = split_set(part, " in ") {
                Requirement::In(k, set.map_err(|e| bad(&e))?)
            } else {
                Requirement::Exists(unescape(part))
            };
            let key = match &r {
                Requirement::Exists(k)
                | Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(bad(&format!("{part:?} has no single-word label key")));
            }
            requirements.push(r);
        }
        Ok(Self(requirements))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_none_or(|v| !set.contains(v)),
        })
    }
}

/// `text` split at unescaped `sep`, outside parentheses when `nested` is set; escapes kept.
fn split_unescaped(text: &str, sep: char, nested: bool) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut depth = 0usize;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let part = parts.last_mut().expect("starts with one part");
        match c {
            '\\' => {
                part.push(c);
                if let Some(next) = chars.next() {
                    part.push(next);
                }
            }
            '(' if nested => {
                depth += 1;
                part.push(c);
            }
            ')' if nested => {
                depth = depth.saturating_sub(1);
                part.push(c);
            }
            c if c == sep && depth == 0 => parts.push(String::new()),
            c => part.push(c),
        }
    }
    parts
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `key<op>value`, at the first unescaped `op`.
fn split_op(part: &str, op: &str) -> Option<(String, String)> {
    let at = find_unescaped(part, op)?;
    Some((
        unescape(part[..at].trim()),
        unescape(part[at + op.len()..].trim()),
    ))
}

/// `key in (a, b)` / `key notin (a, b)`.
fn split_set(part: &str, op: &str) -> Option<(String, Result<BTreeSet<String>, String>)> {
    let at = find_unescaped(part, op)?;
    let key = unescape(part[..at].trim());
    let rest = part[at + op.len()..].trim();
    let set = match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(inner) => Ok(split_unescaped(inner, ',', false)
            .iter()
            .map(|v| unescape(v.trim()))
            .collect()),
        None => Err(format!("{rest:?} after `{}` is not a (list)", op.trim())),
    };
    Some((key, set))
}

fn find_unescaped(text: &str, needle: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if text[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn selectors_match_as_marathon_documents() {
        let web = labels(&[("tier", "web"), ("env", "prod"), ("odd", "a,b")]);
        let db = labels(&[("tier", "db")]);
        let sel = |t: &str| Selector::parse(t).unwrap();
        assert!(sel("tier").matches(&web) && !sel("env").matches(&db));
        assert!(sel("tier==web").matches(&web) && !sel("tier==web").matches(&db));
        assert!(sel("tier!=web").matches(&db) && !sel("tier!=web").matches(&web));
        assert!(sel("env in (prod, stage)").matches(&web));
        assert!(
            !sel("env in (prod, stage)").matches(&db),
            "no label, not in"
        );
        assert!(sel("env notin (stage)").matches(&web) && sel("env notin (x)").matches(&db));
        assert!(sel("tier==web, env in (prod,stage)").matches(&web));
        assert!(!sel("tier==web,env==stage").matches(&web), "all must hold");
        assert!(
            sel(r"odd==a\,b").matches(&web),
            "an escaped comma is part of the value"
        );
    }

    #[test]
    fn bad_selectors_are_explained() {
        for bad in ["", "tier==web,", "env in prod", "two words"] {
            let e = Selector::parse(bad).unwrap_err();
            assert!(e.contains("label selector"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn embeds_repeat_and_split() {
        let q = Query::parse(Some(
            "embed=apps.tasks&embed=apps.counts,app.lastTaskFailure&x=1",
        ));
        let e = q.embeds();
        assert!(e.contains("tasks") && e.contains("counts") && e.contains("lastTaskFailure"));
        assert_eq!(q.flag("scale"), Ok(false));
        assert!(Query::parse(Some("scale=maybe")).flag("scale").is_err());
        assert_eq!(Query::parse(Some("scale=True")).flag("scale"), Ok(true));
    }
}
