//! Marathon placement constraints: `[field, operator, value?]`, e.g. `["hostname", "UNIQUE"]`,
//! `["@region", "IS", "us-west-2"]`, `["@zone", "GROUP_BY", "3"]`, `["rack_id", "LIKE", "r[12]"]`.
//!
//! Fields are `hostname`, the agent's fault domain (`@region`, `@zone`) and any other name:
//! an attribute of the agent (`attributes` in its config, as Mesos agents have them). An
//! agent without the field (no zone configured, no such attribute) satisfies no constraint
//! on it but `UNLIKE`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a constraint looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Hostname,
    Region,
    Zone,
    /// An agent attribute, by name.
    Attribute(String),
}

impl Field {
    fn as_str(&self) -> &str {
        match self {
            Field::Hostname => "hostname",
            Field::Region => "@region",
            Field::Zone => "@zone",
            Field::Attribute(name) => name,
        }
    }
}

/// Whether `name` can be an attribute's name (the agent config checks the same).
pub fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('@')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// A `LIKE`/`UNLIKE` pattern: a regular expression the whole value must match, as in
/// Marathon (Java's `matches`). Kept as text, compiled once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    text: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Self, String> {
        regex::Regex::new(&format!("^(?:{text})$"))
            .map(|regex| Self {
                text: text.to_owned(),
                regex,
            })
            .map_err(|e| format!("{text:?} is not a regular expression: {e}"))
    }

    pub fn matches(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::new(&text)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.text
    }
}

/// What a constraint asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operator {
    /// At most one task per distinct value.
    Unique,
    /// Every task on the given value (or, without one, on the first task's value).
    Cluster(Option<String>),
    /// Only on agents whose field equals the value.
    Is(String),
    /// Spread evenly over the field's values. With the number N of values to expect, as
    /// Marathon: only values with no task yet until N have one, then only those with the
    /// fewest (tasks wait rather than pile into the values there are).
    GroupBy(Option<u32>),
    /// At most this many tasks per value.
    MaxPer(u32),
    /// Only on agents whose field matches the pattern.
    Like(Pattern),
    /// Only on agents whose field does not match (or that lack it).
    Unlike(Pattern),
}

/// One constraint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    pub field: Field,
    pub operator: Operator,
}

impl Constraint {
    /// Parses Marathon's array form; the error says what is wrong and what is expected.
    pub fn parse(v: &Value) -> Result<Self, String> {
        let parts: Option<Vec<&str>> = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect());
        let Some(parts) = parts else {
            return Err(
                "expected an array of strings: [field, operator] or [field, operator, value]"
                    .into(),
            );
        };
        let (field, op, value) = match parts.as_slice() {
            [f, o] => (*f, *o, None),
            [f, o, v] => (*f, *o, Some(*v)),
            _ => return Err("expected [field, operator] or [field, operator, value]".into()),
        };
        let field = match field {
            "hostname" | "@hostname" => Field::Hostname,
            "@region" => Field::Region,
            "@zone" => Field::Zone,
            name if is_attribute_name(name) => Field::Attribute(name.to_owned()),
            other => {
                return Err(format!(
                    "field {other:?} is not supported: use \"hostname\", \"@region\", \"@zone\" \
                     or an agent attribute's name (letters, digits, `-`, `.`, `_`)"
                ));
            }
        };
        let number = |v: Option<&str>| -> Result<Option<u32>, String> {
            v.map(|s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{op} takes a positive whole number, not {s:?}"))
            })
            .transpose()
        };
        let operator = match (op, value) {
            ("UNIQUE", None) => Operator::Unique,
            ("UNIQUE", Some(_)) => return Err("UNIQUE takes no value".into()),
            ("CLUSTER", v) => Operator::Cluster(v.map(str::to_owned)),
            ("IS", Some(v)) => Operator::Is(v.to_owned()),
            ("IS", None) => {
                return Err("IS needs a value, e.g. [\"@region\", \"IS\", \"us-west-2\"]".into());
            }
            ("GROUP_BY", v) => Operator::GroupBy(number(v)?),
            ("MAX_PER", v) => match number(v)? {
                Some(n) => Operator::MaxPer(n),
                None => {
                    return Err(
                        "MAX_PER needs a number, e.g. [\"@zone\", \"MAX_PER\", \"2\"]".into(),
                    );
                }
            },
            ("LIKE", Some(v)) => Operator::Like(Pattern::new(v)?),
            ("UNLIKE", Some(v)) => Operator::Unlike(Pattern::new(v)?),
            ("LIKE" | "UNLIKE", None) => {
                return Err(format!(
                    "{op} needs a regular expression, e.g. [\"rack_id\", \"{op}\", \"rack-[12]\"]"
                ));
            }
            (other, _) => {
                return Err(format!(
                    "operator {other:?} is not supported: use UNIQUE, CLUSTER, IS, LIKE, UNLIKE, \
                     GROUP_BY or MAX_PER"
                ));
            }
        };
        Ok(Self { field, operator })
    }

    /// Marathon's array form.
    pub fn to_json(&self) -> Value {
        let f = self.field.as_str();
        match &self.operator {
            Operator::Unique => json!([f, "UNIQUE"]),
            Operator::Cluster(None) => json!([f, "CLUSTER"]),
            Operator::Cluster(Some(v)) => json!([f, "CLUSTER", v]),
            Operator::Is(v) => json!([f, "IS", v]),
            Operator::GroupBy(None) => json!([f, "GROUP_BY"]),
            Operator::GroupBy(Some(n)) => json!([f, "GROUP_BY", n.to_string()]),
            Operator::MaxPer(n) => json!([f, "MAX_PER", n.to_string()]),
            Operator::Like(p) => json!([f, "LIKE", p.as_str()]),
            Operator::Unlike(p) => json!([f, "UNLIKE", p.as_str()]),
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marathon_forms_round_trip() {
        for c in [
            json!(["hostname", "UNIQUE"]),
            json!(["hostname", "CLUSTER", "node-2"]),
            json!(["@region", "IS", "us-west-2"]),
            json!(["@zone", "GROUP_BY", "3"]),
            json!(["@zone", "GROUP_BY"]),
            json!(["@zone", "MAX_PER", "2"]),
            json!(["rack_id", "LIKE", "rack-[12]"]),
            json!(["hostname", "UNLIKE", "node-(3|4)"]),
            json!(["gpu", "IS", "true"]),
        ] {
            assert_eq!(Constraint::parse(&c).unwrap().to_json(), c);
        }
    }

    #[test]
    fn patterns_match_whole_values() {
        let p = Pattern::new("rack-[12]").unwrap();
        assert!(p.matches("rack-1") && p.matches("rack-2"));
        assert!(!p.matches("rack-12") && !p.matches("my-rack-1"), "anchored");
        // Kept as text in Raft and gossip: the pattern survives a round trip.
        let c = Constraint::parse(&json!(["rack_id", "LIKE", "rack-[12]"])).unwrap();
        let back: Constraint = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bad_constraints_say_what_is_expected() {
        let err = |v: Value| Constraint::parse(&v).unwrap_err();
        assert!(err(json!("hostname")).contains("array"));
        assert!(err(json!(["@rack", "UNIQUE"])).contains("attribute"));
        assert!(err(json!(["hostname", "LIKE", "a("])).contains("not a regular expression"));
        assert!(err(json!(["hostname", "LIKE"])).contains("needs a regular expression"));
        assert!(err(json!(["hostname", "NEAR", "x"])).contains("not supported"));
        assert!(err(json!(["@region", "IS"])).contains("needs a value"));
        assert!(err(json!(["@zone", "GROUP_BY", "x"])).contains("positive whole number"));
        assert!(err(json!(["hostname", "UNIQUE", "x"])).contains("no value"));
    }
}
