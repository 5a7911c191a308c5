//! The texts a target's readings were named with in its last poll (a
//! table's keys, each row's index and labels), handed over again where the
//! same text comes at the same place: the poll memory then knows each
//! reading's description by the pointer, without comparing its bytes, and
//! an unchanged row costs no allocation for its texts.

use std::sync::Arc;

/// One target's texts, in the order its last poll made them.
#[derive(Debug, Default)]
pub struct LastTexts {
    last: Vec<Arc<str>>,
    next: Vec<Arc<str>>,
}

impl LastTexts {
    /// `text`, shared: the last poll's text at this place if it is the
    /// same, else a new one.
    pub fn text(&mut self, text: &str) -> Arc<str> {
        let shared = match self.last.get(self.next.len()) {
            Some(known) if **known == *text => Arc::clone(known),
            _ => Arc::from(text),
        };
        self.next.push(Arc::clone(&shared));
        shared
    }

    /// The poll is over: what it made is what the next poll compares with.
    pub fn finish(&mut self) {
        self.last = std::mem::take(&mut self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_at_the_same_place_as_last_poll_is_the_same_shared_text() {
        let mut texts = LastTexts::default();
        let first = [texts.text("ifInOctets"), texts.text("1"), texts.text("eth0")];
        texts.finish();
        let again = [texts.text("ifInOctets"), texts.text("1"), texts.text("eth1")];
        texts.finish();
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(Arc::ptr_eq(&first[1], &again[1]));
        // A label that changed is a text of its own, with its own bytes.
        assert_eq!(&*again[2], "eth1");
        // Places move when a row comes or goes: the bytes decide, never
        // the place alone.
        let moved = [texts.text("1"), texts.text("ifInOctets")];
        assert_eq!((&*moved[0], &*moved[1]), ("1", "ifInOctets"));
        assert!(!Arc::ptr_eq(&moved[0], &again[1]));
    }
}
