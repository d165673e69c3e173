//! A problem found in an inventory: severity, file:line:col, what is wrong
//! and how to fix it. Every stage of loading (YAML syntax, structure,
//! meaning) reports through [`Diagnostics`], so the user sees all problems
//! of a file in one run, ordered by position.

use std::fmt;

/// How serious a problem is: errors make the inventory invalid, warnings don't.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The inventory cannot be used as written.
    Error,
    /// The inventory works but probably not as intended.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem, located in the inventory file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// The inventory file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
    /// What is wrong, as a sentence. Never contains a secret value.
    pub message: String,
    /// How to fix it (may be empty).
    pub hint: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.col, self.severity, self.message
        )?;
        if !self.hint.is_empty() {
            write!(f, "\n  help: {}", self.hint)?;
        }
        Ok(())
    }
}

/// Collects the diagnostics of one file.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    file: String,
    list: Vec<Diagnostic>,
}

impl Diagnostics {
    /// An empty collection for `file`.
    pub(crate) fn new(file: &str) -> Self {
        Diagnostics {
            file: file.to_owned(),
            list: Vec::new(),
        }
    }

    /// Records an error at `line:col`.
    pub(crate) fn error(&mut self, at: (u32, u32), message: String, hint: impl Into<String>) {
        self.push(Severity::Error, at, message, hint.into());
    }

    /// Records a warning at `line:col`.
    pub(crate) fn warning(&mut self, at: (u32, u32), message: String, hint: impl Into<String>) {
        self.push(Severity::Warning, at, message, hint.into());
    }

    fn push(&mut self, severity: Severity, at: (u32, u32), message: String, hint: String) {
        let mut chars = message.chars();
        let message = match chars.next() {
            Some(first) => first.to_uppercase().chain(chars).collect(),
            None => message,
        };
        self.list.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line: at.0.max(1),
            col: at.1.max(1),
            message,
            hint,
        });
    }

    /// The file these diagnostics are about.
    pub(crate) fn file(&self) -> &str {
        &self.file
    }

    /// How many diagnostics were recorded.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Takes over all diagnostics of `other`.
    pub(crate) fn extend(&mut self, other: Diagnostics) {
        self.list.extend(other.list);
    }

    /// Whether any error (not warning) was recorded.
    pub(crate) fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// All diagnostics ordered by position (stable for equal positions).
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.list.sort_by_key(|d| (d.line, d.col));
        self.list
    }
}

/// The closest of `candidates` to `word`, if one is close enough to be a
/// likely typo (edit distance, ignoring case, `_` and `-`).
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let w = norm(word);
    // Short words are too easy to confuse: only a case or `_`/`-` difference counts.
    let limit = if w.len() < 3 { 0 } else { (w.len() / 3).max(1) };
    candidates
        .into_iter()
        .map(|c| (edit_distance(&w, &norm(c)), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting insertions, deletions, substitutions and swaps of
/// neighbouring characters (optimal string alignment).
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        d[i * w] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = best;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_location_severity_and_help() {
        let mut d = Diagnostics::new("inv.yaml");
        d.error(
            (3, 7),
            "`port` must be a number.".into(),
            "Write `port: 22`.",
        );
        d.warning((1, 1), "Even number of servers.".into(), "");
        let list = d.into_sorted();
        assert_eq!(
            list[0].to_string(),
            "inv.yaml:1:1: warning: Even number of servers."
        );
        assert_eq!(
            list[1].to_string(),
            "inv.yaml:3:7: error: `port` must be a number.\n  help: Write `port: 22`."
        );
    }

    #[test]
    fn suggestions_catch_typos_and_case_only() {
        let fields = ["identityFile", "identityPassphrase", "user", "port"];
        assert_eq!(did_you_mean("identityfile", fields), Some("identityFile"));
        assert_eq!(did_you_mean("identity_file", fields), Some("identityFile"));
        assert_eq!(did_you_mean("prot", fields), Some("port"));
        assert_eq!(did_you_mean("kubeconfig", fields), None);
    }
}
