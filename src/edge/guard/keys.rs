//! API keys: which consumer a presented key belongs to.
//!
//! The table holds SHA-256 digests only (the config never keeps a key).
//! A presented key is hashed, the digest looked up, and the stored digest
//! compared with it again in constant time. The lookup's timing depends on
//! the digest's bytes, which say nothing about how close a guess is to a
//! real key (finding a key from its digest is a preimage attack); the key
//! itself is never compared byte by byte with anything.
//!
//! Keys that matched are remembered in a small direct-mapped cache, so a
//! consumer's next request skips the SHA-256 (3,500 instructions without the
//! CPU's SHA extensions, most of what a key check cost): a slot is chosen by
//! a hash with a per-process random seed and confirmed by comparing the
//! whole key in constant time. Only keys that matched a consumer are kept
//! (a flood of made-up keys fills nothing), at most [`CACHE_SLOTS`] of at
//! most [`MAX_CACHED_KEY`] bytes; a reload builds a new table, so a removed
//! key is forgotten with it. The keys it holds are the ones already in the
//! process's memory as request headers.

use std::collections::HashMap;
use std::hash::BuildHasher as _;

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Slots of the matched-key cache.
const CACHE_SLOTS: usize = 256;
/// Longest key the cache holds (longer ones are hashed every time).
const MAX_CACHED_KEY: usize = 256;

/// One slot of the matched-key cache: a key that matched, and its consumer.
type MatchedSlot = Mutex<Option<(Box<[u8]>, usize)>>;

/// Key digests to consumer indexes.
#[derive(Debug)]
pub struct KeyTable {
    by_digest: HashMap<[u8; 32], usize>,
    /// Keys that matched, with their consumer: `(key, index)` per slot.
    matched: Box<[MatchedSlot]>,
    slot_hasher: foldhash::quality::RandomState,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable {
            by_digest: HashMap::new(),
            matched: (0..CACHE_SLOTS).map(|_| Mutex::new(None)).collect(),
            slot_hasher: foldhash::quality::RandomState::default(),
        }
    }
}

impl KeyTable {
    /// A table of each consumer's digests (validation made them unique).
    pub fn new<'a>(consumers: impl Iterator<Item = &'a [[u8; 32]]>) -> Self {
        let mut table = KeyTable::default();
        for (index, digests) in consumers.enumerate() {
            for digest in digests {
                table.by_digest.insert(*digest, index);
            }
        }
        table
    }

    /// The consumer holding `key`, if any.
    pub fn find(&self, key: &[u8]) -> Option<usize> {
        let slot = &self.matched[self.slot_hasher.hash_one(key) as usize % CACHE_SLOTS];
        if let Some((known, index)) = &*slot.lock() {
            // `ct_eq` on slices of different lengths is false (lengths are
            // not secret: the header's length is on the wire).
            if bool::from(known.as_ref().ct_eq(key)) {
                return Some(*index);
            }
        }
        let digest: [u8; 32] = Sha256::digest(key).into();
        let (stored, &index) = self.by_digest.get_key_value(&digest)?;
        let matched = bool::from(stored.ct_eq(&digest));
        if matched && key.len() <= MAX_CACHED_KEY {
            *slot.lock() = Some((key.into(), index));
        }
        matched.then_some(index)
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
        // Asked again (now from the cache of matched keys): the same answers.
        for _ in 0..2 {
            assert_eq!(table.find(b"key-of-a-0123456789"), Some(0));
            assert_eq!(table.find(b"other-key-of-b-0123"), Some(1));
            assert_eq!(table.find(b"key-of-a-012345678"), None);
            assert_eq!(table.find(b"key-of-a-01234567890"), None);
        }
    }

    /// Many keys in few slots: each still finds its own consumer, and a key
    /// that shares a slot with a matched one is not taken for it.
    #[test]
    fn the_matched_key_cache_never_answers_for_another_key() {
        let keys: Vec<String> = (0..2_000).map(|i| format!("consumer-key-{i:06}-abcdef")).collect();
        let digests: Vec<[u8; 32]> =
            keys.iter().map(|k| Sha256::digest(k.as_bytes()).into()).collect();
        let consumers: Vec<Vec<[u8; 32]>> = digests.iter().map(|d| vec![*d]).collect();
        let table = KeyTable::new(consumers.iter().map(Vec::as_slice));
        for round in 0..2 {
            for (index, key) in keys.iter().enumerate() {
                assert_eq!(table.find(key.as_bytes()), Some(index), "round {round}");
                assert_eq!(table.find(format!("{key}x").as_bytes()), None);
            }
        }
    }
}
