//! Reading only the parts of a JSON document a parser needs, straight from
//! the bytes, instead of building the whole document as a
//! `serde_json::Value` tree first (a `String` and a map or vector for
//! every text, object and list, most of them never looked at).
//!
//! Everything else is still read in full by the same `serde_json` parser
//! ([`Discard`]): numbers are converted, strings unescaped and checked, so a
//! document fails with exactly the error, line and column that reading it
//! into a `Value` gives, wherever the fault is.

use std::borrow::Cow;
use std::fmt;

use rustc_hash::FxHashMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Number;

/// Reads any JSON value and keeps nothing. Unlike `serde::de::IgnoredAny`
/// (which `serde_json` skips without converting numbers or checking that
/// strings are UTF-8) it reads every token as a `serde_json::Value` would,
/// so it fails where that fails.
pub(super) struct Discard;

impl<'de> Deserialize<'de> for Discard {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DiscardVisitor)
    }
}

struct DiscardVisitor;

impl<'de> Visitor<'de> for DiscardVisitor {
    type Value = Discard;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Discard, E> {
        Ok(Discard)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Discard, A::Error> {
        while seq.next_element::<Discard>()?.is_some() {}
        Ok(Discard)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Discard, A::Error> {
        while map.next_key::<Discard>()?.is_some() {
            map.next_value::<Discard>()?;
        }
        Ok(Discard)
    }
}

/// A JSON string, borrowed from the payload unless it had escapes.
pub(super) struct Text<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E: de::Error>(self, text: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A JSON value as far as some pointer reaches into it. Containers hold
/// only the members a pointer goes on into; a list keeps every position,
/// with [`Node::Unread`] where none does.
#[derive(Debug)]
pub(super) enum Node<'de> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'de, str>),
    Array(Vec<Node<'de>>),
    /// In document order; a repeated name keeps its first position and its
    /// last value, as `serde_json`'s ordered map does.
    Object(Vec<(Cow<'de, str>, Node<'de>)>),
    /// A list element no pointer goes to.
    Unread,
}

impl<'de> Node<'de> {
    /// A short description of the value's kind for messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Number(_) => "a number",
            Node::String(_) => "text",
            Node::Array(_) => "a list",
            Node::Object(_) => "an object",
            Node::Unread => "a value",
        }
    }

    /// The value at `path` (segments already unescaped), by the rules of
    /// `serde_json::Value::pointer`: list indexes are plain decimal without
    /// a sign or leading zeros.
    pub(super) fn at(&self, path: &[String]) -> Option<&Node<'de>> {
        path.iter().try_fold(self, |node, segment| match node {
            Node::Object(members) => members
                .iter()
                .find(|(name, _)| name == segment)
                .map(|(_, value)| value),
            Node::Array(items) => index(segment).and_then(|i| items.get(i)),
            _ => None,
        })
    }
}

/// A JSON pointer's segments, unescaped (`~1` is `/`, `~0` is `~`). The
/// empty pointer is the whole document; `None` if it is not a pointer.
pub(super) fn segments(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// A list index as `serde_json` reads one in a pointer.
fn index(segment: &str) -> Option<usize> {
    if segment.starts_with('+') || (segment.starts_with('0') && segment.len() != 1) {
        return None;
    }
    segment.parse().ok()
}

/// One segment of a configured path: a member name (or list index), or
/// the wildcard over every member.
pub(super) enum Step<'a> {
    Name(&'a str),
    Any,
}

/// Which parts of the document the configured paths reach. A named member
/// also holds everything the wildcard beside it reaches, so that reading a
/// member looks at one selection only.
#[derive(Debug, Default, Clone)]
pub(super) struct Selection {
    members: Vec<(String, Selection)>,
    wildcard: Option<Box<Selection>>,
}

impl Selection {
    pub(super) fn insert(&mut self, path: &[Step<'_>]) {
        match path.split_first() {
            None => {}
            Some((Step::Any, rest)) => {
                self.wildcard
                    .get_or_insert_with(Default::default)
                    .insert(rest);
                for (_, member) in &mut self.members {
                    member.insert(rest);
                }
            }
            Some((Step::Name(name), rest)) => {
                let at = match self.members.iter().position(|(n, _)| n == name) {
                    Some(at) => at,
                    None => {
                        let inherited = self.wildcard.as_deref().cloned().unwrap_or_default();
                        self.members.push(((*name).to_owned(), inherited));
                        self.members.len() - 1
                    }
                };
                self.members[at].1.insert(rest);
            }
        }
    }

    fn member(&self, name: &str) -> Option<&Selection> {
        self.members
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
            .or(self.wildcard.as_deref())
    }

    /// Reads one value, keeping what this selection reaches.
    pub(super) fn seed(&self) -> impl for<'de> DeserializeSeed<'de, Value = Node<'de>> + '_ {
        Pick(self)
    }

    fn goes_further(&self) -> bool {
        !self.members.is_empty() || self.wildcard.is_some()
    }

    /// Reads a document, keeping what this selection reaches.
    pub(super) fn read<'de>(&self, bytes: &'de [u8]) -> Result<Node<'de>, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let node = Pick(self).deserialize(&mut deserializer)?;
        deserializer.end()?;
        Ok(node)
    }
}

/// Reads an object, keeping what a selection reaches in its members; any
/// other value fails where and as reading it into a `serde_json::Map`
/// would.
pub(super) struct ObjectOf<'s>(pub &'s Selection);

impl<'de> DeserializeSeed<'de> for ObjectOf<'_> {
    type Value = Vec<(Cow<'de, str>, Node<'de>)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectOf<'_> {
    type Value = Vec<(Cow<'de, str>, Node<'de>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match Pick(self.0).visit_map(map)? {
            Node::Object(members) => Ok(members),
            _ => unreachable!("an object reads as an object"),
        }
    }
}

/// Reads one value a selection reaches.
struct Pick<'s>(&'s Selection);

impl<'de> DeserializeSeed<'de> for Pick<'_> {
    type Value = Node<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pick<'_> {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node<'de>, E> {
        // As serde_json's own Value does (JSON numbers are always finite).
        Ok(Number::from_f64(v).map_or(Node::Null, Node::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::String(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::new();
        if !self.0.goes_further() {
            while seq.next_element::<Discard>()?.is_some() {}
            return Ok(Node::Array(items));
        }
        let mut position = itoa::Buffer::new();
        loop {
            let item = match self.0.member(position.format(items.len())) {
                Some(selection) => seq.next_element_seed(Pick(selection))?,
                None => seq.next_element::<Discard>()?.map(|_| Node::Unread),
            };
            match item {
                Some(item) => items.push(item),
                None => return Ok(Node::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Members::default();
        if !self.0.goes_further() {
            while map.next_key::<Discard>()?.is_some() {
                map.next_value::<Discard>()?;
            }
            return Ok(Node::Object(members.list));
        }
        while let Some(Text(name)) = map.next_key()? {
            match self.0.member(&name) {
                Some(selection) => {
                    let value = map.next_value_seed(Pick(selection))?;
                    members.insert(name, value);
                }
                None => {
                    map.next_value::<Discard>()?;
                }
            }
        }
        Ok(Node::Object(members.list))
    }
}

/// An object's members in document order, a repeated name replacing the
/// value in its first position. Small objects are searched; an index is
/// built once an object (one a wildcard goes over) grows past that.
#[derive(Default)]
struct Members<'de> {
    list: Vec<(Cow<'de, str>, Node<'de>)>,
    index: Option<FxHashMap<Cow<'de, str>, usize>>,
}

impl<'de> Members<'de> {
    const SEARCHED: usize = 16;

    fn insert(&mut self, name: Cow<'de, str>, value: Node<'de>) {
        let found = match &mut self.index {
            Some(index) => index.get(&name).copied(),
            None => self.list.iter().position(|(n, _)| *n == name),
        };
        if let Some(at) = found {
            self.list[at].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(name.clone(), self.list.len());
        } else if self.list.len() == Self::SEARCHED {
            let mut index: FxHashMap<Cow<'de, str>, usize> = self
                .list
                .iter()
                .enumerate()
                .map(|(at, (n, _))| (n.clone(), at))
                .collect();
            index.insert(name.clone(), self.list.len());
            self.index = Some(index);
        }
        self.list.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// The same value as `serde_json` reads it, as far as `node` goes.
    fn same(node: &Node<'_>, value: &Value) -> bool {
        match (node, value) {
            (Node::Null, Value::Null) => true,
            (Node::Bool(a), Value::Bool(b)) => a == b,
            (Node::Number(a), Value::Number(b)) => a == b,
            (Node::String(a), Value::String(b)) => a == b,
            (Node::Array(a), Value::Array(b)) => a.is_empty() || a.len() == b.len(),
            (Node::Object(a), Value::Object(b)) => a
                .iter()
                .zip(b.iter().filter(|(k, _)| a.iter().any(|(n, _)| n == *k)))
                .all(|((n, _), (k, _))| n == k),
            _ => false,
        }
    }

    fn check(text: &str, pointers: &[String]) -> Result<(), TestCaseError> {
        let parts: Vec<(Vec<String>, Option<Vec<String>>)> = pointers
            .iter()
            .map(|p| match p.split_once("/*") {
                Some((before, after)) => {
                    (segments(before).unwrap(), Some(segments(after).unwrap()))
                }
                None => (segments(p).unwrap(), None),
            })
            .collect();
        let mut selection = Selection::default();
        for (before, after) in &parts {
            let mut steps: Vec<Step<'_>> = before.iter().map(|s| Step::Name(s)).collect();
            if let Some(after) = after {
                steps.push(Step::Any);
                steps.extend(after.iter().map(|s| Step::Name(s)));
            }
            selection.insert(&steps);
        }
        let ours = selection.read(text.as_bytes());
        let theirs = serde_json::from_slice::<Value>(text.as_bytes());
        let (ours, theirs) = match (ours, theirs) {
            (Err(a), Err(b)) => {
                prop_assert_eq!(a.to_string(), b.to_string());
                return Ok(());
            }
            (Ok(a), Ok(b)) => (a, b),
            (a, b) => {
                return Err(TestCaseError::fail(format!("{a:?} but serde_json: {b:?}")));
            }
        };
        for ((before, after), pointer) in parts.iter().zip(pointers) {
            let before_text = pointer.split("/*").next().unwrap();
            let found = ours.at(before);
            let expected = theirs.pointer(before_text);
            prop_assert_eq!(found.is_some(), expected.is_some(), "{}", pointer);
            let (Some(found), Some(expected)) = (found, expected) else {
                continue;
            };
            prop_assert!(
                same(found, expected),
                "{}: {:?} vs {:?}",
                pointer,
                found,
                expected
            );
            let Some(after) = after else { continue };
            let after_text = pointer.split_once("/*").unwrap().1;
            let elements: Vec<(String, &Node<'_>, &Value)> = match (found, expected) {
                (Node::Array(a), Value::Array(b)) => a
                    .iter()
                    .zip(b)
                    .enumerate()
                    .map(|(i, (x, y))| (i.to_string(), x, y))
                    .collect(),
                (Node::Object(a), Value::Object(b)) => {
                    prop_assert_eq!(a.len(), b.len());
                    a.iter()
                        .zip(b)
                        .map(|((n, x), (k, y))| {
                            assert_eq!(n, k);
                            (k.clone(), x, y)
                        })
                        .collect()
                }
                _ => continue,
            };
            for (name, node, value) in elements {
                let found = node.at(after);
                let expected = value.pointer(after_text);
                prop_assert_eq!(
                    found.is_some(),
                    expected.is_some(),
                    "{} at {}",
                    pointer,
                    name
                );
                if let (Some(found), Some(expected)) = (found, expected) {
                    prop_assert!(same(found, expected), "{} at {}", pointer, name);
                }
            }
        }
        Ok(())
    }

    fn pointer() -> impl Strategy<Value = String> {
        let segment = prop::sample::select(vec!["a", "b", "0", "1", "01", "+1", "m~1s", "~0", ""]);
        (
            prop::collection::vec(segment.clone(), 0..3),
            any::<bool>(),
            prop::collection::vec(segment, 0..2),
        )
            .prop_map(|(before, wildcard, after)| {
                let mut p: String = before.iter().map(|s| format!("/{s}")).collect();
                if wildcard {
                    p.push_str("/*");
                    p.extend(after.iter().map(|s| format!("/{s}")));
                }
                p
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::test_support::proptest_cases(512)))]

        #[test]
        fn what_a_pointer_reaches_and_every_error_are_those_of_a_full_value_tree(
            text in r#"[{\[]("(a|b|0|1|m/s|~|\\u0061)": ?)?(\[|\{|"[a-z/é]*"|"\\x"|-?[0-9]{1,3}(\.[0-9]+)?(e[0-9]{1,3})?|1e400|true|null|\]|\}|, ?|: ?|"(a|b|0|1|01|m/s|~)": ?)*"#,
            pointers in prop::collection::vec(pointer(), 1..4),
        ) {
            check(&text, &pointers)?;
        }

        #[test]
        fn valid_documents_read_the_same_as_a_full_value_tree(
            value in json_value(),
            pointers in prop::collection::vec(pointer(), 1..4),
        ) {
            check(&value.to_string(), &pointers)?;
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-z~/é\"\\\\]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["a", "b", "0", "1", "01", "m/s", "~"]),
                        inner
                    ),
                    0..6
                )
                .prop_map(|members| {
                    Value::Object(
                        members
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }
}
