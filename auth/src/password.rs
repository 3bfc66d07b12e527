//! Passwords of basic credentials, kept only as Argon2id hashes (PHC strings).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::AuthError;

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;

/// The Argon2id hash of `password` with a fresh salt.
pub fn hash(password: &str) -> Result<String, AuthError> {
    if password.chars().count() < MIN_LEN {
        return Err(AuthError::Store(format!(
            "the password is too short: use at least {MIN_LEN} characters (or let dcnet generate one)"
        )));
    }
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| AuthError::crypto("salting the password")(&e))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::crypto("hashing the password")(&e))
}

/// Whether `password` matches the PHC string `phc` (false if `phc` does not parse).
pub fn verify(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A random password of 24 characters from an unambiguous alphabet.
pub fn generate() -> String {
    use rand::RngExt as _;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    (0..24)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let pw = generate();
        assert_eq!(pw.len(), 24);
        let a = hash(&pw).unwrap();
        let b = hash(&pw).unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify(&pw, &a));
        assert!(!verify("wrong password!", &a));
        assert!(!verify(&pw, "not a hash"));
        assert!(hash("short").unwrap_err().to_string().contains("at least"));
    }
}
