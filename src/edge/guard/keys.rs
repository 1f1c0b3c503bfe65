//! API keys: which consumer a presented key belongs to.
//!
//! The table holds SHA-256 digests only (the config never keeps a key).
//! A presented key is hashed, the digest looked up, and the stored digest
//! compared with it again in constant time. The lookup's timing depends on
//! the digest's bytes, which say nothing about how close a guess is to a
//! real key (finding a key from its digest is a preimage attack); the key
//! itself is never compared byte by byte with anything.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Key digests to consumer indexes.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_digest: HashMap<[u8; 32], usize>,
}

impl KeyTable {
    /// A table of each consumer's digests (validation made them unique).
    pub fn new<'a>(consumers: impl Iterator<Item = &'a [[u8; 32]]>) -> Self {
        let mut by_digest = HashMap::new();
        for (index, digests) in consumers.enumerate() {
            for digest in digests {
                by_digest.insert(*digest, index);
            }
        }
        KeyTable { by_digest }
    }

    /// The consumer holding `key`, if any.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let (stored, &index) = self.by_digest.get_key_value(&digest)?;
        bool::from(stored.ct_eq(&digest)).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_finds_its_consumer_and_nothing_else_does() {
        let a: [u8; 32] = Sha256::digest(b"key-of-a-0123456789").into();
        let b1: [u8; 32] = Sha256::digest(b"key-of-b-0123456789").into();
        let b2: [u8; 32] = Sha256::digest(b"other-key-of-b-0123").into();
        let consumers = [vec![a], vec![b1, b2]];
        let table = KeyTable::new(consumers.iter().map(Vec::as_slice));
        assert_eq!(table.find(b"key-of-a-0123456789"), Some(0));
        assert_eq!(table.find(b"key-of-b-0123456789"), Some(1));
        assert_eq!(table.find(b"other-key-of-b-0123"), Some(1));
        assert_eq!(table.find(b"key-of-a-012345678"), None, "a prefix");
        assert_eq!(table.find(b"key-of-a-0123456789 "), None);
        assert_eq!(table.find(b""), None);
    }
}
