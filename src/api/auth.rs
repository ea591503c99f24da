//! Who may do what through the API: bearer tokens, each with a name (the
//! person or system acting, recorded in alarm histories) and a role.
//!
//! ```toml
//! [auth]
//! anonymous_read = true     # reads without a token (dashboards on a control-room screen)
//! tokens = [
//!   { name = "kim", role = "operator", sha256 = "9f86d081884c7d65…" },
//! ]
//! ```
//!
//! The configuration holds only each token's SHA-256, never the token:
//! `usan token --name kim --role operator` makes a token and prints the line
//! to add. Roles are ordered: a viewer reads; an operator also works alarms
//! and pushes samples; an admin may do everything. Every write needs a token.

use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};

/// What a token may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Viewer,
    /// Also acknowledges, assigns, comments on and clears alarms; pushes samples.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether reads need no token.
    #[serde(default = "yes")]
    pub anonymous_read: bool,
    /// The API tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { anonymous_read: true, tokens: Vec::new() }
    }
}

fn yes() -> bool {
    true
}

/// One API token.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who acts with it.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the token, 64 hex digits.
    pub sha256: String,
}

impl AuthConfig {
    /// Every problem with the tokens.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = HashSet::new();
        let mut hashes = HashSet::new();
        for (i, token) in self.tokens.iter().enumerate() {
            if token.name.trim().is_empty() || token.name.len() > 64 {
                problems.push(format!("tokens[{i}]: name must be 1 to 64 characters"));
            }
            if !names.insert(token.name.as_str()) {
                problems.push(format!("tokens[{i}]: name `{}` is used twice", token.name));
            }
            if decode_hash(&token.sha256).is_none() {
                problems.push(format!("tokens[{i}]: sha256 must be 64 hex digits (`usan token` prints it)"));
            } else if !hashes.insert(token.sha256.to_ascii_lowercase()) {
                problems.push(format!("tokens[{i}]: the same token is configured twice"));
            }
        }
        problems
    }
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hash(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// The SHA-256 of a token in hex, as `[auth] tokens` holds it.
#[must_use]
pub fn sha256_hex(token: &str) -> String {
    hex(&hash(token))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No token where one is needed.
    #[error("this needs an API token (Authorization: Bearer …){0}")]
    NoToken(&'static str),
    /// A write authenticated by the dashboard's cookie alone, without the
    /// header only the dashboard's own script sends (a cross-site request).
    #[error("a write with the login cookie needs the X-Usan-Request header (cross-site requests are refused)")]
    CrossSite,
    /// A token that is not configured.
    #[error("the API token is not valid")]
    BadToken,
    /// A valid token whose role is too low.
    #[error("`{name}` has the {has} role; this needs {needs}")]
    Role {
        /// Who.
        name: String,
        /// Their role.
        has: &'static str,
        /// The role needed.
        needs: &'static str,
    },
}

/// The configured tokens, looked up by hash.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Identity>,
    anonymous_read: bool,
}

impl Tokens {
    /// From validated settings (invalid hashes are skipped).
    #[must_use]
    pub fn new(config: &AuthConfig) -> Tokens {
        let by_hash = config
            .tokens
            .iter()
            .filter_map(|t| Some((decode_hash(&t.sha256)?, Identity { name: t.name.clone(), role: t.role })))
            .collect();
        Tokens { by_hash, anonymous_read: config.anonymous_read }
    }

    /// Whether reads need no token.
    #[must_use]
    pub fn anonymous_read(&self) -> bool {
        self.anonymous_read
    }

    /// Whether any token is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Whom `token` (the bearer token, if any) identifies, when `needs` may
    /// proceed; `None` for an anonymous read.
    ///
    /// # Errors
    /// [`Denied`] when the request may not proceed.
    pub fn check(&self, token: Option<&str>, needs: Role) -> Result<Option<Identity>, Denied> {
        let Some(token) = token else {
            if needs == Role::Viewer && self.anonymous_read {
                return Ok(None);
            }
            let hint = if self.is_empty() { "; none is configured: add [auth] tokens (`usan token`)" } else { "" };
            return Err(Denied::NoToken(hint));
        };
        let identity = self.by_hash.get(&hash(token)).ok_or(Denied::BadToken)?;
        if identity.role < needs {
            return Err(Denied::Role {
                name: identity.name.clone(),
                has: identity.role.as_str(),
                needs: needs.as_str(),
            });
        }
        Ok(Some(identity.clone()))
    }
}

/// A new random token (43 characters, 256 bits) and its SHA-256 in hex.
///
/// # Errors
/// When the system's random source fails.
pub fn new_token() -> anyhow::Result<(String, String)> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // base64url without padding, by hand: 6 bits per character.
    let mut token = String::with_capacity(43);
    let mut bits = 0u32;
    let mut held = 0u32;
    for byte in bytes {
        bits = (bits << 8) | u32::from(byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            token.push(ALPHABET[((bits >> held) & 63) as usize] as char);
        }
    }
    if held > 0 {
        token.push(ALPHABET[((bits << (6 - held)) & 63) as usize] as char);
    }
    let sha = hex(&hash(&token));
    Ok((token, sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(anonymous_read: bool) -> (Tokens, String, String) {
        let (viewer, viewer_sha) = new_token().unwrap();
        let (operator, operator_sha) = new_token().unwrap();
        let config = AuthConfig {
            anonymous_read,
            tokens: vec![
                TokenConfig { name: "screen".into(), role: Role::Viewer, sha256: viewer_sha },
                TokenConfig { name: "kim".into(), role: Role::Operator, sha256: operator_sha.to_uppercase() },
            ],
        };
        assert!(config.validate().is_empty());
        (Tokens::new(&config), viewer, operator)
    }

    #[test]
    fn roles_decide_table() {
        let (open, viewer, operator) = tokens(true);
        let (closed, ..) = tokens(false);
        let kim = Some(Identity { name: "kim".into(), role: Role::Operator });
        // (tokens, bearer, needs, expected)
        type Case<'a> = (&'a Tokens, Option<&'a str>, Role, Result<Option<Identity>, &'a str>);
        let cases: Vec<Case> = vec![
            (&open, None, Role::Viewer, Ok(None)),
            (&closed, None, Role::Viewer, Err("needs an API token")),
            (&open, None, Role::Operator, Err("needs an API token")),
            (&open, Some("guess"), Role::Viewer, Err("not valid")),
            (&open, Some(&viewer), Role::Operator, Err("`screen` has the viewer role; this needs operator")),
            (&open, Some(&operator), Role::Operator, Ok(kim.clone())),
            (&open, Some(&operator), Role::Viewer, Ok(kim)),
            (&open, Some(&operator), Role::Admin, Err("this needs admin")),
        ];
        for (tokens, bearer, needs, expected) in cases {
            let got = tokens.check(bearer, needs).map_err(|e| e.to_string());
            match (&got, &expected) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert!(a.contains(b), "{a:?} lacks {b:?}"),
                _ => panic!("{bearer:?} needing {needs:?}: {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn tokens_are_random_and_only_their_hash_is_configured() {
        let (a, a_sha) = new_token().unwrap();
        let (b, _) = new_token().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(a_sha, hex(&hash(&a)));
        let bad = AuthConfig {
            anonymous_read: true,
            tokens: vec![
                TokenConfig { name: "x".into(), role: Role::Admin, sha256: "beef".into() },
                TokenConfig { name: "x".into(), role: Role::Admin, sha256: a_sha.clone() },
                TokenConfig { name: "y".into(), role: Role::Admin, sha256: a_sha },
            ],
        };
        let problems = bad.validate().join("\n");
        for expected in ["64 hex digits", "`x` is used twice", "configured twice"] {
            assert!(problems.contains(expected), "{problems}");
        }
    }
}
