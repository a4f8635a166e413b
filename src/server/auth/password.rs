//! Passwords: the NIST SP 800-63B rules and Argon2id hashing at OWASP's parameters.
//!
//! Hashing costs 19 MiB and tens of milliseconds of one core, so it runs on a blocking
//! thread behind a small semaphore: a burst of logins queues there instead of taking every
//! core (and every blocking thread) from the chat. A login for an unknown username
//! verifies against a dummy hash of the same parameters, so it costs what a wrong
//! password costs and the timing does not tell which usernames exist.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::SaltString,
};
use std::{collections::HashSet, sync::Arc, sync::OnceLock};
use tokio::sync::Semaphore;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted, in characters (hashing cost does not depend on it much,
/// but a bound keeps request bodies and the hasher's input small).
pub const MAX_PASSWORD_CHARS: usize = 256;
/// OWASP's Argon2id minimum: m = 19 MiB, t = 2, p = 1.
const MEMORY_KIB: u32 = 19 * 1024;
const ITERATIONS: u32 = 2;
const LANES: u32 = 1;
/// Hashes running at once.
const HASHERS: usize = 2;

/// The list of common passwords shipped with the server (see COMMON_PASSWORDS.md).
static COMMON: &str = include_str!("common_passwords.txt");

fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| COMMON.lines().map(str::trim).filter(|l| !l.is_empty()).collect())
}

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeakPassword {
    #[error("a password needs at least {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    #[error("a password has at most {MAX_PASSWORD_CHARS} characters")]
    TooLong,
    #[error("that password is on the list of commonly used passwords; choose another")]
    Common,
    #[error("a password may not be (or contain only) the username")]
    IsUsername,
}

/// NIST SP 800-63B: length only (12–256 characters, no composition rules), not a known
/// common password, not the username. Spaces and any Unicode are allowed.
pub fn check_password(password: &str, username: &str) -> Result<(), WeakPassword> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(WeakPassword::TooShort);
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(WeakPassword::TooLong);
    }
    let lower = password.to_lowercase();
    if common().contains(lower.as_str()) {
        return Err(WeakPassword::Common);
    }
    if !username.is_empty() && lower.replace(username, "").trim().is_empty() {
        return Err(WeakPassword::IsUsername);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("the password hasher stopped")]
    Stopped,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes a password to a PHC string (blocking; call through [`Hasher`]).
pub fn hash_blocking(password: &str) -> Result<String, HashError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| HashError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| HashError::Hash(e.to_string()))?;
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Hash(e.to_string()))
}

/// Checks a password against a PHC string (blocking). A malformed string never matches.
/// The parameters come from the string, so hashes made with other costs still verify.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Runs hashing on blocking threads, a few at a time.
#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password with the same parameters: what an unknown username
    /// is verified against.
    dummy: Arc<OnceLock<String>>,
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher { permits: Arc::new(Semaphore::new(HASHERS)), dummy: Arc::default() }
    }
}

impl Hasher {
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Stopped)?;
        tokio::task::spawn_blocking(f).await.map_err(|_| HashError::Stopped)
    }

    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move || hash_blocking(&password)).await?
    }

    /// Verifies `password` against `phc`, or, when there is no account (`None`), against
    /// the dummy hash, so both cost the same; the result is then always false.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, HashError> {
        let dummy = self.dummy.clone();
        self.run(move || match phc {
            Some(phc) => verify_blocking(&password, &phc),
            None => {
                let dummy = dummy.get_or_init(|| {
                    let random = super::token::random_token();
                    hash_blocking(&random).unwrap_or_default()
                });
                let _ = verify_blocking(&password, dummy);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_the_rule_and_nothing_about_composition() {
        assert_eq!(check_password("short", "ann"), Err(WeakPassword::TooShort));
        assert_eq!(check_password(&"x".repeat(257), "ann"), Err(WeakPassword::TooLong));
        assert!(check_password(&"é".repeat(12), "ann").is_ok(), "characters, not bytes");
        assert!(check_password("all lower case words here", "ann").is_ok());
        assert!(check_password(&"z".repeat(256), "ann").is_ok());
    }

    #[test]
    fn common_passwords_and_the_username_are_refused() {
        assert_eq!(check_password("password1234", "ann"), Err(WeakPassword::Common));
        assert_eq!(check_password("PassWord1234", "ann"), Err(WeakPassword::Common), "case-insensitive");
        assert_eq!(check_password("annannannann", "ann"), Err(WeakPassword::IsUsername));
        assert!(common().len() > 100, "the shipped list is loaded");
    }

    #[test]
    fn hashes_are_argon2id_phc_strings_at_owasp_parameters() {
        let phc = hash_blocking("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_blocking("correct horse battery", &phc));
        assert!(!verify_blocking("correct horse battery!", &phc));
        assert!(!verify_blocking("anything", "not a phc string"));
        assert_ne!(phc, hash_blocking("correct horse battery").unwrap(), "salted");
    }
}
