//! serde deserialization of the typed model straight from the spanned YAML
//! tree, so a file is parsed once: the checks and the model read the same
//! nodes, and [`Sp`] values get their line and column from them.
//!
//! [`Sp`]'s `Deserialize` asks for a newtype struct named [`SP_NEWTYPE`];
//! this deserializer answers with a `(line, col, value)` sequence, any other
//! deserializer with the bare value (position 0:0).
//!
//! [`Sp`]: super::model::Sp

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, SeqAccess,
    VariantAccess, Visitor,
};

use super::yaml::{Entry, Node, ScalarKind, Value};

/// The newtype-struct name through which [`super::model::Sp`] asks for a position.
pub(crate) const SP_NEWTYPE: &str = "$edgeforge::Sp";

/// A deserialization error and the innermost node it happened at.
#[derive(Debug)]
pub(crate) struct DeError {
    /// serde's message.
    pub message: String,
    /// `(line, col)` of the node, when known.
    pub at: Option<(u32, u32)>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            at: None,
        }
    }
}

/// A deserializer over one tree node.
pub(crate) struct NodeDe<'a>(pub &'a Node);

impl NodeDe<'_> {
    /// Attaches this node's position to an error that has none yet.
    fn locate(&self, e: DeError) -> DeError {
        DeError {
            at: e.at.or(Some(self.0.at())),
            ..e
        }
    }
}

macro_rules! via_any {
    ($($name:ident)*) => {
        $(fn $name<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            self.deserialize_any(visitor)
        })*
    };
}

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.0.value {
            Value::Scalar { text, kind } => match *kind {
                ScalarKind::Null => visitor.visit_unit(),
                ScalarKind::Bool(b) => visitor.visit_bool(b),
                ScalarKind::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                    (Ok(v), _) => visitor.visit_i64(v),
                    (_, Ok(v)) => visitor.visit_u64(v),
                    _ => visitor.visit_i128(i),
                },
                ScalarKind::Float => visitor.visit_f64(parse_float(text)),
                ScalarKind::Str => visitor.visit_str(text),
            },
            Value::Seq(items) => visitor.visit_seq(Items(items.iter())),
            Value::Map(entries) => visitor.visit_map(Entries {
                iter: entries.iter(),
                value: None,
            }),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.as_str() {
            // Any non-null scalar reads as its text, as with serde-saphyr.
            Some(text) => visitor.visit_str(text).map_err(|e| self.locate(e)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.0.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(NodeDe(self.0))
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if name == SP_NEWTYPE {
            let r = visitor.visit_seq(Spanned {
                node: self.0,
                next: 0,
            });
            return r.map_err(|e| self.locate(e));
        }
        visitor.visit_newtype_struct(NodeDe(self.0))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.0.value {
            Value::Map(entries) if entries.len() == 1 => match entries.first() {
                Some(entry) => visitor.visit_enum(Variant(entry)),
                None => Err(de::Error::custom("expected one key naming the variant")),
            },
            Value::Scalar { text, .. } => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => Err(de::Error::custom(format!(
                "expected a variant name or a mapping with one key, found {}",
                self.0.kind_name()
            ))),
        };
        r.map_err(|e| self.locate(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    via_any! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_seq deserialize_map
    }
}

/// The items of a sequence.
struct Items<'a>(std::slice::Iter<'a, Node>);

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0
            .next()
            .map(|n| seed.deserialize(NodeDe(n)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The entries of a mapping.
struct Entries<'a> {
    iter: std::slice::Iter<'a, Entry>,
    value: Option<&'a Node>,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.iter.next() else {
            return Ok(None);
        };
        self.value = Some(&entry.value);
        seed.deserialize(entry.key.as_str().into_deserializer())
            .map(Some)
            .map_err(|e: DeError| DeError {
                at: e.at.or(Some(entry.key_at)),
                ..e
            })
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(node) => seed.deserialize(NodeDe(node)),
            None => Err(de::Error::custom("a value was asked for before its key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// An externally tagged enum value: `{variant: content}`.
struct Variant<'a>(&'a Entry);

impl<'de, 'a> EnumAccess<'de> for Variant<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let tag = seed.deserialize(self.0.key.as_str().into_deserializer())?;
        Ok((tag, NodeDe(&self.0.value)))
    }
}

impl<'de> VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        if self.0.is_null() {
            Ok(())
        } else {
            Err(self.locate(de::Error::custom("this variant takes no value")))
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }
}

/// The `(line, col, value)` sequence that [`super::model::Sp`] reads.
struct Spanned<'a> {
    node: &'a Node,
    next: u8,
}

impl<'de> SeqAccess<'de> for Spanned<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.next += 1;
        match self.next {
            1 => seed
                .deserialize(self.node.line.into_deserializer())
                .map(Some),
            2 => seed
                .deserialize(self.node.col.into_deserializer())
                .map(Some),
            3 => seed.deserialize(NodeDe(self.node)).map(Some),
            _ => Ok(None),
        }
    }
}

/// The value of a core-schema float scalar.
fn parse_float(text: &str) -> f64 {
    match text.trim_start_matches('+') {
        ".inf" | ".Inf" | ".INF" => f64::INFINITY,
        "-.inf" | "-.Inf" | "-.INF" => f64::NEG_INFINITY,
        ".nan" | ".NaN" | ".NAN" => f64::NAN,
        t => t.parse().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::super::diagnostic::Diagnostics;
    use super::super::model::Inventory;
    use super::*;

    /// The model read from the tree equals the one serde-saphyr reads from
    /// the text: this deserializer adds positions and changes nothing else.
    #[test]
    fn same_model_as_serde_saphyr() {
        let extra = "\
apiVersion: edgeforge/v1
defaults:
  k3s:
    token: {file: /run/token}
    extraConfig: {a: 1, b: -2.5, c: [x, true, ~], d: {e: \"f\"}, g: 18446744073709551615}
  ssh: {port: 0x16, sudo: {password: {env: P}}, hostKey: {policy: accept-new}}
federation: {type: kubefed, kubeconfig: k}
hypervisors: [{name: h, uri: \"qemu:///system\", network: {mode: nat, cidr: 10.0.0.0/24}}]
sites:
  - name: s
    nodes:
      - {name: n, role: server, address: a, machine: {type: libvirt, hypervisor: h, vm: {cpus: 3}}}
";
        for text in [
            include_str!("../../../inventory/lab.yaml"),
            include_str!("../../../inventory/appliances.yaml"),
            include_str!("../../../inventory/baremetal.yaml"),
            extra,
        ] {
            let mut diags = Diagnostics::new("t.yaml");
            let tree = super::super::yaml::parse(text, &mut diags).expect("tree");
            let ours = Inventory::deserialize(NodeDe(&tree)).expect("from tree");
            let theirs: Inventory = serde_saphyr::from_str(text).expect("from text");
            // Positions agree too (serde-saphyr reaches `Sp` through its `Spanned`).
            let pos = |inv: &Inventory| -> Vec<(u32, u32)> {
                inv.sites
                    .iter()
                    .flat_map(|s| s.nodes.iter())
                    .flat_map(|n| [(n.name.line, n.name.col), (n.address.line, n.address.col)])
                    .collect()
            };
            assert_eq!(pos(&ours), pos(&theirs));
            assert!(pos(&ours).iter().all(|(l, c)| *l >= 1 && *c >= 1));
            let ours = serde_json::to_value(&ours).expect("json");
            let theirs = serde_json::to_value(&theirs).expect("json");
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn errors_carry_the_innermost_position() {
        let text = "apiVersion: edgeforge/v1\nsites:\n  - name: s\n    nodes:\n      - {name: n, role: server, address: a, ssh: {port: 70000}}\n";
        let mut diags = Diagnostics::new("t.yaml");
        let tree = super::super::yaml::parse(text, &mut diags).expect("tree");
        let err = Inventory::deserialize(NodeDe(&tree)).expect_err("port out of range");
        assert_eq!(err.at, Some((5, 57)), "{err}");
    }
}
