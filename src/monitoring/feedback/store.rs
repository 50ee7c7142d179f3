//! The bounded store of predictions awaiting their ground truth: a ring of `max_pending` slots in arrival order, so
//! a prediction waits until `max_pending` later ones came (all models together) or `max_age` passed, whichever is
//! first. Each slot also remembers the key that was there before, and whether it was labelled or left unlabelled,
//! so the answer to a truth is always precise: a second truth is a duplicate, a truth for a prediction that left is
//! late, for `max_pending` arrivals after it left. One compact index finds a key's slot. Every operation is O(1):
//! a prediction costs two probes of the index and one slot of the ring, written in arrival order.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use super::prediction::{Kept, Predicted, Truth};

/// Request keys: a 64-bit keyed hash of the model and the request id (ids are never stored). foldhash's quality
/// variant, seeded per process: about a quarter of SipHash's instructions on a 36-byte id, and the clients who
/// choose the ids never see a key.
#[derive(Default)]
pub struct Keys(foldhash::quality::RandomState);

/// The store's own small maps (model names, series) are hashed fast: their keys come from the registry.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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

/// A model version in a variant, as the store knows it: what a prediction is scored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesId(u32);

/// One [`SeriesId`]'s model, version and variant (an index into the variant labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Origin {
    model: u32,
    version: u64,
    variant: u32,
}

/// The store's clock: ticks of 16 ms since its start, in 32 bits (wraps after two years; ages are differences).
const TICK_MS: u64 = 16;

/// A prediction waiting for its truth: 48 bytes.
#[derive(Debug)]
pub struct Entry {
    at: u32,
    series: SeriesId,
    kept: Kept,
    /// Only mirrored requests carry this (few, so it is kept apart).
    pub shadow: Option<Box<Mirrored>>,
}

impl Entry {
    /// `mirrored`: the shadow layer sends the request to the shadow too; its answer is awaited.
    pub fn new(series: SeriesId, kept: Kept, mirrored: bool) -> Entry {
        Entry {
            at: 0,
            series,
            kept,
            shadow: mirrored.then(|| {
                Box::new(Mirrored {
                    answer: ShadowState::Pending,
                    truth: None,
                })
            }),
        }
    }

    pub fn predicted(&self) -> std::borrow::Cow<'_, Predicted> {
        self.kept.predicted()
    }

    /// Still waiting for the shadow's answer.
    pub fn shadow_pending(&self) -> bool {
        self.shadow
            .as_ref()
            .is_some_and(|s| s.answer == ShadowState::Pending)
    }

    /// Labelled already, waiting only for its shadow.
    pub fn labelled(&self) -> bool {
        self.shadow.as_ref().is_some_and(|s| s.truth.is_some())
    }
}

/// The shadow's side of a mirrored request.
#[derive(Debug)]
pub struct Mirrored {
    pub answer: ShadowState,
    /// Set once the truth came while the shadow's prediction was still on its way.
    pub truth: Option<Vec<Truth>>,
}

#[derive(Debug, PartialEq)]
pub enum ShadowState {
    /// The shadow has not answered yet.
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

/// Whose prediction an entry is.
#[derive(Debug, Clone, PartialEq)]
pub struct Served<V> {
    pub version: u64,
    pub variant: V,
}

/// What the store knows of a key a truth names.
#[derive(Debug)]
pub enum Lookup<'a> {
    Waiting(&'a mut Entry, Served<&'a str>),
    /// Already labelled.
    Duplicate,
    /// Its prediction left the store unlabelled (too old, or pushed out).
    Late,
    Unknown,
}

/// What a slot knows of a key it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// No key (or one forgotten).
    Empty,
    /// Its prediction is in the slot.
    Waiting,
    Labelled,
    /// It left unlabelled.
    Gone,
}

/// One place in the ring: the key there now and the key there before. One cache line.
#[repr(align(64))]
struct Slot {
    key: u64,
    previous: u64,
    fate: Fate,
    previous_fate: Fate,
    /// Some exactly when `fate` is `Waiting`.
    entry: Option<Entry>,
}

impl Slot {
    const EMPTY: Slot = Slot {
        key: 0,
        previous: 0,
        fate: Fate::Empty,
        previous_fate: Fate::Empty,
        entry: None,
    };

    /// The key and fate of a role in this slot.
    fn role(&self, role: Role) -> (u64, Fate) {
        match role {
            Role::Now => (self.key, self.fate),
            Role::Before => (self.previous, self.previous_fate),
        }
    }
}

/// A key the index found.
struct Found {
    mark: u32,
    at: usize,
    role: Role,
    fate: Fate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Now,
    Before,
}

/// Where the index's marks point. A mark is an arrival number modulo twice the capacity: it names a slot and
/// whether its key is the one there now or the one before.
#[derive(Clone, Copy)]
struct Marks {
    capacity: u64,
    next_seq: u64,
}

impl Marks {
    fn of(self, seq: u64) -> u32 {
        (seq % (2 * self.capacity)) as u32
    }

    fn slot(self, mark: u32) -> (usize, Role) {
        let mark = u64::from(mark);
        let at = mark % self.capacity;
        // The arrival now in slot `at`: the last before `next_seq` (a marked slot was written).
        let now = at + (self.next_seq - 1 - at) / self.capacity * self.capacity;
        let role = if now % (2 * self.capacity) == mark {
            Role::Now
        } else {
            Role::Before
        };
        (at as usize, role)
    }

    /// The key a mark stands for (the index's hash).
    fn key(self, ring: &[Slot], mark: u32) -> u64 {
        let (at, role) = self.slot(mark);
        ring[at].role(role).0
    }
}

pub struct Store {
    /// The prediction of arrival number `seq` sits in slot `seq % capacity` while it waits.
    ring: Vec<Slot>,
    /// The ring slot of each key a slot knows (now or before); a key is a keyed hash: it is its own hash. Four bytes
    /// a key, so the index stays in cache while the ring streams by.
    index: HashTable<u32>,
    /// The next arrival number.
    next_seq: u64,
    /// No prediction older than this arrival number is waiting.
    front: u64,
    waiting: usize,
    capacity: usize,
    started: Instant,
    max_age_ticks: u32,
    models: Vec<(Arc<str>, usize)>,
    model_ids: FastMap<Arc<str>, ModelId>,
    /// Variant labels are few: a scan finds them.
    variants: Vec<Arc<str>>,
    series: Vec<Origin>,
    series_ids: FastMap<Origin, SeriesId>,
}

impl Store {
    /// A store of at most `capacity` predictions (at most `u32::MAX / 2`).
    pub fn new(capacity: usize, max_age: Duration) -> Store {
        Store {
            ring: Vec::new(),
            index: HashTable::new(),
            next_seq: 0,
            front: 0,
            waiting: 0,
            capacity: capacity.clamp(1, (u32::MAX / 2) as usize),
            started: Instant::now(),
            max_age_ticks: u32::try_from(max_age.as_millis().div_ceil(u128::from(TICK_MS)))
                .unwrap_or(u32::MAX)
                .min(u32::MAX / 2),
            models: Vec::new(),
            model_ids: FastMap::default(),
            variants: Vec::new(),
            series: Vec::new(),
            series_ids: FastMap::default(),
        }
    }

    /// The ids a prediction of `model`'s `version` in `variant` is kept under (a model is known from its first
    /// prediction on).
    pub fn series(&mut self, model: &str, version: u64, variant: &str) -> (ModelId, SeriesId) {
        let model = match self.model_ids.get(model) {
            Some(id) => *id,
            None => {
                let id = ModelId(self.models.len() as u32);
                let name: Arc<str> = Arc::from(model);
                self.models.push((Arc::clone(&name), 0));
                self.model_ids.insert(name, id);
                id
            }
        };
        let variant = match self.variants.iter().position(|v| &**v == variant) {
            Some(at) => at,
            None => {
                self.variants.push(Arc::from(variant));
                self.variants.len() - 1
            }
        } as u32;
        let origin = Origin {
            model: model.0,
            version,
            variant,
        };
        let next = SeriesId(self.series.len() as u32);
        let id = *self.series_ids.entry(origin).or_insert(next);
        if id == next {
            self.series.push(origin);
        }
        (model, id)
    }

    fn origin(&self, entry: &Entry) -> Origin {
        self.series[entry.series.0 as usize]
    }

    fn model_of(&self, entry: &Entry) -> ModelId {
        ModelId(self.origin(entry).model)
    }

    /// Predictions of `model` waiting.
    pub fn pending(&self, model: &str) -> usize {
        self.model_ids
            .get(model)
            .map_or(0, |id| self.models[id.index()].1)
    }

    pub fn len(&self) -> usize {
        self.waiting
    }

    pub fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    fn position(&self, seq: u64) -> usize {
        (seq % self.capacity as u64) as usize
    }

    fn now(&self) -> u32 {
        (self.started.elapsed().as_millis() / u128::from(TICK_MS)) as u32
    }

    fn marks(&self) -> Marks {
        Marks {
            capacity: self.capacity as u64,
            next_seq: self.next_seq,
        }
    }

    /// The slot that knows `key`, in which role, and what it knows.
    fn find(&self, key: u64) -> Option<Found> {
        let (ring, marks) = (&self.ring, self.marks());
        let known = |mark: u32| {
            let (at, role) = marks.slot(mark);
            let (k, fate) = ring[at].role(role);
            (k == key && fate != Fate::Empty).then_some(Found {
                mark,
                at,
                role,
                fate,
            })
        };
        self.index
            .find(key, |&mark| known(mark).is_some())
            .and_then(|&mark| known(mark))
    }

    /// Drops the index's `mark` of `key`.
    fn unindex(&mut self, key: u64, mark: u32) {
        if let Ok(found) = self.index.find_entry(key, |&m| m == mark) {
            found.remove();
        }
    }

    /// Keeps `entry` under `key`; `dropped` is told of each prediction that left unlabelled, for age, to make room,
    /// or replaced by this one.
    pub fn insert(
        &mut self,
        key: u64,
        mut entry: Entry,
        mut dropped: impl FnMut(ModelId, Dropped),
    ) {
        let now = self.now();
        entry.at = now;
        self.expire(now, &mut dropped);
        if self.ring.is_empty() {
            // Sized once for the cap: predictions churn through it for good. The index holds up to two keys a slot
            // and gets half as much room again, so deleted marks are swept rarely.
            self.ring.reserve_exact(self.capacity);
            let (ring, marks) = (&self.ring, self.marks());
            self.index
                .reserve(3 * self.capacity, |&mark| marks.key(ring, mark));
        }
        // A key is known to one slot at most: a new prediction under it replaces what was known.
        if let Some(found) = self.find(key) {
            self.unindex(key, found.mark);
            let slot = &mut self.ring[found.at];
            if found.role == Role::Now {
                slot.fate = Fate::Empty;
                if let Some(old) = slot.entry.take() {
                    let model = self.model_of(&old);
                    self.waiting -= 1;
                    self.models[model.index()].1 -= 1;
                    if !old.labelled() {
                        dropped(model, Dropped::Replaced);
                    }
                }
            } else {
                slot.previous_fate = Fate::Empty;
            }
        }
        let seq = self.next_seq;
        let at = self.position(seq);
        if at == self.ring.len() {
            self.ring.push(Slot::EMPTY);
        }
        // The key before the one leaving is forgotten; the one leaving (`capacity` predictions came after it) is
        // remembered, and keeps its mark in the index.
        let (forgotten, leaving) = {
            let slot = &self.ring[at];
            (
                (slot.previous_fate != Fate::Empty).then_some(slot.previous),
                slot.key,
            )
        };
        if let Some(forgotten) = forgotten {
            // It came `2 × capacity` arrivals before this one: its mark is this one's.
            self.unindex(forgotten, self.marks().of(seq));
        }
        // From here on the slot's marks read as the new arrival's: the one leaving is before it.
        self.next_seq += 1;
        let model = self.model_of(&entry);
        self.models[model.index()].1 += 1;
        self.waiting += 1;
        let old = self.ring[at].entry.take();
        let mut fate = self.ring[at].fate;
        if let Some(old) = old {
            fate = self.left(old, Dropped::Capacity, &mut dropped);
        }
        let slot = &mut self.ring[at];
        slot.previous = leaving;
        slot.previous_fate = fate;
        slot.key = key;
        slot.fate = Fate::Waiting;
        slot.entry = Some(entry);
        let (ring, marks) = (&self.ring, self.marks());
        self.index
            .insert_unique(key, marks.of(seq), |&mark| marks.key(ring, mark));
        self.front = self
            .front
            .max((seq + 1).saturating_sub(self.capacity as u64));
    }

    /// Removes predictions older than `max_age`; `dropped` is told of those that left unlabelled.
    pub fn expire_now(&mut self, mut dropped: impl FnMut(ModelId, Dropped)) {
        let now = self.now();
        self.expire(now, &mut dropped);
    }

    fn expire(&mut self, now: u32, dropped: &mut impl FnMut(ModelId, Dropped)) {
        while self.front < self.next_seq {
            let at = self.position(self.front);
            // The prediction waiting in the front's slot is the front's: every later one of that slot is younger
            // than `capacity` arrivals.
            if let Some(entry) = &self.ring[at].entry {
                if now.wrapping_sub(entry.at) < self.max_age_ticks {
                    return;
                }
                if let Some(old) = self.ring[at].entry.take() {
                    self.ring[at].fate = self.left(old, Dropped::Expired, dropped);
                }
            }
            self.front += 1;
        }
    }

    /// A prediction left without being taken: unlabelled ones are dropped (a truth for them is late); labelled ones
    /// only waited for their shadow. Returns what its slot remembers of it.
    fn left(
        &mut self,
        old: Entry,
        why: Dropped,
        dropped: &mut impl FnMut(ModelId, Dropped),
    ) -> Fate {
        let model = self.model_of(&old);
        self.waiting -= 1;
        self.models[model.index()].1 -= 1;
        if old.labelled() {
            Fate::Labelled
        } else {
            dropped(model, why);
            Fate::Gone
        }
    }

    /// The entry a truth names, if it is still waiting.
    pub fn lookup(&mut self, key: u64) -> Lookup<'_> {
        let Some(Found { at, fate, .. }) = self.find(key) else {
            return Lookup::Unknown;
        };
        match fate {
            Fate::Empty => Lookup::Unknown,
            Fate::Labelled => Lookup::Duplicate,
            Fate::Gone => Lookup::Late,
            Fate::Waiting => {
                let now = self.now();
                let (max_age, variants, series) =
                    (self.max_age_ticks, &self.variants, &self.series);
                let Some(entry) = self.ring[at].entry.as_mut() else {
                    return Lookup::Unknown;
                };
                if entry.labelled() {
                    Lookup::Duplicate
                } else if now.wrapping_sub(entry.at) >= max_age {
                    // Left for `expire` to count: it leaves in arrival order.
                    Lookup::Late
                } else {
                    let origin = series[entry.series.0 as usize];
                    let served = Served {
                        version: origin.version,
                        variant: &*variants[origin.variant as usize],
                    };
                    Lookup::Waiting(entry, served)
                }
            }
        }
    }

    /// Takes a labelled entry out for good (a later truth for it is a duplicate), with whose prediction it is.
    pub fn take(&mut self, key: u64) -> Option<(Entry, Served<Arc<str>>)> {
        let at = self.waiting_at(key)?;
        let slot = &mut self.ring[at];
        let entry = slot.entry.take()?;
        slot.fate = Fate::Labelled;
        let origin = self.origin(&entry);
        self.waiting -= 1;
        self.models[origin.model as usize].1 -= 1;
        let served = Served {
            version: origin.version,
            variant: Arc::clone(&self.variants[origin.variant as usize]),
        };
        Some((entry, served))
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut Entry> {
        let at = self.waiting_at(key)?;
        self.ring[at].entry.as_mut()
    }

    /// The slot of a waiting key.
    fn waiting_at(&self, key: u64) -> Option<usize> {
        self.find(key)
            .filter(|found| found.fate == Fate::Waiting)
            .map(|found| found.at)
    }

    /// What the store's bookkeeping holds (waiting predictions, ring slots, keys indexed): for the bound test.
    pub fn footprint(&self) -> (usize, usize, usize) {
        (self.waiting, self.ring.len(), self.index.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(series: SeriesId) -> Entry {
        Entry::new(series, Kept::Value(1.0), false)
    }

    /// A million predictions through a store capped at 100,000: it never holds more than its cap, its bookkeeping
    /// stays within it, and every prediction pushed out is counted.
    #[test]
    fn a_million_predictions_stay_within_the_cap() {
        let keys = Keys::default();
        let mut store = Store::new(100_000, Duration::from_secs(3600));
        let (m, series) = store.series("m", 1, "stable");
        let mut dropped = 0usize;
        for i in 0..1_000_000u64 {
            store.insert(
                keys.key("m", &i.to_string()),
                entry(series),
                |model, why| {
                    assert_eq!((model, why), (m, Dropped::Capacity));
                    dropped += 1;
                },
            );
            let (entries, slots, keys) = store.footprint();
            assert!(entries <= 100_000 && slots <= 100_000 && keys <= 200_000);
        }
        assert_eq!(store.len(), 100_000);
        assert_eq!(dropped, 900_000);
        assert_eq!(std::mem::size_of::<Slot>(), 64);
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
            Lookup::Waiting(..)
        ));
        assert!(matches!(
            store.lookup(keys.key("m", "999999")),
            Lookup::Waiting(..)
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
        let ((_, series_a), (b, series_b)) = (
            store.series("a", 1, "stable"),
            store.series("b", 1, "stable"),
        );
        let mut dropped = Vec::new();
        for i in 0..4 {
            let series = if i % 2 == 0 { series_a } else { series_b };
            let name = if i % 2 == 0 { "a" } else { "b" };
            store.insert(keys.key(name, &i.to_string()), entry(series), |m, w| {
                dropped.push((m, w))
            });
        }
        assert_eq!((store.pending("a"), store.pending("b")), (2, 2));
        // Labelled and taken: its slot is empty when the ring comes round to it.
        assert!(store.take(keys.key("a", "0")).is_some());
        store.insert(keys.key("a", "4"), entry(series_a), |m, w| {
            dropped.push((m, w))
        });
        assert!(dropped.is_empty());
        // The next one pushes out the oldest waiting, "1" of b.
        store.insert(keys.key("a", "5"), entry(series_a), |m, w| {
            dropped.push((m, w))
        });
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
        let (m, series) = store.series("m", 1, "stable");
        let a = keys.key("m", "a");
        let mut dropped = Vec::new();
        store.insert(a, entry(series), |m, w| dropped.push((m, w)));
        assert!(dropped.is_empty());
        store.insert(a, entry(series), |m, w| dropped.push((m, w)));
        assert_eq!(dropped, vec![(m, Dropped::Replaced)]);
        assert_eq!(store.pending("m"), 1);
        // Ages are counted in 16-ms ticks: well past 50 ms.
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(store.lookup(a), Lookup::Late));
        dropped.clear();
        store.expire_now(|m, w| dropped.push((m, w)));
        assert_eq!(dropped, vec![(m, Dropped::Expired)]);
        assert!(matches!(store.lookup(a), Lookup::Late));
        assert!(store.is_empty());
        assert_eq!(store.pending("m"), 0);
    }

    /// What the store answers equals a plain account of the rule: a key waits for `capacity` arrivals after its
    /// own, is remembered for `capacity` more (labelled or gone), and a new prediction under a key replaces it.
    mod against_the_rule {
        use std::collections::HashMap;

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Insert(u8),
            Label(u8),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u8..24).prop_map(Op::Insert),
                1 => (0u8..24).prop_map(Op::Label),
            ]
        }

        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Known {
            Waiting(u64),
            Labelled(u64),
        }

        proptest! {
            #[test]
            fn answers_follow_the_rule(capacity in 1usize..9, ops in prop::collection::vec(op(), 1..400)) {
                let keys = Keys::default();
                let mut store = Store::new(capacity, Duration::from_secs(3600));
                let (_, series) = store.series("m", 1, "stable");
                let cap = capacity as u64;
                let mut known: HashMap<u8, Known> = HashMap::new();
                let mut seq = 0u64;
                let (mut dropped, mut expected_dropped) = (0usize, 0usize);
                for op in ops {
                    match op {
                        Op::Insert(k) => {
                            if let Some(Known::Waiting(s)) = known.get(&k) {
                                if seq <= s + cap {
                                    expected_dropped += 1;
                                }
                            }
                            // The one `capacity` arrivals back leaves now, unless labelled or replaced.
                            if seq >= cap {
                                let leaving = known.iter().any(|(other, v)| *other != k && *v == Known::Waiting(seq - cap));
                                if leaving {
                                    expected_dropped += 1;
                                }
                            }
                            store.insert(keys.key("m", &k.to_string()), entry(series), |_, _| dropped += 1);
                            known.insert(k, Known::Waiting(seq));
                            seq += 1;
                        }
                        Op::Label(k) => {
                            let key = keys.key("m", &k.to_string());
                            let expected = match known.get(&k) {
                                None => "unknown",
                                Some(Known::Waiting(s)) if seq <= s + cap => "waiting",
                                Some(Known::Waiting(s)) | Some(Known::Labelled(s)) if seq > s + 2 * cap => "unknown",
                                Some(Known::Waiting(_)) => "late",
                                Some(Known::Labelled(_)) => "duplicate",
                            };
                            let got = match store.lookup(key) {
                                Lookup::Waiting(..) => "waiting",
                                Lookup::Late => "late",
                                Lookup::Duplicate => "duplicate",
                                Lookup::Unknown => "unknown",
                            };
                            prop_assert_eq!(got, expected, "key {} at arrival {}", k, seq);
                            if got == "waiting" {
                                let s = match known[&k] { Known::Waiting(s) | Known::Labelled(s) => s };
                                prop_assert!(store.take(key).is_some());
                                known.insert(k, Known::Labelled(s));
                            }
                        }
                    }
                    let waiting = known.values().filter(|v| matches!(v, Known::Waiting(s) if seq <= s + cap)).count();
                    prop_assert_eq!(store.len(), waiting);
                    prop_assert_eq!(store.pending("m"), waiting);
                    prop_assert!(store.footprint().2 <= 2 * capacity);
                }
                prop_assert_eq!(dropped, expected_dropped);
            }
        }
    }
}
