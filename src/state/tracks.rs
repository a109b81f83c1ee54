//! The tracks of the state: the records in the database, the ones changed since the last
//! save in memory.
//!
//! A sync of one playlist reads that playlist's records and changes a few; it has no use for
//! the other 100,000. So a read asks the database for one row and keeps nothing, and a change
//! keeps the one record in memory until the next save writes it in a transaction. Memory is
//! what changed since the last save, whatever the size of the state (benchmark B5, MEM).
//!
//! Invariants:
//! - A record in `changed` is the newest value of its track: it wins over the database
//!   until a save writes it and lets it go ([`Tracks::take_changed`]).
//! - Every read that can fail says so ([`StateError`]), never a panic.

use super::StateError;
use super::TrackState;
use super::db::{self, Db};
use crate::model::TrackKey;
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

/// The tracks of the state, by key, in key order.
#[derive(Clone, Default)]
pub struct Tracks {
    /// The database and its path (for errors); `None` before the first save.
    db: Option<(Db, PathBuf)>,
    changed: BTreeMap<TrackKey, TrackState>,
}

/// Records read at once by [`Tracks::iter`].
const PAGE: usize = 512;

impl Tracks {
    pub(super) fn backed_by(db: Db, path: PathBuf) -> Tracks {
        Tracks {
            db: Some((db, path)),
            changed: BTreeMap::new(),
        }
    }

    pub(super) fn db(&self) -> Option<&(Db, PathBuf)> {
        self.db.as_ref()
    }

    /// Runs `f` on the connection; `default` when there is no database yet.
    fn query<T>(
        &self,
        default: T,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        match &self.db {
            None => Ok(default),
            Some((db, path)) => f(&db.lock().expect("state database")).map_err(db::sql_err(path)),
        }
    }

    /// How many tracks there are (0 if the database cannot be read; reads that matter
    /// return the error).
    pub fn len(&self) -> usize {
        let stored = self.query(0, db::count_tracks).unwrap_or(0);
        let new = self
            .changed
            .keys()
            .filter(|k| !self.query(false, |c| db::has_track(c, k)).unwrap_or(false))
            .count();
        stored + new
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_key(&self, key: &TrackKey) -> Result<bool, StateError> {
        if self.changed.contains_key(key) {
            return Ok(true);
        }
        self.query(false, |c| db::has_track(c, key))
    }

    /// The record of `key`, read from the database when it is not in memory; nothing is kept.
    pub fn get(&self, key: &TrackKey) -> Result<Option<Cow<'_, TrackState>>, StateError> {
        if let Some(t) = self.changed.get(key) {
            return Ok(Some(Cow::Borrowed(t)));
        }
        Ok(self
            .query(None, |c| db::read_track(c, key))?
            .map(Cow::Owned))
    }

    /// The record of `key` to change: it stays in memory until the next save writes it.
    pub fn get_mut(&mut self, key: &TrackKey) -> Result<Option<&mut TrackState>, StateError> {
        if !self.changed.contains_key(key) {
            let Some(t) = self.query(None, |c| db::read_track(c, key))? else {
                return Ok(None);
            };
            self.changed.insert(key.clone(), t);
        }
        Ok(self.changed.get_mut(key))
    }

    /// Adds or replaces a record; it stays in memory until the next save writes it.
    pub fn insert(&mut self, key: TrackKey, value: TrackState) {
        self.changed.insert(key, value);
    }

    /// Every key, in order.
    pub fn keys(&self) -> Result<Vec<TrackKey>, StateError> {
        self.iter().map(|r| r.map(|(k, _)| k)).collect()
    }

    /// Every record in key order, read from the database a page at a time.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = Result<(TrackKey, Cow<'_, TrackState>), StateError>> {
        Merge {
            tracks: self,
            page: VecDeque::new(),
            after: None,
            exhausted: self.db.is_none(),
            mem: self.changed.iter().peekable(),
        }
    }

    /// The records changed since the last save, for the save to write; they leave memory.
    pub(super) fn take_changed(&mut self) -> BTreeMap<TrackKey, TrackState> {
        std::mem::take(&mut self.changed)
    }

    /// Puts back what [`Tracks::take_changed`] took, when the save failed; newer changes win.
    pub(super) fn restore_changed(&mut self, records: BTreeMap<TrackKey, TrackState>) {
        for (k, t) in records {
            self.changed.entry(k).or_insert(t);
        }
    }

    pub(super) fn changed_keys(&self) -> impl Iterator<Item = TrackKey> + '_ {
        self.changed.keys().cloned()
    }

    pub(super) fn has_changes(&self) -> bool {
        !self.changed.is_empty()
    }

    /// How many records are in memory (changed since the last save).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.changed.len()
    }
}

/// The database's records merged with the ones changed in memory, in key order.
struct Merge<'a> {
    tracks: &'a Tracks,
    page: VecDeque<(TrackKey, TrackState)>,
    after: Option<TrackKey>,
    exhausted: bool,
    mem: std::iter::Peekable<std::collections::btree_map::Iter<'a, TrackKey, TrackState>>,
}

impl<'a> Iterator for Merge<'a> {
    type Item = Result<(TrackKey, Cow<'a, TrackState>), StateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.page.is_empty() && !self.exhausted {
            let after = self.after.take();
            match self.tracks.query(Vec::new(), |c| {
                db::read_tracks_after(c, after.as_ref(), PAGE)
            }) {
                Ok(rows) => {
                    self.exhausted = rows.len() < PAGE;
                    self.after = rows.last().map(|(k, _)| k.clone());
                    self.page = rows.into();
                }
                Err(e) => {
                    self.exhausted = true;
                    return Some(Err(e));
                }
            }
        }
        let order = match (self.mem.peek(), self.page.front()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((m, _)), Some((d, _))) => (*m).cmp(d),
        };
        if order == Ordering::Equal {
            // Changed since the last save: the database's copy is older.
            self.page.pop_front();
        }
        let from_mem = order != Ordering::Greater;
        Some(Ok(if from_mem {
            let (k, t) = self.mem.next().expect("peeked");
            (k.clone(), Cow::Borrowed(t))
        } else {
            let (k, t) = self.page.pop_front().expect("looked at");
            (k, Cow::Owned(t))
        }))
    }
}

impl std::fmt::Debug for Tracks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tracks({} records, {} in memory)",
            self.len(),
            self.changed.len()
        )
    }
}

impl PartialEq for Tracks {
    /// Same keys and same records, wherever each is kept. A record that cannot be read makes
    /// them unequal.
    fn eq(&self, other: &Tracks) -> bool {
        let mut a = self.iter();
        let mut b = other.iter();
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(Ok(x)), Some(Ok(y))) if x == y => {}
                _ => return false,
            }
        }
    }
}

impl serde::Serialize for Tracks {
    /// A map of key to record: the form of `state.json`, which the import reads.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let mut map = s.serialize_map(None)?;
        for entry in self.iter() {
            let (k, t) = entry.map_err(S::Error::custom)?;
            map.serialize_entry(&k, &*t)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Tracks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let changed = BTreeMap::<TrackKey, TrackState>::deserialize(d)?;
        Ok(Tracks { db: None, changed })
    }
}

impl FromIterator<(TrackKey, TrackState)> for Tracks {
    fn from_iter<I: IntoIterator<Item = (TrackKey, TrackState)>>(iter: I) -> Self {
        Tracks {
            db: None,
            changed: iter.into_iter().collect(),
        }
    }
}
