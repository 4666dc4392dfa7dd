//! Console passwords: argon2id (the crate's default parameters, RFC 9106's second recommended set),
//! stored as PHC strings. Hashing is deliberately slow, so it runs off the async runtime.

use argon2::password_hash::{PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use domain::console_user::{NewPassword, PasswordHash};
use std::sync::LazyLock;

/// The hash of no one's password, verified against when a sign-in names an unknown email, so that
/// it takes as long as a wrong password for a known one and tells an attacker nothing.
static DUMMY: LazyLock<String> = LazyLock::new(|| hash_now("not anyone's password, only a decoy").0);

fn hash_now(password: &str) -> PasswordHash {
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    let phc = Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2id hashes any input");
    PasswordHash(phc.to_string())
}

fn verify_now(phc: &str, password: &str) -> bool {
    argon2::password_hash::PasswordHash::new(phc)
        .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// The argon2id PHC string of a new password.
pub async fn hash(password: NewPassword) -> anyhow::Result<PasswordHash> {
    Ok(tokio::task::spawn_blocking(move || hash_now(password.expose())).await?)
}

/// Whether `password` matches `stored`; with no stored hash (an unknown email) it is checked
/// against a decoy and is always false.
pub async fn verify(stored: Option<String>, password: String) -> anyhow::Result<bool> {
    Ok(tokio::task::spawn_blocking(move || match stored {
        Some(phc) => verify_now(&phc, &password),
        None => {
            verify_now(&DUMMY, &password);
            false
        }
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify() {
        let hash = hash_now("correct horse battery");
        assert!(hash.0.starts_with("$argon2id$v=19$"), "{}", hash.0);
        assert!(verify_now(&hash.0, "correct horse battery"));
        assert!(!verify_now(&hash.0, "correct horse battery!"));
        assert!(!verify_now("not a phc string", "x"));
        assert_ne!(hash_now("same").0, hash_now("same").0, "each hash has its own salt");
    }
}
