//! A YAML document as a generic tree whose every node keeps its line and
//! column, built from the event stream of granit-parser (the parser of
//! serde-saphyr, re-exported by it). The typed model is deserialized from
//! this tree too, so its [`Sp`] positions are these.
//!
//! The structural and semantic checks walk this tree instead of the typed
//! model because it exists even when the document does not fit the model:
//! that is what lets one run report every problem. Plain scalars are resolved
//! with the YAML 1.2 core schema; aliases are expanded (within a budget, so an
//! alias bomb is an error, not an out-of-memory); `<<` merge keys are applied;
//! duplicate keys are errors.
//!
//! [`Sp`]: super::model::Sp

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle};

use super::diagnostic::Diagnostics;

/// Deepest nesting accepted; the model needs about ten levels.
const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to (aliases included).
const MAX_NODES: usize = 2_000_000;

/// One YAML node and where it starts (1-based line and column).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    /// The content.
    pub value: Value,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

/// The content of a YAML node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A scalar with its text and its core-schema type.
    Scalar { text: String, kind: ScalarKind },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<Entry>),
}

/// The core-schema type of a scalar (quoted scalars are always strings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScalarKind {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A floating-point number.
    Float,
    /// Anything else.
    Str,
}

/// One `key: value` pair of a mapping.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    /// The key's text.
    pub key: String,
    /// The key node (for its position).
    pub key_at: (u32, u32),
    /// The value.
    pub value: Node,
}

impl Node {
    /// A null node with no position, standing for an absent optional part.
    pub(crate) fn null() -> Node {
        Node {
            value: Value::Scalar {
                text: String::new(),
                kind: ScalarKind::Null,
            },
            line: 0,
            col: 0,
        }
    }

    /// The position as `(line, col)`.
    pub(crate) fn at(&self) -> (u32, u32) {
        (self.line, self.col)
    }

    /// The value of `key` if this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    /// The entry of `key` if this is a mapping that has it.
    pub(crate) fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// The text of a non-null scalar (what serde reads into a string).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { kind, .. } if *kind == ScalarKind::Null => None,
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value of an integer scalar.
    pub(crate) fn as_int(&self) -> Option<i128> {
        match self.value {
            Value::Scalar {
                kind: ScalarKind::Int(i),
                ..
            } => Some(i),
            _ => None,
        }
    }

    /// The value of a boolean scalar.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Scalar {
                kind: ScalarKind::Bool(b),
                ..
            } => Some(b),
            _ => None,
        }
    }

    /// The items of a sequence (empty for anything else).
    pub(crate) fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// The entries of a mapping (empty for anything else).
    pub(crate) fn entries(&self) -> &[Entry] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Whether this is a null scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(
            self.value,
            Value::Scalar {
                kind: ScalarKind::Null,
                ..
            }
        )
    }

    /// A short name of this node's type for messages ("a mapping", "a string"...).
    pub(crate) fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
            Value::Scalar { kind, .. } => match kind {
                ScalarKind::Null => "nothing (null)",
                ScalarKind::Bool(_) => "a boolean",
                ScalarKind::Int(_) => "an integer",
                ScalarKind::Float => "a number with a fraction",
                ScalarKind::Str => "a string",
            },
        }
    }

    /// Number of nodes in this subtree.
    fn size(&self) -> usize {
        1 + match &self.value {
            Value::Scalar { .. } => 0,
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|e| 1 + e.value.size()).sum(),
        }
    }
}

/// Parses one YAML document into a tree. On a syntax error returns `None`
/// after recording it; duplicate keys and other tree-level problems are
/// recorded while the tree is still returned.
pub(crate) fn parse(text: &str, diags: &mut Diagnostics) -> Option<Node> {
    let mut builder = Builder {
        anchors: HashMap::new(),
        stack: Vec::new(),
        root: None,
        documents: 0,
        nodes: 0,
    };
    for event in Parser::new_from_str(text) {
        let step = match event {
            Ok((event, span)) => builder.event(event, span.start, diags),
            Err(e) => {
                let m = e.marker();
                Err(Stop {
                    at: pos(m),
                    message: format!("The file is not valid YAML: {}.", e.info()),
                    hint: "Fix the YAML syntax at this position (indentation, a missing `:` \
                           or an unclosed quote or bracket are the usual causes)."
                        .into(),
                })
            }
        };
        if let Err(stop) = step {
            diags.error(stop.at, stop.message, stop.hint);
            return None;
        }
    }
    if builder.root.is_none() {
        diags.error(
            (1, 1),
            "The file holds no YAML document.".into(),
            "Start from an example in inventory/ (e.g. inventory/lab.yaml).",
        );
    }
    builder.root
}

/// A problem that ends tree building.
struct Stop {
    at: (u32, u32),
    message: String,
    hint: String,
}

/// A collection being built.
enum Frame {
    Seq {
        node: Node,
        anchor: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<Node>,
        /// Entries that came from `<<` merges; explicit keys win over them.
        merged: Vec<Entry>,
    },
}

struct Builder {
    /// Anchored nodes with their subtree sizes.
    anchors: HashMap<usize, (Node, usize)>,
    stack: Vec<Frame>,
    root: Option<Node>,
    documents: usize,
    nodes: usize,
}

impl Builder {
    fn event(
        &mut self,
        event: Event<'_>,
        start: Marker,
        diags: &mut Diagnostics,
    ) -> Result<(), Stop> {
        let at = pos(&start);
        match event {
            Event::DocumentStart(..) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(Stop {
                        at,
                        message: "The file holds more than one YAML document.".into(),
                        hint: "Keep one inventory per file: remove the `---` and what follows, \
                               or split the file."
                            .into(),
                    });
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|t| t.handle() == "tag:yaml.org,2002:" && t.suffix() == "str");
                let kind = if style == ScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    ScalarKind::Str
                };
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        kind,
                    },
                    line: at.0,
                    col: at.1,
                };
                self.count(1, at)?;
                if anchor != 0 {
                    self.anchors.insert(anchor, (node.clone(), 1));
                }
                self.add(node, diags)?;
            }
            Event::Alias(id) => {
                let Some(size) = self.anchors.get(&id).map(|(_, size)| *size) else {
                    return Err(Stop {
                        at,
                        message: "This alias refers to no anchor defined before it.".into(),
                        hint: "Define the anchor (`&name`) before using `*name`.".into(),
                    });
                };
                self.count(size, at)?;
                if let Some((target, _)) = self.anchors.get(&id) {
                    let mut node = target.clone();
                    node.line = at.0;
                    node.col = at.1;
                    self.add(node, diags)?;
                }
            }
            Event::SequenceStart(_, anchor, _) => {
                self.count(1, at)?;
                self.push(Frame::Seq {
                    node: Node {
                        value: Value::Seq(Vec::new()),
                        line: at.0,
                        col: at.1,
                    },
                    anchor,
                })?;
            }
            Event::MappingStart(_, anchor, _) => {
                self.count(1, at)?;
                self.push(Frame::Map {
                    node: Node {
                        value: Value::Map(Vec::new()),
                        line: at.0,
                        col: at.1,
                    },
                    anchor,
                    pending_key: None,
                    merged: Vec::new(),
                })?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { node, anchor }) => (node, anchor),
                    Some(Frame::Map {
                        mut node,
                        anchor,
                        merged,
                        ..
                    }) => {
                        if let Value::Map(entries) = &mut node.value {
                            for m in merged {
                                if !entries.iter().any(|e| e.key == m.key) {
                                    entries.push(m);
                                }
                            }
                        }
                        (node, anchor)
                    }
                    None => return Ok(()),
                };
                if anchor != 0 {
                    let size = node.size();
                    self.anchors.insert(anchor, (node.clone(), size));
                }
                self.add(node, diags)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame) -> Result<(), Stop> {
        if self.stack.len() >= MAX_DEPTH {
            let (line, col) = match &frame {
                Frame::Seq { node, .. } | Frame::Map { node, .. } => (node.line, node.col),
            };
            return Err(Stop {
                at: (line, col),
                message: format!("The document nests deeper than {MAX_DEPTH} levels."),
                hint: "An inventory needs about ten levels; check for runaway brackets.".into(),
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Counts `n` more nodes against the budget.
    fn count(&mut self, n: usize, at: (u32, u32)) -> Result<(), Stop> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(Stop {
                at,
                message: format!(
                    "The document expands to more than {MAX_NODES} YAML nodes \
                     (aliases included)."
                ),
                hint: "Check for aliases that nest into each other (an alias bomb).".into(),
            });
        }
        Ok(())
    }

    /// Adds a finished node to the collection being built (or makes it the root).
    fn add(&mut self, node: Node, diags: &mut Diagnostics) -> Result<(), Stop> {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { node: seq, .. }) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: map,
                pending_key,
                merged,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(node),
                Some(key) => {
                    let Value::Map(entries) = &mut map.value else {
                        return Ok(());
                    };
                    let key_text = match &key.value {
                        Value::Scalar { text, .. } => text.clone(),
                        _ => {
                            diags.error(
                                key.at(),
                                format!(
                                    "A mapping key must be a plain name, not {}.",
                                    key.kind_name()
                                ),
                                "Write keys as simple words, e.g. `name: value`.",
                            );
                            return Ok(());
                        }
                    };
                    if key_text == "<<"
                        && matches!(
                            key.value,
                            Value::Scalar {
                                kind: ScalarKind::Str,
                                ..
                            }
                        )
                    {
                        merge_into(merged, node, diags);
                        return Ok(());
                    }
                    if let Some(first) = entries.iter().find(|e| e.key == key_text) {
                        diags.error(
                            key.at(),
                            format!(
                                "The key `{key_text}` appears twice in this mapping \
                                 (first at line {}).",
                                first.key_at.0
                            ),
                            "Remove one of the two; YAML keeps only one value per key.",
                        );
                        return Ok(());
                    }
                    entries.push(Entry {
                        key: key_text,
                        key_at: key.at(),
                        value: node,
                    });
                }
            },
        }
        Ok(())
    }
}

/// Applies a `<<` merge value (a mapping or a list of mappings): earlier
/// mappings win over later ones, explicit keys win over all (at the end).
fn merge_into(merged: &mut Vec<Entry>, value: Node, diags: &mut Diagnostics) {
    let at = value.at();
    let sources = match value.value {
        Value::Map(entries) => vec![entries],
        Value::Seq(items) => {
            let mut maps = Vec::new();
            for item in items {
                match item.value {
                    Value::Map(entries) => maps.push(entries),
                    _ => {
                        diags.error(
                            item.at(),
                            "A `<<` merge list may only hold mappings.".into(),
                            "Merge aliases of mappings, e.g. `<<: [*a, *b]`.",
                        );
                    }
                }
            }
            maps
        }
        _ => {
            diags.error(
                at,
                "A `<<` merge key needs a mapping or a list of mappings.".into(),
                "Write `<<: *anchor` where the anchor names a mapping.",
            );
            return;
        }
    };
    for entries in sources {
        for e in entries {
            if !merged.iter().any(|m| m.key == e.key) {
                merged.push(e);
            }
        }
    }
}

/// Core-schema type of a plain scalar (one tagged `!!str` is a string).
fn resolve_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" => return ScalarKind::Bool(true),
        "false" | "False" | "FALSE" => return ScalarKind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return ScalarKind::Float,
        _ => {}
    }
    let (neg, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let parsed = if let Some(hex) = text.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()
    } else if let Some(oct) = text.strip_prefix("0o") {
        i128::from_str_radix(oct, 8).ok()
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits
            .parse::<i128>()
            .ok()
            .map(|v| if neg { -v } else { v })
    } else {
        None
    };
    if let Some(v) = parsed {
        return ScalarKind::Int(v);
    }
    let looks_float = !digits.is_empty()
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && digits
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && text.parse::<f64>().is_ok();
    if looks_float {
        ScalarKind::Float
    } else {
        ScalarKind::Str
    }
}

/// A parser marker as 1-based `(line, col)`.
fn pos(m: &Marker) -> (u32, u32) {
    let line = u32::try_from(m.line()).unwrap_or(u32::MAX).max(1);
    let col = u32::try_from(m.col().saturating_add(1)).unwrap_or(u32::MAX);
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(text: &str) -> (Option<Node>, Vec<String>) {
        let mut d = Diagnostics::new("t.yaml");
        let node = parse(text, &mut d);
        (
            node,
            d.into_sorted().iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn scalars_resolve_with_core_schema_and_keep_positions() {
        let (node, errs) = tree("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: text\ng: 0x10\n");
        assert!(errs.is_empty(), "{errs:?}");
        let node = node.expect("tree");
        assert_eq!(node.get("a").and_then(Node::as_int), Some(1));
        assert_eq!(node.get("b").and_then(Node::as_int), None);
        assert_eq!(node.get("b").and_then(Node::as_str), Some("1"));
        assert_eq!(node.get("c").and_then(Node::as_bool), Some(true));
        assert!(node.get("d").is_some_and(Node::is_null));
        assert_eq!(
            node.get("e").map(Node::kind_name),
            Some("a number with a fraction")
        );
        assert_eq!(node.get("f").map(Node::kind_name), Some("a string"));
        assert_eq!(node.get("g").and_then(Node::as_int), Some(16));
        assert_eq!(node.get("f").map(Node::at), Some((6, 4)));
        assert_eq!(node.entry("f").map(|e| e.key_at), Some((6, 1)));
    }

    #[test]
    fn str_tag_keeps_a_number_a_string() {
        let (node, errs) = tree("a: !!str 22\nb: 22\n");
        assert!(errs.is_empty(), "{errs:?}");
        let node = node.expect("tree");
        assert_eq!(node.get("a").and_then(Node::as_int), None);
        assert_eq!(node.get("a").and_then(Node::as_str), Some("22"));
        assert_eq!(node.get("b").and_then(Node::as_int), Some(22));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let (node, errs) = tree("a: 1\nb: [1, 2\nc: 3\n");
        assert!(node.is_none());
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("t.yaml:3:"), "{errs:?}");
        assert!(errs[0].contains("not valid YAML"), "{errs:?}");
    }

    #[test]
    fn duplicate_keys_are_reported_at_the_second() {
        let (_, errs) = tree("name: a\nrole: server\nname: b\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("t.yaml:3:1: error: The key `name` appears twice"),
            "{errs:?}"
        );
        assert!(errs[0].contains("first at line 1"), "{errs:?}");
    }

    #[test]
    fn aliases_and_merge_keys_expand() {
        let (node, errs) = tree("base: &b {user: ops, port: 22}\nnode:\n  <<: *b\n  port: 2222\n");
        assert!(errs.is_empty(), "{errs:?}");
        let node = node.expect("tree");
        let n = node.get("node").expect("node");
        assert_eq!(n.get("user").and_then(Node::as_str), Some("ops"));
        assert_eq!(n.get("port").and_then(Node::as_int), Some(2222));
    }

    #[test]
    fn alias_bomb_is_an_error_not_an_allocation() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let (node, errs) = tree(&text);
        assert!(node.is_none());
        assert!(
            errs.iter().any(|e| e.contains("expands to more than")),
            "{errs:?}"
        );
    }

    #[test]
    fn empty_and_multi_document_files_are_errors() {
        let (_, errs) = tree("");
        assert!(errs[0].contains("no YAML document"), "{errs:?}");
        let (_, errs) = tree("a: 1\n---\nb: 2\n");
        assert!(errs[0].starts_with("t.yaml:2:1:"), "{errs:?}");
        assert!(errs[0].contains("more than one YAML document"), "{errs:?}");
    }
}
