//! `--limit`: which tasks a plan (or a run) covers, in the spirit of
//! Ansible's `--limit`.
//!
//! A limit is a comma-separated list of terms. A term is a glob (`*` any run of
//! characters, `?` one character) on a node name, on a site name when it
//! starts with `site:`, or on a task key (`<node>/<layer>`,
//! `site/<site>/<action>`) when it starts with `task:`. A term starting with
//! `!` excludes what it matches. A task is selected when at least one
//! including term matches it (or there are only excluding terms) and no
//! excluding term does. A node term matches the node's tasks and, including,
//! its site's cluster tasks too (the cluster a selected node belongs to).
//! Examples: `edge-0*`, `site:berlin-*,!berlin-2-agent`, `!site:lab`,
//! `task:*/os`, `site:lab,!task:site/*`.

use std::str::FromStr;

use crate::inventory::{Node, Site};

/// A parsed `--limit` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pattern: String,
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    exclude: bool,
    on: Scope,
    glob: String,
}

/// What a term's glob is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Node,
    Site,
    Task,
}

/// A `--limit` pattern that cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A term between commas is empty or only `!` / `site:`.
    #[error(
        "--limit `{pattern}`: term {position} is empty; write node names, `site:NAME` or `task:KEY` separated by commas"
    )]
    EmptyTerm {
        /// The whole pattern.
        pattern: String,
        /// 1-based position of the term.
        position: usize,
    },
}

impl Limit {
    /// Parses a pattern such as `site:berlin-*,!berlin-2-agent`.
    pub fn parse(pattern: &str) -> Result<Limit, LimitError> {
        let mut terms = Vec::new();
        for (i, raw) in pattern.split(',').enumerate() {
            let raw = raw.trim();
            let (exclude, rest) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, raw),
            };
            let (on, glob) = if let Some(g) = rest.strip_prefix("site:") {
                (Scope::Site, g)
            } else if let Some(g) = rest.strip_prefix("task:") {
                (Scope::Task, g)
            } else {
                (Scope::Node, rest)
            };
            if glob.is_empty() {
                return Err(LimitError::EmptyTerm {
                    pattern: pattern.to_string(),
                    position: i + 1,
                });
            }
            terms.push(Term {
                exclude,
                on,
                glob: glob.to_string(),
            });
        }
        Ok(Limit {
            pattern: pattern.to_string(),
            terms,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the task `key` of `site` (on `node`, or site-level when `None`) is selected.
    pub fn matches_task(&self, site: &Site, node: Option<&Node>, key: &str) -> bool {
        let hit = |t: &Term| match (t.on, node) {
            (Scope::Site, _) => glob_match(&t.glob, site.name.as_str()),
            (Scope::Task, _) => glob_match(&t.glob, key),
            (Scope::Node, Some(n)) => glob_match(&t.glob, n.name.as_str()),
            (Scope::Node, None) => false,
        };
        let includes: Vec<&Term> = self.terms.iter().filter(|t| !t.exclude).collect();
        if self.terms.iter().filter(|t| t.exclude).any(hit) {
            return false;
        }
        let direct = includes.is_empty() || includes.iter().any(|t| hit(t));
        match node {
            Some(_) => direct,
            // A site's cluster tasks come with any selected node of the site.
            None => {
                (!includes.is_empty() && includes.iter().any(|t| hit(t)))
                    || site.nodes.iter().any(|n| self.node_selected(site, n))
            }
        }
    }

    /// Whether `node` is selected by the node and site terms alone.
    fn node_selected(&self, site: &Site, node: &Node) -> bool {
        let hit = |t: &&Term| match t.on {
            Scope::Site => glob_match(&t.glob, site.name.as_str()),
            Scope::Node => glob_match(&t.glob, node.name.as_str()),
            Scope::Task => false,
        };
        let includes: Vec<&Term> = self.terms.iter().filter(|t| !t.exclude).collect();
        let by_name: Vec<&&Term> = includes.iter().filter(|t| t.on != Scope::Task).collect();
        let included = if by_name.is_empty() {
            includes.is_empty()
        } else {
            by_name.iter().any(|t| hit(t))
        };
        included && !self.terms.iter().filter(|t| t.exclude).any(|t| hit(&t))
    }
}

impl FromStr for Limit {
    type Err = LimitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Limit::parse(s)
    }
}

/// Matches `text` against a glob with `*` (any run) and `?` (one character).
fn glob_match(glob: &str, text: &str) -> bool {
    let g: Vec<char> = glob.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut gi, mut ti) = (0usize, 0usize);
    // Where the last `*` was and which text position it is currently covering up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ti));
                gi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == t.get(ti) => {
                gi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sg, st)) => {
                    gi = sg + 1;
                    ti = st + 1;
                    star = Some((sg, st + 1));
                }
                None => return false,
            },
        }
    }
    g.get(gi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        assert!(glob_match("edge-*", "edge-1"));
        assert!(glob_match("edge-*", "edge-"));
        assert!(glob_match("*-agent", "berlin-2-agent"));
        assert!(glob_match("b*n-?-a*", "berlin-2-agent"));
        assert!(glob_match("*", ""));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("edge-?", "edge-10"));
        assert!(!glob_match("*-server", "berlin-2-agent"));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn empty_terms_are_rejected_with_their_position() {
        for (pattern, position) in [
            ("a,,b", 2),
            ("!", 1),
            ("a,site:", 2),
            ("", 1),
            ("a, !site:", 2),
            ("task:", 1),
        ] {
            assert_eq!(
                Limit::parse(pattern),
                Err(LimitError::EmptyTerm {
                    pattern: pattern.to_string(),
                    position
                }),
                "{pattern}"
            );
        }
    }
}
