//! Join tokens as k3s writes and reads them: `K10<sha256 hex of the CA
//! bundle>::<user>:<password>` (`server` for the server token, `node` for
//! the agent token), a bare password (no CA check, with k3s's warning), or a
//! kubeadm-style bootstrap token `abcdef.0123456789abcdef` from `k3s token
//! create`.

use sha2::{Digest, Sha256};

/// A parsed token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The CA hash the token pins, if any.
    pub ca_hash: Option<String>,
    /// Basic-auth user (`server` or `node`), when not a bootstrap token.
    pub user: String,
    /// The secret (password, or the whole bootstrap token).
    pub password: String,
    /// A bootstrap token (sent as a bearer token).
    pub bootstrap: bool,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("ca_hash", &self.ca_hash)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be read (k3s's words).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Nothing given.
    #[error("token must not be empty")]
    Empty,
    /// A `K10` token whose hash is not 64 hex digits.
    #[error("invalid token CA hash length")]
    HashLength,
    /// No `user:password` after the hash.
    #[error("invalid token format")]
    Format,
}

/// The hex sha256 k3s puts in tokens: of the CA bundle's bytes, exactly as `/cacerts` serves them.
pub fn ca_hash(ca_pem: &[u8]) -> String {
    hex::encode(Sha256::digest(ca_pem))
}

/// `K10<hash>::<user>:<password>`.
pub fn format(ca_pem: &[u8], user: &str, password: &str) -> String {
    format!("K10{}::{user}:{password}", ca_hash(ca_pem))
}

/// True for a kubeadm bootstrap token (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn is_bootstrap(token: &str) -> bool {
    let Some((id, secret)) = token.split_once('.') else {
        return false;
    };
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    ok(id, 6) && ok(secret, 16)
}

/// Parses a token given to `--token` (or read from `--token-file`).
pub fn parse(token: &str) -> Result<Token, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    let (hash, creds) = match token.strip_prefix("K10") {
        Some(rest) => match rest.split_once("::") {
            Some((hash, creds)) => (hash, creds),
            None => ("", rest),
        },
        None => ("", token),
    };
    if !hash.is_empty() && hash.len() != 64 {
        return Err(TokenError::HashLength);
    }
    let ca_hash = (!hash.is_empty()).then(|| hash.to_string());
    if is_bootstrap(creds) {
        return Ok(Token {
            ca_hash,
            user: String::new(),
            password: creds.to_string(),
            bootstrap: true,
        });
    }
    let (user, password) = match creds.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        // A bare password: k3s treats it as `<none>:::<password>`.
        None if hash.is_empty() && !token.starts_with("K10") => (String::new(), creds.to_string()),
        None => return Err(TokenError::Format),
    };
    if password.is_empty() {
        return Err(TokenError::Format);
    }
    Ok(Token {
        ca_hash,
        user,
        password,
        bootstrap: false,
    })
}

/// A fresh secret: 16 random bytes as hex (what k3s generates when no token is given).
pub fn random_secret() -> String {
    hex::encode(&uuid::Uuid::new_v4().as_bytes()[..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_k10_tokens() {
        let pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        let t = format(pem, "server", "s3cret");
        assert!(t.starts_with("K10"));
        let parsed = parse(&t).unwrap();
        assert_eq!(parsed.ca_hash.as_deref(), Some(ca_hash(pem).as_str()));
        assert_eq!(
            (parsed.user.as_str(), parsed.password.as_str()),
            ("server", "s3cret")
        );
        let bare = parse("justapassword").unwrap();
        assert_eq!(bare.ca_hash, None);
        assert_eq!(bare.password, "justapassword");
        assert_eq!(parse("K10abc::server:x"), Err(TokenError::HashLength));
        assert!(parse("abcdef.0123456789abcdef").unwrap().bootstrap);
    }
}
