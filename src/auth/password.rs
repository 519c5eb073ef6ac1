//! Password hashing with argon2id (PHC strings in the database).

use argon2::Argon2;
use argon2::password_hash::{
    PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng,
};

use crate::error::{Error, Result};

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 1024;

/// The rules a new password must follow.
pub fn validate(password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(Error::invalid(
            "password",
            format!("must be at least {MIN_LEN} characters"),
        ));
    }
    if n > MAX_LEN {
        return Err(Error::invalid(
            "password",
            format!("must be at most {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

pub fn hash(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default() // argon2id v19 with the crate's recommended cost
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::runtime(format!("password hashing: {e}")))
}

pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when the account does not exist, so that a
/// wrong email takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$HjHtwCNgxgLs5mZ2C0f2MWQcnaurgbxWLmbyqgvUfWI"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse", &h));
        assert!(!verify("wrong horse", &h));
        assert!(!verify("x", "not a phc string"));
    }

    #[test]
    fn length_rules() {
        assert!(validate("short").is_err());
        assert!(validate("long enough").is_ok());
    }
}
