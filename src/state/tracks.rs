//! The tracks of the state: an index in memory, the records on disk.
//!
//! A sync of one playlist reads the records of that playlist's tracks, and changes a few; it
//! has no use for the other 100,000 in memory. So the state keeps, per track, only its key and
//! where its record is: a byte range of the snapshot, a byte range of the journal, or, for a
//! record changed since the last save, the record itself. A save writes the changed records
//! and lets them go; a read parses the record from its file and keeps nothing. Memory is
//! then about 80 bytes a track plus what changed since the last save, whatever the size of the
//! state or of the playlist being synced (issue 5, benchmark MEM).
//!
//! Invariants:
//! - The files read from are never changed in place: saves append to the journal, or write a
//!   new snapshot and rename it over the old one. A range recorded at load stays valid as long
//!   as the handle is open, even once the name points to a newer file.
//! - Every record on disk was parsed when it was indexed (the load checks the whole file), so
//!   a read fails only if the disk does, or if someone wrote into the file in place while
//!   playlistd held it; either is an error that says so, never a panic.
//! - A record in memory is the newest value of its track: it wins over the files until a
//!   save writes it and records where.

use super::{StateError, TrackState};
use crate::model::TrackKey;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file records are read back from, with its name for errors.
#[derive(Debug)]
pub(super) struct Backing {
    file: File,
    path: PathBuf,
}

impl Backing {
    pub(super) fn new(file: File, path: &Path) -> Arc<Backing> {
        Arc::new(Backing {
            file,
            path: path.to_path_buf(),
        })
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    fn read(&self, range: Range) -> Result<Vec<u8>, StateError> {
        let mut buf = vec![0; range.len as usize];
        match self.file.read_exact_at(&mut buf, range.at) {
            Ok(()) => Ok(buf),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(self.changed(format!(
                "it is shorter than when it was read, at byte {}",
                range.at
            ))),
            Err(source) => Err(StateError::Io {
                action: "read back",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The file was written in place (saves never do that), so its ranges are stale.
    fn changed(&self, reason: String) -> StateError {
        StateError::ChangedInUse {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Where a record's JSON is in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub at: u64,
    pub len: u32,
}

/// Where one track's record is.
#[derive(Debug, Clone)]
pub(super) enum Slot {
    /// Changed since the last save (or loaded from a file in another layout).
    Mem(Box<TrackState>),
    Snapshot(Range),
    Journal(Range),
}

/// The tracks of the state, by key, in key order.
#[derive(Clone, Default)]
pub struct Tracks {
    slots: BTreeMap<TrackKey, Slot>,
    snapshot: Option<Arc<Backing>>,
    journal: Option<Arc<Backing>>,
}

impl Tracks {
    pub(super) fn indexed(
        slots: impl IntoIterator<Item = (TrackKey, Slot)>,
        snapshot: Option<Arc<Backing>>,
    ) -> Tracks {
        Tracks {
            // From sorted keys this builds the tree in one pass; a key given twice keeps its
            // last value, as a JSON object would.
            slots: slots.into_iter().collect(),
            snapshot,
            journal: None,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn contains_key(&self, key: &TrackKey) -> bool {
        self.slots.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &TrackKey> {
        self.slots.keys()
    }

    /// The record of `key`, read from its file when it is not in memory; nothing is kept.
    pub fn get(&self, key: &TrackKey) -> Result<Option<Cow<'_, TrackState>>, StateError> {
        match self.slots.get(key) {
            None => Ok(None),
            Some(slot) => self.read(key, slot).map(Some),
        }
    }

    /// The record of `key` to change: it stays in memory until the next save writes it.
    pub fn get_mut(&mut self, key: &TrackKey) -> Result<Option<&mut TrackState>, StateError> {
        let Some(slot) = self.slots.get(key) else {
            return Ok(None);
        };
        if !matches!(slot, Slot::Mem(_)) {
            let record = self.read(key, slot)?.into_owned();
            self.slots.insert(key.clone(), Slot::Mem(Box::new(record)));
        }
        match self.slots.get_mut(key) {
            Some(Slot::Mem(record)) => Ok(Some(record)),
            _ => unreachable!("the record was just put in memory"),
        }
    }

    /// Adds or replaces a record; it stays in memory until the next save writes it.
    pub fn insert(&mut self, key: TrackKey, value: TrackState) {
        self.slots.insert(key, Slot::Mem(Box::new(value)));
    }

    /// Every record in key order, each read when its turn comes.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = Result<(&TrackKey, Cow<'_, TrackState>), StateError>> {
        self.slots
            .iter()
            .map(|(k, slot)| self.read(k, slot).map(|t| (k, t)))
    }

    fn read<'a>(
        &'a self,
        key: &TrackKey,
        slot: &'a Slot,
    ) -> Result<Cow<'a, TrackState>, StateError> {
        let (backing, range) = match slot {
            Slot::Mem(record) => return Ok(Cow::Borrowed(record)),
            Slot::Snapshot(r) => (&self.snapshot, *r),
            Slot::Journal(r) => (&self.journal, *r),
        };
        let backing = backing
            .as_ref()
            .expect("a record on disk has the file it is in");
        let bytes = backing.read(range)?;
        serde_json::from_slice(&bytes)
            .map(Cow::Owned)
            .map_err(|e| backing.changed(format!("track {key} no longer reads: {e}")))
    }

    /// How many records are in memory (changed since the last save).
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Mem(_)))
            .count()
    }

    pub(super) fn slots(&self) -> &BTreeMap<TrackKey, Slot> {
        &self.slots
    }

    /// The record of `key` when it is in memory (changed since the last save).
    pub(super) fn in_memory(&self, key: &TrackKey) -> Option<&TrackState> {
        match self.slots.get(key) {
            Some(Slot::Mem(record)) => Some(record),
            _ => None,
        }
    }

    /// Records that `key`'s newest value is at `range` of the journal.
    pub(super) fn journaled(&mut self, key: TrackKey, range: Range) {
        self.slots.insert(key, Slot::Journal(range));
    }

    pub(super) fn set_journal(&mut self, journal: Arc<Backing>) {
        self.journal = Some(journal);
    }

    pub(super) fn journal(&self) -> Option<&Arc<Backing>> {
        self.journal.as_ref()
    }

    pub(super) fn snapshot(&self) -> Option<&Arc<Backing>> {
        self.snapshot.as_ref()
    }

    /// After a new snapshot is in place: every record is now at `ranges` (in key order) of
    /// `snapshot`, and the journal is folded in.
    pub(super) fn rebased(&mut self, snapshot: Arc<Backing>, ranges: Vec<Range>) {
        debug_assert_eq!(ranges.len(), self.slots.len());
        for (slot, range) in self.slots.values_mut().zip(ranges) {
            *slot = Slot::Snapshot(range);
        }
        self.snapshot = Some(snapshot);
        self.journal = None;
    }
}

/// Reads ranges of one file through a window, so that reading the records of a snapshot in
/// the order they were written costs a few large reads, not one small read per record.
pub(super) struct Reader<'a> {
    backing: Option<&'a Backing>,
    window: Vec<u8>,
    window_at: u64,
}

/// How much a [`Reader`] reads at once (see `SAVE_BUFFER` in the parent module).
const WINDOW: usize = 256 << 10;

impl<'a> Reader<'a> {
    pub(super) fn new(backing: Option<&'a Arc<Backing>>) -> Reader<'a> {
        Reader {
            backing: backing.map(|b| &**b),
            window: Vec::new(),
            window_at: 0,
        }
    }

    pub(super) fn read(&mut self, range: Range) -> Result<&[u8], StateError> {
        let backing = self
            .backing
            .expect("a record on disk has the file it is in");
        let end = range.at + u64::from(range.len);
        let window_end = self.window_at + self.window.len() as u64;
        let inside = range.at >= self.window_at && end <= window_end;
        if !inside {
            // Ahead, as in a file written in key order: a new window. Elsewhere (a file
            // edited out of order, the journal): just the record.
            let ahead = range.at >= window_end && range.at - window_end < WINDOW as u64;
            let want = if ahead {
                (range.len as usize).max(WINDOW)
            } else {
                range.len as usize
            };
            self.window.resize(want, 0);
            let mut filled = 0;
            while filled < want {
                match backing
                    .file
                    .read_at(&mut self.window[filled..], range.at + filled as u64)
                {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(source) => {
                        return Err(StateError::Io {
                            action: "read back",
                            path: backing.path.clone(),
                            source,
                        });
                    }
                }
            }
            self.window.truncate(filled);
            self.window_at = range.at;
            if filled < range.len as usize {
                return Err(backing.changed(format!(
                    "it is shorter than when it was read, at byte {}",
                    range.at
                )));
            }
        }
        let start = (range.at - self.window_at) as usize;
        Ok(&self.window[start..start + range.len as usize])
    }
}

impl std::fmt::Debug for Tracks {
    /// The keys and where each record is; the records themselves are in the files.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Mem(_)))
            .count();
        write!(f, "Tracks({} records, {held} in memory)", self.len())
    }
}

impl PartialEq for Tracks {
    /// Same keys and same records, wherever each is kept. A record that cannot be read makes
    /// them unequal.
    fn eq(&self, other: &Tracks) -> bool {
        self.len() == other.len()
            && self.iter().zip(other.iter()).all(|(a, b)| match (a, b) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            })
    }
}

impl serde::Serialize for Tracks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeMap};
        let mut map = s.serialize_map(Some(self.len()))?;
        for entry in self.iter() {
            let (k, t) = entry.map_err(S::Error::custom)?;
            map.serialize_entry(k, &*t)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Tracks {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<TrackKey, TrackState>::deserialize(d)?;
        Ok(map.into_iter().collect())
    }
}

impl FromIterator<(TrackKey, TrackState)> for Tracks {
    fn from_iter<I: IntoIterator<Item = (TrackKey, TrackState)>>(iter: I) -> Self {
        Tracks::indexed(
            iter.into_iter().map(|(k, t)| (k, Slot::Mem(Box::new(t)))),
            None,
        )
    }
}
