//! Marathon placement constraints: `[field, operator, value?]`, e.g. `["hostname", "UNIQUE"]`,
//! `["@region", "IS", "us-west-2"]`, `["@zone", "GROUP_BY", "3"]`.
//!
//! Fields are `hostname` and the agent's fault domain, `@region` and `@zone`. An agent without
//! the field (no zone configured) satisfies no constraint on it.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What a constraint looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Hostname,
    Region,
    Zone,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Field::Hostname => "hostname",
            Field::Region => "@region",
            Field::Zone => "@zone",
        }
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
    /// Spread evenly over the field's values; the number (how many values to expect) is kept
    /// for the round trip but spreading uses the values the live agents have.
    GroupBy(Option<u32>),
    /// At most this many tasks per value.
    MaxPer(u32),
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
            other => {
                return Err(format!(
                    "field {other:?} is not supported: use \"hostname\", \"@region\" or \"@zone\""
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
            (other, _) => {
                return Err(format!(
                    "operator {other:?} is not supported: use UNIQUE, CLUSTER, IS, GROUP_BY or \
                     MAX_PER"
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
        ] {
            assert_eq!(Constraint::parse(&c).unwrap().to_json(), c);
        }
    }

    #[test]
    fn bad_constraints_say_what_is_expected() {
        let err = |v: Value| Constraint::parse(&v).unwrap_err();
        assert!(err(json!("hostname")).contains("array"));
        assert!(err(json!(["rack", "UNIQUE"])).contains("@zone"));
        assert!(err(json!(["hostname", "LIKE", "a.*"])).contains("not supported"));
        assert!(err(json!(["@region", "IS"])).contains("needs a value"));
        assert!(err(json!(["@zone", "GROUP_BY", "x"])).contains("positive whole number"));
        assert!(err(json!(["hostname", "UNIQUE", "x"])).contains("no value"));
    }
}
