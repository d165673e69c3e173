//! Property tests over the inventory loader: random bytes and mutated
//! examples (lines deleted or duplicated, characters swapped, indentation
//! changed) never panic, and every diagnostic points at a real line.

use edgeforge::inventory::{self, LoadError};
use proptest::prelude::*;

const EXAMPLES: [&str; 3] = [
    include_str!("../../inventory/lab.yaml"),
    include_str!("../../inventory/appliances.yaml"),
    include_str!("../../inventory/baremetal.yaml"),
];

/// Loads `text` and checks the positions of whatever comes back.
fn check_positions(text: &str) -> Result<(), TestCaseError> {
    // YAML breaks lines at `\r\n`, `\n` and a lone `\r`; positions count those.
    let breaks = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines = u32::try_from(breaks.lines().count()).unwrap_or(u32::MAX);
    let diags = match inventory::load_str("fuzz.yaml", text) {
        Ok(loaded) => loaded.warnings,
        Err(LoadError::Invalid(d)) => {
            prop_assert!(!d.is_empty(), "invalid without a diagnostic");
            d
        }
        Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    };
    for d in diags {
        prop_assert!(d.line >= 1 && d.col >= 1, "{d}");
        prop_assert!(
            d.line <= lines.saturating_add(1),
            "{d} (file has {lines} lines)"
        );
        prop_assert!(!d.message.is_empty(), "{d}");
        // The schema walk must catch whatever serde rejects, with its own
        // message; serde's fallback firing means the walk missed a rule.
        prop_assert!(
            !d.message.starts_with("The inventory does not fit"),
            "{d}\n---\n{text}"
        );
    }
    Ok(())
}

/// One edit of an example's text.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapChars(usize),
    Indent(usize, i8),
    Insert(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::DeleteLine),
        any::<usize>().prop_map(Mutation::DuplicateLine),
        any::<usize>().prop_map(Mutation::SwapChars),
        (any::<usize>(), -3i8..=3).prop_map(|(l, d)| Mutation::Indent(l, d)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                ':', '-', ' ', '[', '{', '"', '\'', '&', '*', '#', '\n', '|', '!', 'x', '1'
            ])
        )
            .prop_map(|(p, c)| Mutation::Insert(p, c)),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len().max(1);
    match *m {
        Mutation::DeleteLine(i) => {
            if !lines.is_empty() {
                lines.remove(i % n);
            }
        }
        Mutation::DuplicateLine(i) => {
            if let Some(l) = lines.get(i % n).cloned() {
                lines.insert(i % n, l);
            }
        }
        Mutation::Indent(i, d) => {
            if let Some(l) = lines.get_mut(i % n) {
                if d >= 0 {
                    *l = format!("{}{l}", " ".repeat(d.unsigned_abs().into()));
                } else {
                    let strip = l.len() - l.trim_start().len();
                    let k = strip.min(d.unsigned_abs().into());
                    *l = l[k..].to_owned();
                }
            }
        }
        Mutation::SwapChars(p) => {
            let mut chars: Vec<char> = lines.join("\n").chars().collect();
            if chars.len() >= 2 {
                let p = p % (chars.len() - 1);
                chars.swap(p, p + 1);
            }
            return chars.into_iter().collect();
        }
        Mutation::Insert(p, c) => {
            let mut chars: Vec<char> = lines.join("\n").chars().collect();
            let p = p % (chars.len() + 1);
            chars.insert(p, c);
            return chars.into_iter().collect();
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        check_positions(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn yaml_like_noise_never_panics(text in "[a-z0-9:\\-\\[\\]{}#&*!|>'\" \n]{0,400}") {
        check_positions(&text)?;
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..3,
        edits in prop::collection::vec(mutation(), 1..6),
    ) {
        let mut text = EXAMPLES[which].to_owned();
        for m in &edits {
            text = apply(&text, m);
        }
        check_positions(&text)?;
    }
}
