//! The `Authorization` header as the clients of Marathon and DC/OS send it.
//!
//! - `token=<JWT>`: DC/OS's own scheme (the DC/OS CLI and Marathon clients on DC/OS);
//! - `Bearer <JWT>`: RFC 6750, what Prometheus and most HTTP tools send;
//! - `Basic <base64(user:password)>`: RFC 7617, Marathon's `--http_credentials`.

use base64::Engine as _;

/// A credential taken from a request.
#[derive(Clone, PartialEq, Eq)]
pub enum Presented {
    Token(String),
    Basic { user: String, password: String },
}

impl std::fmt::Debug for Presented {
    // Never print the secret part.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Presented::Token(_) => f.write_str("Token(..)"),
            Presented::Basic { user, .. } => write!(f, "Basic({user:?}, ..)"),
        }
    }
}

/// Why a header is not a credential, in words for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Parses an `Authorization` header value.
pub fn parse(header: &[u8]) -> Result<Presented, Malformed> {
    let text = std::str::from_utf8(header)
        .map_err(|_| Malformed("the Authorization header is not valid UTF-8"))?
        .trim();
    let (scheme, rest) = match text.split_once([' ', '=']) {
        Some((scheme, rest)) => (scheme, rest.trim()),
        None => (text, ""),
    };
    if scheme.eq_ignore_ascii_case("token") && text[scheme.len()..].starts_with('=') {
        return token(rest);
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        return token(rest);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| Malformed("the Basic credential is not valid base64"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| Malformed("the Basic credential is not valid UTF-8"))?;
        let (user, password) = decoded.split_once(':').ok_or(Malformed(
            "the Basic credential has no ':' between user and password",
        ))?;
        if user.is_empty() {
            return Err(Malformed("the Basic credential has an empty user name"));
        }
        return Ok(Presented::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    Err(Malformed(
        "unknown Authorization scheme: send `token=<token>`, `Bearer <token>` or `Basic <base64 of user:password>`",
    ))
}

fn token(rest: &str) -> Result<Presented, Malformed> {
    if rest.is_empty() {
        return Err(Malformed("the Authorization header carries an empty token"));
    }
    // A JWT is three base64url parts; anything else cannot be ours.
    let ok = rest.split('.').count() == 3
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(Malformed(
            "the token is not a JWT (three base64url parts separated by dots)",
        ));
    }
    Ok(Presented::Token(rest.to_owned()))
}

/// The header value that presents `token` the DC/OS way.
pub fn token_header(token: &str) -> String {
    format!("token={token}")
}

/// The header value that presents `user:password` as HTTP basic.
pub fn basic_header(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln";

    #[test]
    fn schemes() {
        let cases: &[(&str, &str, Result<Presented, &str>)] = &[
            ("DC/OS", "token=JWT", Ok(Presented::Token(JWT.into()))),
            ("bearer", "Bearer JWT", Ok(Presented::Token(JWT.into()))),
            (
                "bearer any case",
                "bearer  JWT ",
                Ok(Presented::Token(JWT.into())),
            ),
            (
                "basic",
                "Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z",
                Ok(Presented::Basic {
                    user: "alice".into(),
                    password: "s3cr3t:with:colons".into(),
                }),
            ),
            ("empty token", "token=", Err("empty token")),
            ("not a jwt", "Bearer abc", Err("not a JWT")),
            ("jwt with junk", "Bearer a.b.c d", Err("not a JWT")),
            ("basic not base64", "Basic !!!", Err("not valid base64")),
            ("basic no colon", "Basic YWxpY2U=", Err("no ':'")),
            ("basic no user", "Basic OnB3", Err("empty user")),
            ("unknown", "Digest x", Err("unknown Authorization scheme")),
            ("nothing", "", Err("unknown Authorization scheme")),
        ];
        for (what, header, want) in cases {
            let header = header.replace("JWT", JWT);
            match (parse(header.as_bytes()), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{what}"),
                (Err(Malformed(got)), Err(want)) => assert!(got.contains(want), "{what}: {got}"),
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
        assert!(parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn headers_round_trip() {
        assert_eq!(
            parse(basic_header("ops", "pw").as_bytes()),
            Ok(Presented::Basic {
                user: "ops".into(),
                password: "pw".into()
            })
        );
        assert_eq!(
            parse(token_header(JWT).as_bytes()),
            Ok(Presented::Token(JWT.into()))
        );
        assert_eq!(format!("{:?}", Presented::Token(JWT.into())), "Token(..)");
    }
}
