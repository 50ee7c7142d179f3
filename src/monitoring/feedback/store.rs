//! The bounded store of predictions awaiting their ground truth: a ring of `max_pending` slots in arrival order, so
//! a prediction waits until `max_pending` later ones came (all models together) or `max_age` passed, whichever is
//! first. A compact index finds a request key's slot. It also remembers, as boundedly, which keys were labelled (a
//! second truth is a duplicate) and which left unlabelled (a truth for them is late), so the answer to a truth is
//! always precise. Every operation is O(1) and touches the ring in arrival order.

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use super::prediction::{Predicted, Truth};

/// Request keys: a 64-bit keyed hash of the model and the request id (ids are never stored).
#[derive(Default)]
pub struct Keys(RandomState);

impl Keys {
    pub fn key(&self, model: &str, id: &str) -> u64 {
        self.0.hash_one((model, id))
    }
}

/// A model as the store knows it: its name is kept once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelId(u32);

impl ModelId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A prediction waiting for its truth.
#[derive(Debug)]
pub struct Entry {
    at: Instant,
    pub model: ModelId,
    pub version: u64,
    pub variant: Cow<'static, str>,
    pub predicted: Predicted,
    pub shadow: ShadowState,
    /// Set once the truth came while the shadow's prediction was still on its way.
    pub truth: Option<Vec<Truth>>,
}

impl Entry {
    pub fn new(
        model: ModelId,
        version: u64,
        variant: Cow<'static, str>,
        predicted: Predicted,
        shadow: ShadowState,
    ) -> Entry {
        Entry {
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
    Done(u64, Box<Predicted>),
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

struct Slot {
    key: u64,
    seq: u64,
    entry: Entry,
}

/// A remembered key: a truth for it is a duplicate (labelled) or late (gone).
struct Grave {
    key: u64,
    tomb: Tomb,
}

pub struct Store {
    /// The prediction of arrival number `seq` sits in slot `seq % capacity` while it waits.
    ring: Vec<Option<Slot>>,
    /// The ring slots of waiting keys, found by key (a key is a keyed hash: it is its own hash). Four bytes a key, so
    /// the index stays in cache while the ring streams by.
    index: HashTable<u32>,
    /// The next arrival number.
    next_seq: u64,
    /// No prediction older than this arrival number is waiting.
    front: u64,
    /// Buried keys in burial order; the oldest is forgotten to make room.
    graves: Vec<Grave>,
    next_grave: usize,
    /// The `graves` slots of buried keys, found by key.
    tombs: HashTable<u32>,
    capacity: usize,
    max_age: Duration,
    models: Vec<(Arc<str>, usize)>,
    model_ids: HashMap<Arc<str>, ModelId>,
}

impl Store {
    /// A store of at most `capacity` predictions (at most `u32::MAX`).
    pub fn new(capacity: usize, max_age: Duration) -> Store {
        Store {
            ring: Vec::new(),
            index: HashTable::new(),
            next_seq: 0,
            front: 0,
            graves: Vec::new(),
            next_grave: 0,
            tombs: HashTable::new(),
            capacity: capacity.clamp(1, u32::MAX as usize),
            max_age,
            models: Vec::new(),
            model_ids: HashMap::new(),
        }
    }

    /// The id of a model's entries (a model is known from its first prediction on).
    pub fn model(&mut self, name: &str) -> ModelId {
        if let Some(id) = self.model_ids.get(name) {
            return *id;
        }
        let id = ModelId(self.models.len() as u32);
        let name: Arc<str> = Arc::from(name);
        self.models.push((Arc::clone(&name), 0));
        self.model_ids.insert(name, id);
        id
    }

    /// Predictions of `model` waiting.
    pub fn pending(&self, model: &str) -> usize {
        self.model_ids
            .get(model)
            .map_or(0, |id| self.models[id.index()].1)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn position(&self, seq: u64) -> usize {
        (seq % self.capacity as u64) as usize
    }

    /// The ring slot of a waiting key.
    fn find(&self, key: u64) -> Option<usize> {
        let ring = &self.ring;
        self.index
            .find(key, |&at| {
                ring[at as usize].as_ref().is_some_and(|s| s.key == key)
            })
            .map(|&at| at as usize)
    }

    /// Keeps `entry` under `key`; `dropped` is told of each prediction that left unlabelled, for age, to make room,
    /// or replaced by this one.
    pub fn insert(&mut self, key: u64, entry: Entry, mut dropped: impl FnMut(ModelId, Dropped)) {
        self.expire(entry.at, &mut dropped);
        if self.ring.is_empty() {
            // Sized once for the cap: predictions churn through it for good. The indexes get twice the room, so
            // deleted marks are swept rarely.
            self.ring.reserve_exact(self.capacity);
            let ring = &self.ring;
            self.index.reserve(2 * self.capacity, |&at| {
                ring[at as usize].as_ref().map_or(0, |s| s.key)
            });
            let graves = &self.graves;
            self.tombs
                .reserve(2 * self.capacity, |&at| graves[at as usize].key);
        }
        if let Some(old) = self.find(key).and_then(|at| self.vacate(at)) {
            self.models[old.entry.model.index()].1 -= 1;
            if old.entry.truth.is_none() {
                dropped(old.entry.model, Dropped::Replaced);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.models[entry.model.index()].1 += 1;
        let at = self.position(seq);
        let slot = Some(Slot { key, seq, entry });
        if at == self.ring.len() {
            self.ring.push(slot);
        } else if let Some(old) = std::mem::replace(&mut self.ring[at], slot) {
            // `capacity` predictions came after it.
            self.unindex(old.key, at);
            self.leave(old, Dropped::Capacity, &mut dropped);
        }
        let ring = &self.ring;
        self.index.insert_unique(key, at as u32, |&at| {
            ring[at as usize].as_ref().map_or(0, |s| s.key)
        });
        self.front = self
            .front
            .max((seq + 1).saturating_sub(self.capacity as u64));
    }

    /// Removes predictions older than `max_age`; `dropped` is told of those that left unlabelled.
    pub fn expire_now(&mut self, mut dropped: impl FnMut(ModelId, Dropped)) {
        self.expire(Instant::now(), &mut dropped);
    }

    fn expire(&mut self, now: Instant, dropped: &mut impl FnMut(ModelId, Dropped)) {
        while self.front < self.next_seq {
            let at = self.position(self.front);
            if let Some(slot) = &self.ring[at] {
                if slot.seq == self.front {
                    if now.saturating_duration_since(slot.entry.at) < self.max_age {
                        return;
                    }
                    if let Some(old) = self.vacate(at) {
                        self.leave(old, Dropped::Expired, dropped);
                    }
                }
            }
            self.front += 1;
        }
    }

    /// Drops the index's mark of `key` at ring slot `at`.
    fn unindex(&mut self, key: u64, at: usize) {
        if let Ok(found) = self.index.find_entry(key, |&a| a as usize == at) {
            found.remove();
        }
    }

    /// Empties ring slot `at` and its index mark.
    fn vacate(&mut self, at: usize) -> Option<Slot> {
        let slot = self.ring[at].take()?;
        self.unindex(slot.key, at);
        Some(slot)
    }

    /// A prediction left without being taken: unlabelled ones are dropped (a truth for them is late); labelled ones
    /// only waited for their shadow.
    fn leave(&mut self, slot: Slot, why: Dropped, dropped: &mut impl FnMut(ModelId, Dropped)) {
        self.models[slot.entry.model.index()].1 -= 1;
        if slot.entry.truth.is_none() {
            dropped(slot.entry.model, why);
            self.bury(slot.key, Tomb::Gone);
        } else {
            self.bury(slot.key, Tomb::Labelled);
        }
    }

    fn bury(&mut self, key: u64, tomb: Tomb) {
        let graves = &self.graves;
        if let Some(&at) = self.tombs.find(key, |&at| graves[at as usize].key == key) {
            self.graves[at as usize].tomb = tomb;
            return;
        }
        let at = self.next_grave;
        let grave = Grave { key, tomb };
        if at == self.graves.len() {
            self.graves.push(grave);
        } else {
            let old = std::mem::replace(&mut self.graves[at], grave);
            if let Ok(found) = self.tombs.find_entry(old.key, |&a| a as usize == at) {
                found.remove();
            }
        }
        self.next_grave = (at + 1) % self.capacity;
        let graves = &self.graves;
        self.tombs
            .insert_unique(key, at as u32, |&at| graves[at as usize].key);
    }

    /// The entry a truth names, if it is still waiting.
    pub fn lookup(&mut self, key: u64) -> Lookup<'_> {
        let Some(at) = self.find(key) else {
            let graves = &self.graves;
            return match self.tombs.find(key, |&at| graves[at as usize].key == key) {
                Some(&at) if graves[at as usize].tomb == Tomb::Labelled => Lookup::Duplicate,
                Some(_) => Lookup::Late,
                None => Lookup::Unknown,
            };
        };
        let max_age = self.max_age;
        let Some(slot) = self.ring[at].as_mut() else {
            return Lookup::Unknown;
        };
        let entry = &mut slot.entry;
        if entry.truth.is_some() {
            Lookup::Duplicate
        } else if entry.at.elapsed() >= max_age {
            // Left for `expire` to count: it leaves in arrival order.
            Lookup::Late
        } else {
            Lookup::Waiting(entry)
        }
    }

    /// Takes a labelled entry out for good: a later truth for it is a duplicate.
    pub fn take(&mut self, key: u64) -> Option<Entry> {
        let slot = self.find(key).and_then(|at| self.vacate(at))?;
        self.models[slot.entry.model.index()].1 -= 1;
        self.bury(key, Tomb::Labelled);
        Some(slot.entry)
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        let at = self.find(key)?;
        self.ring[at].as_mut().map(|s| &mut s.entry)
    }

    /// What the store's bookkeeping holds (waiting keys, ring slots, remembered keys): for the bound test.
    pub fn footprint(&self) -> (usize, usize, usize) {
        (self.index.len(), self.ring.len(), self.tombs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(model: ModelId) -> Entry {
        Entry::new(
            model,
            1,
            Cow::Borrowed("stable"),
            Predicted::Values(smallvec::smallvec![1.0]),
            ShadowState::None,
        )
    }

    /// A million predictions through a store capped at 100,000: it never holds more than its cap, its bookkeeping
    /// stays within it, and every prediction pushed out is counted.
    #[test]
    fn a_million_predictions_stay_within_the_cap() {
        let keys = Keys::default();
        let mut store = Store::new(100_000, Duration::from_secs(3600));
        let m = store.model("m");
        let mut dropped = 0usize;
        for i in 0..1_000_000u64 {
            store.insert(keys.key("m", &i.to_string()), entry(m), |model, why| {
                assert_eq!((model, why), (m, Dropped::Capacity));
                dropped += 1;
            });
            let (entries, slots, tombs) = store.footprint();
            assert!(entries <= 100_000 && slots <= 100_000 && tombs <= 100_000);
        }
        assert_eq!(store.len(), 100_000);
        assert_eq!(dropped, 900_000);
        assert_eq!(store.pending("m"), 100_000);
        // The latest pushed out are late (the store remembers as many of those as its cap), the newest still wait,
        // ids never seen (or forgotten) are unknown.
        assert!(matches!(
            store.lookup(keys.key("m", "899999")),
            Lookup::Late
        ));
        assert!(matches!(
            store.lookup(keys.key("m", "800000")),
            Lookup::Late
        ));
        assert!(matches!(
            store.lookup(keys.key("m", "799999")),
            Lookup::Unknown
        ));
        assert!(matches!(store.lookup(keys.key("m", "0")), Lookup::Unknown));
        assert!(matches!(
            store.lookup(keys.key("m", "900000")),
            Lookup::Waiting(_)
        ));
        assert!(matches!(
            store.lookup(keys.key("m", "999999")),
            Lookup::Waiting(_)
        ));
        assert!(matches!(store.lookup(keys.key("m", "x")), Lookup::Unknown));
        assert!(matches!(
            store.lookup(keys.key("other", "999999")),
            Lookup::Unknown
        ));
        // Taken once, a second truth is a duplicate.
        let k = keys.key("m", "999999");
        assert!(store.take(k).is_some());
        assert!(matches!(store.lookup(k), Lookup::Duplicate));
        assert_eq!(store.pending("m"), 99_999);
    }

    #[test]
    fn taken_predictions_leave_holes_the_ring_skips() {
        let keys = Keys::default();
        let mut store = Store::new(4, Duration::from_secs(3600));
        let (a, b) = (store.model("a"), store.model("b"));
        let mut dropped = Vec::new();
        for i in 0..4 {
            let model = if i % 2 == 0 { a } else { b };
            let name = if i % 2 == 0 { "a" } else { "b" };
            store.insert(keys.key(name, &i.to_string()), entry(model), |m, w| {
                dropped.push((m, w))
            });
        }
        assert_eq!((store.pending("a"), store.pending("b")), (2, 2));
        // Labelled and taken: its slot is empty when the ring comes round to it.
        assert!(store.take(keys.key("a", "0")).is_some());
        store.insert(keys.key("a", "4"), entry(a), |m, w| dropped.push((m, w)));
        assert!(dropped.is_empty());
        // The next one pushes out the oldest waiting, "1" of b.
        store.insert(keys.key("a", "5"), entry(a), |m, w| dropped.push((m, w)));
        assert_eq!(dropped, vec![(b, Dropped::Capacity)]);
        assert!(matches!(store.lookup(keys.key("b", "1")), Lookup::Late));
        assert!(matches!(
            store.lookup(keys.key("a", "0")),
            Lookup::Duplicate
        ));
        assert_eq!((store.pending("a"), store.pending("b")), (3, 1));
        assert_eq!(store.len(), 4);
    }

    #[test]
    fn old_and_replaced_predictions_are_counted() {
        let keys = Keys::default();
        let mut store = Store::new(10, Duration::from_millis(50));
        let m = store.model("m");
        let a = keys.key("m", "a");
        let mut dropped = Vec::new();
        store.insert(a, entry(m), |m, w| dropped.push((m, w)));
        assert!(dropped.is_empty());
        store.insert(a, entry(m), |m, w| dropped.push((m, w)));
        assert_eq!(dropped, vec![(m, Dropped::Replaced)]);
        assert_eq!(store.pending("m"), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(store.lookup(a), Lookup::Late));
        dropped.clear();
        store.expire_now(|m, w| dropped.push((m, w)));
        assert_eq!(dropped, vec![(m, Dropped::Expired)]);
        assert!(matches!(store.lookup(a), Lookup::Late));
        assert!(store.is_empty());
        assert_eq!(store.pending("m"), 0);
    }
}
