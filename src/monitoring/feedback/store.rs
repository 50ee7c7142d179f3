//! The bounded store of predictions awaiting their ground truth: at most `max_pending` entries, none older than
//! `max_age`; the oldest leave first. It also remembers, as boundedly, which keys were labelled (a second truth is a
//! duplicate) and which left unlabelled (a truth for them is late), so the answer to a truth is always precise.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::prediction::{Predicted, Truth};

/// A prediction waiting for its truth.
#[derive(Debug)]
pub struct Entry {
    seq: u64,
    at: Instant,
    pub model: Arc<str>,
    pub version: u64,
    pub variant: Cow<'static, str>,
    pub predicted: Predicted,
    pub shadow: ShadowState,
    /// Set once the truth came while the shadow's prediction was still on its way.
    pub truth: Option<Vec<Truth>>,
}

impl Entry {
    pub fn new(
        model: Arc<str>,
        version: u64,
        variant: Cow<'static, str>,
        predicted: Predicted,
        shadow: ShadowState,
    ) -> Entry {
        Entry {
            seq: 0,
            at: Instant::now(),
            model,
            version,
            variant,
            predicted,
            shadow,
            truth: None,
        }
    }
}

/// The shadow's side of a mirrored request.
#[derive(Debug, PartialEq)]
pub enum ShadowState {
    /// Not mirrored.
    None,
    /// Mirrored; the shadow has not answered yet.
    Pending,
    /// The shadow (this version) predicted this.
    Done(u64, Predicted),
    /// The shadow run failed or was dropped: there is nothing to pair.
    Failed,
}

/// Why a prediction left the store without its truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// `feedback.max_pending` predictions were waiting: the oldest made room.
    Capacity,
    /// Older than `feedback.max_age_s`.
    Expired,
    /// Another request of the same model came with the same id.
    Replaced,
}

impl Dropped {
    pub fn label(self) -> &'static str {
        match self {
            Dropped::Capacity => "capacity",
            Dropped::Expired => "expired",
            Dropped::Replaced => "replaced",
        }
    }
}

/// What the store knows of a key a truth names.
#[derive(Debug)]
pub enum Lookup<'a> {
    Waiting(&'a mut Entry),
    /// Already labelled.
    Duplicate,
    /// Its prediction left the store unlabelled (too old, or pushed out).
    Late,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tomb {
    Labelled,
    Gone,
}

pub struct Store {
    entries: HashMap<u64, Entry>,
    /// Keys in arrival order with their entry's `seq`; a key whose entry was replaced or taken is skipped.
    order: VecDeque<(u64, u64)>,
    tombs: HashMap<u64, Tomb>,
    tomb_order: VecDeque<u64>,
    next_seq: u64,
    capacity: usize,
    max_age: Duration,
    hasher: RandomState,
    /// Entries per model.
    per_model: HashMap<Arc<str>, usize>,
}

impl Store {
    pub fn new(capacity: usize, max_age: Duration) -> Store {
        Store {
            entries: HashMap::new(),
            order: VecDeque::new(),
            tombs: HashMap::new(),
            tomb_order: VecDeque::new(),
            next_seq: 0,
            capacity: capacity.max(1),
            max_age,
            hasher: RandomState::new(),
            per_model: HashMap::new(),
        }
    }

    /// The key of a request id of a model (a 64-bit keyed hash: ids are never stored).
    pub fn key(&self, model: &str, id: &str) -> u64 {
        self.hasher.hash_one((model, id))
    }

    /// Predictions of `model` waiting.
    pub fn pending(&self, model: &str) -> usize {
        self.per_model.get(model).copied().unwrap_or(0)
    }

    fn count(&mut self, model: &Arc<str>, up: bool) {
        if up {
            *self.per_model.entry(Arc::clone(model)).or_default() += 1;
        } else if let Some(n) = self.per_model.get_mut(model) {
            *n -= 1;
            if *n == 0 {
                self.per_model.remove(model);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Keeps `entry` under `key`; returns the predictions that left unlabelled to make room or for age.
    pub fn insert(&mut self, key: u64, mut entry: Entry) -> Vec<(Arc<str>, Dropped)> {
        let mut dropped = Vec::new();
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.order.push_back((key, entry.seq));
        self.tombs.remove(&key);
        self.count(&entry.model, true);
        if let Some(old) = self.entries.insert(key, entry) {
            self.count(&old.model, false);
            if old.truth.is_none() {
                dropped.push((old.model, Dropped::Replaced));
            }
        }
        self.expire(Instant::now(), &mut dropped);
        while self.entries.len() > self.capacity {
            let Some((key, old)) = self.pop_oldest() else {
                break;
            };
            self.leave(key, old, Dropped::Capacity, &mut dropped);
        }
        // Keys of replaced or taken entries linger in `order` until they reach its front; compact when they
        // outnumber the live ones.
        if self.order.len() > 2 * self.capacity + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(k, seq)| entries.get(k).is_some_and(|e| e.seq == *seq));
        }
        dropped
    }

    /// Removes entries older than `max_age`; returns those that left unlabelled.
    pub fn expire_now(&mut self) -> Vec<(Arc<str>, Dropped)> {
        let mut dropped = Vec::new();
        self.expire(Instant::now(), &mut dropped);
        dropped
    }

    fn expire(&mut self, now: Instant, dropped: &mut Vec<(Arc<str>, Dropped)>) {
        while let Some(&(key, seq)) = self.order.front() {
            match self.entries.get(&key) {
                Some(e) if e.seq == seq => {
                    if now.duration_since(e.at) < self.max_age {
                        return;
                    }
                    self.order.pop_front();
                    if let Some(old) = self.entries.remove(&key) {
                        self.leave(key, old, Dropped::Expired, dropped);
                    }
                }
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    fn pop_oldest(&mut self) -> Option<(u64, Entry)> {
        while let Some((key, seq)) = self.order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                return self.entries.remove(&key).map(|e| (key, e));
            }
        }
        None
    }

    /// An entry left without being taken: unlabelled ones are dropped predictions (a truth for them is late);
    /// labelled ones only waited for their shadow.
    fn leave(
        &mut self,
        key: u64,
        entry: Entry,
        why: Dropped,
        dropped: &mut Vec<(Arc<str>, Dropped)>,
    ) {
        self.count(&entry.model, false);
        if entry.truth.is_none() {
            dropped.push((entry.model, why));
            self.bury(key, Tomb::Gone);
        } else {
            self.bury(key, Tomb::Labelled);
        }
    }

    fn bury(&mut self, key: u64, tomb: Tomb) {
        if self.tombs.insert(key, tomb).is_none() {
            self.tomb_order.push_back(key);
        }
        while self.tomb_order.len() > self.capacity {
            if let Some(k) = self.tomb_order.pop_front() {
                self.tombs.remove(&k);
            }
        }
    }

    /// The entry a truth names, if it is still waiting.
    pub fn lookup(&mut self, key: u64) -> Lookup<'_> {
        let now = Instant::now();
        let expired = self
            .entries
            .get(&key)
            .is_some_and(|e| now.duration_since(e.at) >= self.max_age);
        if expired {
            // Left for `expire` to count: it pops it from the front in arrival order.
            return if self.entries[&key].truth.is_some() {
                Lookup::Duplicate
            } else {
                Lookup::Late
            };
        }
        match self.entries.get_mut(&key) {
            Some(e) if e.truth.is_some() => Lookup::Duplicate,
            Some(e) => Lookup::Waiting(e),
            None => match self.tombs.get(&key) {
                Some(Tomb::Labelled) => Lookup::Duplicate,
                Some(Tomb::Gone) => Lookup::Late,
                None => Lookup::Unknown,
            },
        }
    }

    /// Takes a labelled entry out for good: a later truth for it is a duplicate.
    pub fn take(&mut self, key: u64) -> Option<Entry> {
        let entry = self.entries.remove(&key)?;
        self.count(&entry.model, false);
        self.bury(key, Tomb::Labelled);
        Some(entry)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        self.entries.get_mut(&key)
    }

    /// Memory the store's bookkeeping holds at most, in entries: for the bound test.
    pub fn footprint(&self) -> (usize, usize, usize) {
        (self.entries.len(), self.order.len(), self.tombs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(model: &Arc<str>) -> Entry {
        Entry::new(
            Arc::clone(model),
            1,
            Cow::Borrowed("stable"),
            Predicted::Values(vec![1.0]),
            ShadowState::None,
        )
    }

    /// A million predictions through a store capped at 100,000: it never holds more than its cap, its bookkeeping
    /// stays within a small multiple of it, and every prediction pushed out is counted.
    #[test]
    fn a_million_predictions_stay_within_the_cap() {
        let model: Arc<str> = Arc::from("m");
        let mut store = Store::new(100_000, Duration::from_secs(3600));
        let mut dropped = 0usize;
        for i in 0..1_000_000u64 {
            let key = store.key("m", &i.to_string());
            dropped += store.insert(key, entry(&model)).len();
            let (entries, order, tombs) = store.footprint();
            assert!(entries <= 100_000 && order <= 2 * 100_000 + 65 && tombs <= 100_000);
        }
        assert_eq!(store.len(), 100_000);
        assert_eq!(dropped, 900_000);
        assert_eq!(store.pending("m"), 100_000);
        // The latest pushed out are late (the store remembers as many of those as its cap), the newest still wait,
        // ids never seen (or forgotten) are unknown.
        let k = store.key("m", "899999");
        assert!(matches!(store.lookup(k), Lookup::Late));
        let k = store.key("m", "0");
        assert!(matches!(store.lookup(k), Lookup::Unknown));
        let k = store.key("m", "999999");
        assert!(matches!(store.lookup(k), Lookup::Waiting(_)));
        let k = store.key("m", "x");
        assert!(matches!(store.lookup(k), Lookup::Unknown));
        // Taken once, a second truth is a duplicate.
        let k = store.key("m", "999999");
        assert!(store.take(k).is_some());
        assert!(matches!(store.lookup(k), Lookup::Duplicate));
    }

    #[test]
    fn old_and_replaced_predictions_are_counted() {
        let model: Arc<str> = Arc::from("m");
        let mut store = Store::new(10, Duration::from_millis(50));
        let a = store.key("m", "a");
        assert!(store.insert(a, entry(&model)).is_empty());
        let again = store.insert(a, entry(&model));
        assert_eq!(again[0].1, Dropped::Replaced);
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(store.lookup(a), Lookup::Late));
        let expired = store.expire_now();
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].1, Dropped::Expired);
        assert!(matches!(store.lookup(a), Lookup::Late));
        assert!(store.is_empty());
    }
}
