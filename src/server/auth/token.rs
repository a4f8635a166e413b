//! Secrets handed to clients (session cookies, API tokens, invite codes): 256 random bits,
//! stored only as their SHA-256 (a leaked database holds nothing that signs anyone in).
//! A plain hash is enough here, unlike for passwords: the secret is random, not guessable.

use sha2::{Digest, Sha256};

/// A new secret: 32 random bytes as 64 hex characters.
pub fn random_token() -> String {
    hex(&random_bytes::<32>())
}

/// A short public id (for listing and revoking sessions and tokens): 64 random bits.
pub fn random_id() -> String {
    hex(&random_bytes::<8>())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS generator does not fail on any platform we run on; if it ever did, no secret
    // may be made from zeros.
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    bytes
}

/// What is stored for a secret.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_carry_256_random_bits_and_are_stored_hashed() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), a);
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(random_id().len(), 16);
    }
}
