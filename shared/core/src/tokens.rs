//! Runner tokens: signed, expiring, scoped to one build. Dispatch puts one in each job;
//! log ingest and the events route accept a runner's writes only for that build.

use hmac::{Hmac, KeyInit, Mac};
use kiln_domain::BuildId;
use sha2::Sha256;

const PREFIX: &str = "kr1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a runner token")]
    Malformed,
    #[error("runner token signature does not match")]
    BadSignature,
    #[error("runner token expired")]
    Expired,
}

/// Signs and checks runner tokens with one secret key.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner(..)")
    }
}

impl TokenSigner {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    /// A signer with a fresh random key (tokens die with the process).
    pub fn random() -> Self {
        let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        Self::new(key.into_bytes())
    }

    fn mac(&self, payload: &str) -> String {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// A token for `build`, valid until `expires_ms` (ms since the epoch).
    pub fn sign(&self, build: &BuildId, expires_ms: u64) -> String {
        let payload = format!("{PREFIX}.{build}.{expires_ms}");
        let sig = self.mac(&payload);
        format!("{payload}.{sig}")
    }

    /// The build a token is for, if it is genuine and unexpired at `now_ms`.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<BuildId, TokenError> {
        let mut parts = token.rsplitn(2, '.');
        let (Some(sig), Some(payload)) = (parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let mut fields = payload.split('.');
        let (Some(PREFIX), Some(build), Some(expires), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TokenError::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        if !constant_time_eq(self.mac(payload).as_bytes(), sig.as_bytes()) {
            return Err(TokenError::BadSignature);
        }
        if now_ms > expires {
            return Err(TokenError::Expired);
        }
        Ok(BuildId::new(build))
    }

    pub fn is_runner_token(token: &str) -> bool {
        token.starts_with("kr1.")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_scope_and_expiry() {
        let s = TokenSigner::new(b"k".to_vec());
        let b = BuildId::new("01a2-b");
        let t = s.sign(&b, 1000);
        assert_eq!(s.verify(&t, 999), Ok(b.clone()));
        assert_eq!(s.verify(&t, 1001), Err(TokenError::Expired));
        assert_eq!(TokenSigner::new(b"other".to_vec()).verify(&t, 0), Err(TokenError::BadSignature));
        let forged = t.replace("01a2-b", "01a2-c");
        assert_eq!(s.verify(&forged, 0), Err(TokenError::BadSignature));
        assert_eq!(s.verify("admin-token", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
