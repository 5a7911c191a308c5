//! [`Text`]: a datapoint's key or a metadata item's key or value, either
//! owned by the datapoint or shared with what produced it.
//!
//! A poller that reads the same registers every poll (Modbus, SNMP) names
//! each reading with text from its configuration: shared, a reading costs
//! no allocation for its key and metadata, only a reference count. A parser
//! that makes its text from the payload hands over the `String` it built,
//! without a copy, or, when it has many short texts from one payload, as
//! slices of that payload shared once. Names fixed in the program (a Nagios threshold's
//! `warn`, an SNMP reading's `oid`) are static and cost nothing at all.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

use rustc_hash::FxBuildHasher;

/// Text that reads like a `&str` wherever it is used.
#[derive(Clone)]
pub enum Text {
    Owned(String),
    Shared(Arc<str>),
    /// `whole[range]`: one of many texts cut from one shared payload, so
    /// each costs a reference count instead of an allocation. An
    /// `Arc<String>` (one pointer, where `Arc<str>` is two) keeps a `Text`,
    /// and so every reading, as small as a `String`.
    Slice(Arc<String>, Range<u32>),
    Static(&'static str),
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Owned(text) => text,
            Text::Shared(text) => text,
            Text::Slice(whole, range) => &whole[range.start as usize..range.end as usize],
            Text::Static(text) => text,
        }
    }

    /// `part`, which lies within `whole`, as a slice of it; owned if the
    /// payload is too large for its offsets (4 GiB), which no poller reads.
    pub fn slice(whole: &Arc<String>, part: &str) -> Text {
        let start = (part.as_ptr() as usize)
            .checked_sub(whole.as_ptr() as usize)
            .filter(|start| start + part.len() <= whole.len())
            .expect("a slice is cut from its own payload");
        match (u32::try_from(start), u32::try_from(start + part.len())) {
            (Ok(start), Ok(end)) => Text::Slice(Arc::clone(whole), start..end),
            _ => Text::Owned(part.to_owned()),
        }
    }

    /// The same text, shared: cloning the result costs no allocation.
    pub fn shared(&self) -> Text {
        match self {
            Text::Owned(text) => Text::Shared(Arc::from(text.as_str())),
            Text::Shared(text) => Text::Shared(Arc::clone(text)),
            Text::Slice(whole, range) => Text::Slice(Arc::clone(whole), range.clone()),
            Text::Static(text) => Text::Static(text),
        }
    }
}

impl Default for Text {
    fn default() -> Self {
        Text::Owned(String::new())
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text::Owned(text)
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text::Owned(text.to_owned())
    }
}

impl From<&String> for Text {
    fn from(text: &String) -> Self {
        Text::Owned(text.clone())
    }
}

impl From<Arc<str>> for Text {
    fn from(text: Arc<str>) -> Self {
        Text::Shared(text)
    }
}

impl From<Text> for String {
    fn from(text: Text) -> Self {
        match text {
            Text::Owned(text) => text,
            Text::Shared(text) => text.as_ref().to_owned(),
            Text::Slice(..) | Text::Static(_) => text.as_str().to_owned(),
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        // Readings of one register share their text, and a poller that
        // hands over last poll's texts again shares them with the poll
        // memory: the same bytes are equal without looking at them.
        let (a, b) = (self.as_str(), other.as_str());
        a.len() == b.len() && (std::ptr::eq(a.as_ptr(), b.as_ptr()) || a == b)
    }
}

impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

/// Texts kept once and handed out shared: whatever asks for the same text
/// again gets the same allocation, and [`Text`] equality of two such texts
/// is a pointer comparison. Used where the same few texts come back poll
/// after poll (a poller's keys and labels, the poll memory's descriptions
/// and rendered pairs).
#[derive(Debug, Default)]
pub struct TextSet(hashbrown::HashSet<Arc<str>, FxBuildHasher>);

impl TextSet {
    /// `text`, shared: the one already kept, else a new one, kept.
    pub fn text(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.0.get(text) {
            return Arc::clone(known);
        }
        let text: Arc<str> = Arc::from(text);
        self.0.insert(Arc::clone(&text));
        text
    }

    /// `text`, or the same text already kept; `text` itself is kept if
    /// none is.
    pub fn keep(&mut self, text: Arc<str>) -> Arc<str> {
        match self.0.get(&text) {
            Some(known) => Arc::clone(known),
            None => {
                self.0.insert(Arc::clone(&text));
                text
            }
        }
    }

    /// Takes room for `additional` more texts at once.
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    /// How many texts are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets the texts nothing else holds any more, so that a text no
    /// longer used (a label that changed) is not kept for ever.
    pub fn forget_unused(&mut self) {
        self.0.retain(|text| Arc::strong_count(text) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_set_hands_over_the_same_text_shared_until_nothing_holds_it() {
        let mut texts = TextSet::default();
        let first = texts.text("ifInOctets");
        let again = texts.text("ifInOctets");
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(&texts.keep(Arc::from("ifInOctets")), &first));
        let eth1 = texts.keep(Arc::from("eth1"));
        assert!(Arc::ptr_eq(&texts.text("eth1"), &eth1));
        // Held by a reading or the poll memory: kept.
        drop(eth1);
        texts.forget_unused();
        assert!(Arc::ptr_eq(&texts.text("ifInOctets"), &first));
        // "eth1" was held by nothing: forgotten, made anew.
        drop((first, again));
        texts.forget_unused();
        assert!(texts.is_empty());
    }

    #[test]
    fn a_text_is_no_larger_than_a_string() {
        // Every reading carries one per key and two per metadata item.
        assert_eq!(std::mem::size_of::<Text>(), std::mem::size_of::<String>());
    }

    #[test]
    fn owned_and_shared_text_compare_by_their_characters() {
        let shared = Text::from("unit").shared();
        assert_eq!(shared, Text::from("unit".to_owned()));
        assert_eq!(shared, shared.clone());
        assert_eq!(shared, "unit");
        assert_ne!(shared, Text::from("Unit"));
        assert_eq!(String::from(shared.clone()), "unit");
        assert_eq!(format!("{shared} {shared:?}"), "unit \"unit\"");
        let fixed = Text::Static("unit");
        assert_eq!(fixed, shared);
        assert_eq!(fixed.shared(), Text::from("unit"));
        assert_eq!(String::from(fixed), "unit");
        let payload = Arc::new("warn=1;2 unit".to_owned());
        let cut = Text::slice(&payload, &payload[9..]);
        assert_eq!(cut, shared);
        assert_eq!(cut.shared(), "unit");
        assert_eq!(String::from(cut), "unit");
        // Texts starting at the same byte are equal only when as long.
        let shorter = Text::slice(&payload, &payload[9..12]);
        assert_ne!(shorter, Text::slice(&payload, &payload[9..]));
        assert_eq!(shorter, "uni");
    }
}
