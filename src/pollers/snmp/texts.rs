//! The texts a poller names its readings with (a table's keys, each row's
//! index and labels, a walked value's OID), kept once per poller and handed
//! over again poll after poll: the poll memory keeps the same shared texts
//! in its descriptions, so it knows each reading's description by the
//! pointer without comparing its bytes, and an unchanged row costs no
//! allocation for its texts. One set for all of a poller's targets, since
//! devices of one kind repeat each other's texts (`ifInOctets`, `1`,
//! `GigabitEthernet0/1`) and the poll memory keeps one description for
//! all of them.

use std::sync::Arc;

use rustc_hash::FxBuildHasher;

/// A poller's texts, each once.
#[derive(Debug, Default)]
pub struct Texts(hashbrown::HashSet<Arc<str>, FxBuildHasher>);

impl Texts {
    /// `text`, shared: the one already kept, else a new one, kept.
    pub fn text(&mut self, text: &str) -> Arc<str> {
        if let Some(known) = self.0.get(text) {
            return Arc::clone(known);
        }
        let text: Arc<str> = Arc::from(text);
        self.0.insert(Arc::clone(&text));
        text
    }

    /// Forgets the texts nothing else holds any more (no description of
    /// the poll memory, no reading): a label that changed is not kept.
    pub fn forget_unused(&mut self) {
        self.0.retain(|text| Arc::strong_count(text) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_is_handed_over_shared_until_nothing_holds_it() {
        let mut texts = Texts::default();
        let first = texts.text("ifInOctets");
        let again = texts.text("ifInOctets");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*texts.text("eth1"), "eth1");
        // Held by a reading or the poll memory: kept.
        texts.forget_unused();
        assert!(Arc::ptr_eq(&texts.text("ifInOctets"), &first));
        // "eth1" was held by nothing: forgotten, made anew.
        drop((first, again));
        texts.forget_unused();
        assert_eq!(texts.0.len(), 0);
    }
}
