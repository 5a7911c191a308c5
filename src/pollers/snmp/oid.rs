//! OIDs as text: the leaf every other SNMP module reads them with. It
//! imports nothing of the poller, so `config`, `convert` and `ifmib` can
//! all use it without importing each other.

use async_snmp::Oid;

/// `.1.3.6.1.2.1.1.3.0` or `1.3.6.1.2.1.1.3.0`: numbers only, since no MIB
/// files are read.
pub fn oid_from_text(text: &str) -> Option<Oid> {
    let text = text.trim();
    let digits = text.strip_prefix('.').unwrap_or(text);
    if digits.is_empty()
        || !digits
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let oid = Oid::parse(digits).ok()?;
    (oid.len() >= 2 && oid.validate().is_ok()).then_some(oid)
}

/// An OID as pattoo's SNMP agents write it: `.1.3.6.1.2.1.1.3.0`.
pub fn dotted(oid: &Oid) -> String {
    let mut text = String::with_capacity(oid.len() * 3);
    dotted_into(oid, &mut text);
    text
}

/// [`dotted`], in `text` (cleared first).
pub fn dotted_into(oid: &Oid, text: &mut String) {
    text.clear();
    for arc in oid.arcs() {
        text.push('.');
        text.push_str(itoa::Buffer::new().format(*arc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numeric_oids_with_or_without_the_leading_dot() {
        assert_eq!(
            dotted(&oid_from_text(".1.3.6.1.2.1.1.3.0").unwrap()),
            ".1.3.6.1.2.1.1.3.0"
        );
        assert_eq!(dotted(&oid_from_text("1.3.6.1").unwrap()), ".1.3.6.1");
        assert!(oid_from_text("ifDescr").is_none());
        assert!(oid_from_text(".1.3..6").is_none());
        assert!(oid_from_text("").is_none());
    }
}
