//! The run's secret redactor, fast with thousands of secrets.
//!
//! A federation run over 1000 sites holds several thousand secret values
//! (service-account tokens, agent kubeconfigs, CA keys), and every event's
//! text passes the redactor. Searching each text once per secret made the
//! run quadratic (a warm 1000-site run spent most of its minute there), so
//! secrets are indexed instead: each secret of at least [`WINDOW`] bytes is
//! filed under one [`WINDOW`]-byte slice of itself, its *anchor*, and
//! redacting a text costs one hash lookup per byte of the text whatever the
//! number of secrets. The anchor is the slice, among a few evenly spaced
//! ones, that the fewest secrets already filed share: secrets of one kind
//! share their start (every service-account JWT opens with the same header,
//! every PEM block with the same armour), so a fixed offset would file them
//! all under one key. Secrets shorter than [`WINDOW`] are few (passwords) and
//! are searched for one by one.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};

/// The length of an anchor, in bytes.
const WINDOW: usize = 8;
/// How many evenly spaced slices of a secret are candidates for its anchor.
const ANCHORS: usize = 8;
/// What a secret is replaced with.
const MASK: &str = "********";

/// Replaces every known secret value in text with `********`; shared by the
/// whole run, so a secret added by one task is redacted everywhere after.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    index: Arc<RwLock<Index>>,
}

/// Hashing of anchor keys.
type Anchors = BuildHasherDefault<WindowHasher>;

#[derive(Debug, Default)]
struct Index {
    /// Every secret, to add each once.
    all: HashSet<Arc<str>>,
    /// Anchor → the secrets filed under it, with the anchor's offset in each.
    anchored: HashMap<u64, Vec<(Arc<str>, usize)>, Anchors>,
    /// Secrets shorter than an anchor, longest first.
    short: Vec<Arc<str>>,
    /// The shortest secret's length.
    min_len: usize,
}

impl Redactor {
    /// A redactor for these secret values (empty ones are ignored).
    pub fn new<I: IntoIterator<Item = String>>(secrets: I) -> Redactor {
        let r = Redactor::default();
        for s in secrets {
            r.add(&s);
        }
        r
    }

    /// Redacts `secret` from now on (an empty value is ignored).
    pub fn add(&self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        if index.all.contains(secret) {
            return;
        }
        let secret: Arc<str> = secret.into();
        index.all.insert(secret.clone());
        index.min_len = match index.min_len {
            0 => secret.len(),
            n => n.min(secret.len()),
        };
        if secret.len() < WINDOW {
            index.short.push(secret);
            index.short.sort_by_key(|s| std::cmp::Reverse(s.len()));
            return;
        }
        let bytes = secret.as_bytes();
        let span = bytes.len() - WINDOW;
        let offset = (0..ANCHORS)
            .map(|k| k * span / (ANCHORS - 1))
            .min_by_key(|&at| index.anchored.get(&window(bytes, at)).map_or(0, Vec::len))
            .unwrap_or(0);
        let key = window(bytes, offset);
        index
            .anchored
            .entry(key)
            .or_default()
            .push((secret, offset));
    }

    /// `text` with every secret replaced.
    pub fn redact(&self, text: &str) -> String {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        if index.all.is_empty() || text.len() < index.min_len {
            return text.to_string();
        }
        let bytes = text.as_bytes();
        // Every occurrence of an anchored secret, as (start, end).
        let mut found: Vec<(usize, usize)> = Vec::new();
        if !index.anchored.is_empty() && bytes.len() >= WINDOW {
            for at in 0..=bytes.len() - WINDOW {
                let Some(filed) = index.anchored.get(&window(bytes, at)) else {
                    continue;
                };
                for (secret, offset) in filed {
                    let Some(start) = at.checked_sub(*offset) else {
                        continue;
                    };
                    let end = start + secret.len();
                    if bytes.get(start..end) == Some(secret.as_bytes()) {
                        found.push((start, end));
                    }
                }
            }
        }
        // Leftmost first, the longest of those starting at one place, so a
        // secret containing another is replaced whole.
        found.sort_by_key(|&(start, end)| (start, std::cmp::Reverse(end)));
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for (start, end) in found {
            if start < done {
                continue;
            }
            // Both ends lie on char boundaries: a secret is valid UTF-8, so
            // its bytes in `text` begin and end whole characters.
            out.push_str(text.get(done..start).unwrap_or_default());
            out.push_str(MASK);
            done = end;
        }
        out.push_str(text.get(done..).unwrap_or_default());
        for secret in &index.short {
            if out.contains(&**secret) {
                out = out.replace(&**secret, MASK);
            }
        }
        out
    }

    /// Whether no secret is known yet.
    pub fn is_empty(&self) -> bool {
        self.index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .all
            .is_empty()
    }
}

/// The [`WINDOW`] bytes of `bytes` at `at`, as a key.
fn window(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; WINDOW];
    w.copy_from_slice(&bytes[at..at + WINDOW]);
    u64::from_le_bytes(w)
}

/// Hashes an anchor key: one folded multiply (the key is already the bytes
/// themselves, so SipHash's protection buys nothing here).
#[derive(Debug, Default)]
struct WindowHasher(u64);

impl Hasher for WindowHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_occurrence_of_long_and_short_secrets_is_replaced() {
        let r = Redactor::new(["pw".to_string(), "tok-0123456789".to_string()]);
        assert_eq!(
            r.redact("a tok-0123456789 b pw c tok-0123456789"),
            "a ******** b ******** c ********"
        );
        assert_eq!(
            r.redact("tok-012345678"),
            "tok-012345678",
            "a prefix is no secret"
        );
        assert_eq!(r.redact(""), "");
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let r = Redactor::new([
            "inner-secret-1".to_string(),
            "outer[inner-secret-1]outer".to_string(),
        ]);
        assert_eq!(r.redact("x outer[inner-secret-1]outer y"), "x ******** y");
        assert_eq!(r.redact("x inner-secret-1 y"), "x ******** y");
    }

    #[test]
    fn secrets_sharing_their_start_are_each_found() {
        // Like service-account JWTs: one header, different claims and signatures.
        let head = "eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.";
        let secrets: Vec<String> = (0..2000).map(|i| format!("{head}{i:08}.sig{i}")).collect();
        let r = Redactor::new(secrets.clone());
        for s in [&secrets[0], &secrets[999], &secrets[1999]] {
            assert_eq!(r.redact(&format!("token: {s}\n")), "token: ********\n");
        }
        assert_eq!(
            r.redact(&format!("{head}99999999.sig1")),
            format!("{head}99999999.sig1")
        );
        // The anchors spread: no key holds more than a few secrets.
        let index = r.index.read().unwrap();
        let fullest = index.anchored.values().map(Vec::len).max().unwrap();
        assert!(fullest <= 16, "{fullest} secrets under one anchor");
    }

    #[test]
    fn multibyte_text_around_a_secret_is_kept() {
        let r = Redactor::new(["geheimnis-ä-42".to_string()]);
        assert_eq!(r.redact("ü geheimnis-ä-42 ö"), "ü ******** ö");
        assert_eq!(r.redact("ääääääääää"), "ääääääääää");
    }

    #[test]
    fn adding_a_secret_twice_files_it_once() {
        let r = Redactor::new(vec!["same-secret-value".to_string(); 3]);
        assert_eq!(r.index.read().unwrap().all.len(), 1);
        assert_eq!(r.redact("same-secret-value"), "********");
        assert!(!r.is_empty());
        assert!(Redactor::default().is_empty());
    }
}
