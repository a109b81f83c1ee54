//! The "analysis + formats" arrow: what a downloaded file becomes for a DJ library. One decode
//! pass feeds both the AIFF/WAV copies and the span the analysis reads; then the tempo and key
//! go into the copies' tags and the original's.
//!
//! Invariants:
//! - the work runs on the blocking pool, at most one track per core at once ([`Library`]),
//!   never on the async runtime's threads;
//! - a copy that exists is never written again (a person's file, or an earlier run's), and a
//!   copy appears under its name only complete and tagged ([`formats`]);
//! - tags already in the original stay ([`tags::Mode::FillMissing`]): only what is missing is
//!   added, and TBPM/TKEY that a person or DJ software wrote stay unless `overwrite_analysis`;
//! - a file that cannot be decoded is an outcome ([`Outcome::CannotDecode`]), not an error:
//!   the caller records it once and never retries it.

use super::analysis::{self, Key, TempoRange};
use super::decode::{self, DecodeError};
use super::formats::{self, FormatError, Kind, Spec};
use super::tags::{self, TagError, Tags};
use crate::config::{Format, LibraryConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// What the analysis said of one file.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Outcome {
    /// `download.analyze` is off.
    #[default]
    NotAsked,
    /// Either may be `None`: no beat, or no harmony, to measure.
    Measured {
        tempo: Option<f64>,
        key: Option<Key>,
    },
    /// The file is in a codec the decoder does not read (e.g. Opus from yt-dlp).
    CannotDecode(String),
}

/// The result for one file: the analysis, and the copies now beside it (made now or before).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prepared {
    pub analysis: Outcome,
    pub copies: Vec<(Format, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error("the AIFF/WAV copy: {0}")]
    Format(#[from] FormatError),
    #[error("tagging: {0}")]
    Tag(#[from] TagError),
    #[error("{0}")]
    Read(DecodeError),
    #[error("the analysis was stopped")]
    Stopped,
}

/// One downloaded file and what its tags say.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    pub title: String,
    pub artist: String,
    /// The playlist's name.
    pub album: String,
    pub genre: Option<String>,
    /// The track's canonical URL, the tags' comment.
    pub url: String,
    /// How long the track plays, as listed: where the middle is when the file does not say.
    pub duration_ms: Option<u64>,
    /// Replace TBPM/TKEY already in the original's tags.
    pub overwrite_analysis: bool,
}

/// The stage's pool: its configuration and one permit per core.
#[derive(Clone)]
pub struct Library {
    cfg: Arc<LibraryConfig>,
    permits: Arc<Semaphore>,
}

impl Library {
    pub fn new(cfg: &LibraryConfig) -> Library {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Library {
            cfg: Arc::new(cfg.clone()),
            permits: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Anything to do at all with a downloaded file.
    pub fn has_work(&self) -> bool {
        self.cfg.any_work()
    }

    /// Analyses `item` and writes its missing copies, on the blocking pool.
    pub async fn prepare(&self, item: Item) -> Result<Prepared, LibraryError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LibraryError::Stopped)?;
        let cfg = self.cfg.clone();
        tokio::task::spawn_blocking(move || prepare(&cfg, &item))
            .await
            .map_err(|_| LibraryError::Stopped)?
    }
}

/// The path of `original`'s copy in `format`: beside it, the same name.
pub fn copy_path(original: &Path, format: Format) -> Option<PathBuf> {
    format.extension().map(|e| original.with_extension(e))
}

/// The blocking work for one file (see the module invariants).
pub fn prepare(cfg: &LibraryConfig, item: &Item) -> Result<Prepared, LibraryError> {
    let copies: Vec<(Format, PathBuf)> = cfg
        .copies()
        .filter_map(|f| copy_path(&item.path, f).map(|p| (f, p)))
        .collect();
    let missing: Vec<(Kind, PathBuf)> = copies
        .iter()
        .filter(|(_, p)| !p.exists())
        .map(|(f, p)| (kind(*f), p.clone()))
        .collect();
    if !cfg.analyze && missing.is_empty() {
        return Ok(Prepared {
            analysis: Outcome::NotAsked,
            copies,
        });
    }
    let pass = match one_pass(cfg, item, &missing) {
        Ok(p) => p,
        Err(LibraryError::Read(DecodeError::Unsupported(why))) => {
            return Ok(Prepared {
                analysis: Outcome::CannotDecode(why),
                copies: existing(copies),
            });
        }
        Err(e) => return Err(e),
    };
    let analysis = if cfg.analyze {
        let range = TempoRange {
            min: cfg.tempo_range.0,
            max: cfg.tempo_range.1,
        };
        let a = analysis::analyze(&pass.span, pass.rate, range);
        Outcome::Measured {
            tempo: a.tempo.map(|t| t.bpm),
            key: a.key.map(|k| k.key),
        }
    } else {
        Outcome::NotAsked
    };
    let (tempo, key) = match &analysis {
        Outcome::Measured { tempo, key } => (*tempo, *key),
        _ => (None, None),
    };
    let cover = cover_of(&item.path);
    let (short, camelot) = (key.map(|k| k.short()), key.map(|k| k.camelot()));
    let t = Tags {
        title: &item.title,
        artist: &item.artist,
        album: &item.album,
        genre: item.genre.as_deref(),
        comment: &item.url,
        cover: cover.as_deref(),
        tempo,
        key_short: short,
        key_camelot: camelot,
    };
    if let Some(job) = pass.job {
        job.commit(&t)?;
    }
    // The original's own tags: a container the tagger does not know (what yt-dlp made of a
    // site other than SoundCloud) keeps its file as it is.
    if tags::Container::from_path(&item.path).is_ok() {
        let mode = tags::Mode::FillMissing {
            overwrite_analysis: item.overwrite_analysis,
        };
        tags::write(&item.path, &t, mode)?;
    }
    Ok(Prepared {
        analysis,
        copies: existing(copies),
    })
}

fn kind(f: Format) -> Kind {
    match f {
        Format::Aiff => Kind::Aiff,
        _ => Kind::Wav,
    }
}

fn existing(copies: Vec<(Format, PathBuf)>) -> Vec<(Format, PathBuf)> {
    copies.into_iter().filter(|(_, p)| p.exists()).collect()
}

/// What one decode pass leaves: the copies' PCM (not yet tagged or in place) and the mono
/// span the analysis reads.
struct Pass {
    job: Option<formats::Pending>,
    span: Vec<f32>,
    rate: u32,
}

fn one_pass(
    cfg: &LibraryConfig,
    item: &Item,
    missing: &[(Kind, PathBuf)],
) -> Result<Pass, LibraryError> {
    let mut reader = decode::open(&item.path).map_err(LibraryError::Read)?;
    let (rate, channels) = (reader.rate(), reader.channels());
    let mut job = if missing.is_empty() {
        None
    } else {
        let spec = Spec {
            bits: cfg.pcm_bits,
            rate: cfg.sample_rate,
        };
        Some(formats::Job::create(missing, rate, channels, spec)?)
    };
    // The middle of the track, by the frames the file announces, else by its listed length;
    // the span is cut short where the audio ends.
    let listed = item.duration_ms.map(|ms| ms * u64::from(rate) / 1000);
    let total = reader
        .frames_hint()
        .or(listed)
        .unwrap_or(analysis::SPAN_SECS * u64::from(rate));
    let span = if cfg.analyze {
        analysis::span(total, rate)
    } else {
        0..0
    };
    let mut mono = Vec::with_capacity(
        usize::try_from(span.end - span.start)
            .unwrap_or(0)
            .min(1 << 24),
    );
    let ch = usize::from(channels.max(1));
    let mut at: u64 = 0;
    while let Some(block) = reader.next_block().map_err(LibraryError::Read)? {
        if let Some(j) = job.as_mut() {
            j.push(block)?;
        }
        let frames = (block.len() / ch) as u64;
        let (lo, hi) = (span.start.max(at), span.end.min(at + frames));
        for f in lo..hi {
            let i = ((f - at) as usize) * ch;
            mono.push(block[i..i + ch].iter().sum::<f32>() / ch as f32);
        }
        at += frames;
    }
    let job = job.map(formats::Job::finish).transpose()?;
    Ok(Pass {
        job,
        span: mono,
        rate,
    })
}

/// The cover in the original's tags, for the copies (the download put it there).
fn cover_of(path: &Path) -> Option<Vec<u8>> {
    match tags::Container::from_path(path).ok()? {
        tags::Container::M4a => mp4ameta::Tag::read_from_path(path)
            .ok()?
            .artwork()
            .map(|img| img.data.to_vec()),
        tags::Container::Mp3 => id3::Tag::read_from_path(path)
            .ok()?
            .pictures()
            .next()
            .map(|p| p.data.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(path: &Path) -> Item {
        Item {
            path: path.to_path_buf(),
            title: "Groove".into(),
            artist: "Band".into(),
            album: "Warmup".into(),
            genre: Some("House".into()),
            url: "https://soundcloud.com/band/groove".into(),
            duration_ms: Some(30_000),
            overwrite_analysis: false,
        }
    }

    fn config(formats: &[Format], analyze: bool) -> LibraryConfig {
        LibraryConfig {
            formats: formats.to_vec(),
            analyze,
            ..LibraryConfig::default()
        }
    }

    #[test]
    fn one_pass_measures_the_groove_and_makes_the_copy_once() {
        // The fake's AAC is an A-minor groove at 120 BPM (crates/fakes/fixtures/README.md).
        let (_tmp, m4a, _) = super::super::tests::remux(30_000);
        let cfg = config(&[Format::Original, Format::Wav], true);
        let p = prepare(&cfg, &item(&m4a)).unwrap();
        let Outcome::Measured { tempo, key } = p.analysis else {
            panic!("{:?}", p.analysis)
        };
        assert_eq!(key.map(|k| k.standard()), Some("A Minor"));
        assert!((tempo.unwrap() - 120.0).abs() <= 0.2, "{tempo:?}");
        let wav = m4a.with_extension("wav");
        assert_eq!(p.copies, vec![(Format::Wav, wav.clone())]);
        let made = std::fs::metadata(&wav).unwrap().modified().unwrap();

        // Again, without analysis: the copy is there and is not written again.
        let p = prepare(
            &config(&[Format::Original, Format::Wav], false),
            &item(&m4a),
        )
        .unwrap();
        assert_eq!(p.analysis, Outcome::NotAsked);
        assert_eq!(p.copies, vec![(Format::Wav, wav.clone())]);
        assert_eq!(std::fs::metadata(&wav).unwrap().modified().unwrap(), made);
    }

    #[test]
    fn a_file_that_cannot_be_decoded_is_an_outcome_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("Band - Groove [1].mp3");
        std::fs::write(&path, b"not audio at all, but named like it").unwrap();
        let cfg = config(&[Format::Original, Format::Aiff], true);
        let p = prepare(&cfg, &item(&path)).unwrap();
        assert!(matches!(p.analysis, Outcome::CannotDecode(_)), "{p:?}");
        assert!(p.copies.is_empty());
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no copy and no temporary file: {left:?}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"not audio at all, but named like it",
            "the file itself is untouched"
        );
    }
}
