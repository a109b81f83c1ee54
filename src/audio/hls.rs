//! HLS: a signed media playlist, its `#EXT-X-MAP` init segment and its media segments, fetched a
//! few at a time and handed on in order.
//!
//! Invariants:
//! - segments reach the sink strictly in playlist order, each exactly once;
//! - a 403 (an expired signature) renews the signed URL and reloads the playlist, and the fetch
//!   goes on from the first segment not yet handed on, never from zero; a renewed playlist must
//!   list the same segments, or the download fails rather than splice two encodings;
//! - at most [`MAX_RENEWALS`] renewals per track, so a CDN that refuses every URL ends the
//!   download instead of looping.

use super::media_http::{MediaError, get_bytes};
use super::{NativeError, Session};
use std::collections::BTreeMap;
use tokio::task::JoinSet;
use url::Url;

pub(super) const MAX_RENEWALS: u32 = 8;

/// One media playlist, as fetched.
pub(super) struct Playlist {
    pub(super) init: Option<Url>,
    pub(super) segments: Vec<(Url, f64)>,
}

impl Playlist {
    pub(super) fn duration(&self) -> f64 {
        self.segments.iter().map(|(_, d)| d).sum()
    }
}

pub(super) fn parse(base: &Url, body: &[u8]) -> Result<Playlist, NativeError> {
    let pl = m3u8_rs::parse_media_playlist_res(body).map_err(|e| {
        let why: String = format!("{e:?}").chars().take(60).collect();
        NativeError::Unsupported(format!("not an HLS media playlist ({why})"))
    })?;
    let join = |uri: &str| {
        base.join(uri)
            .map_err(|e| NativeError::Unsupported(format!("bad segment URI in the playlist: {e}")))
    };
    let mut init = None;
    let mut segments = Vec::with_capacity(pl.segments.len());
    for seg in &pl.segments {
        if seg
            .key
            .as_ref()
            .is_some_and(|k| k.method != m3u8_rs::KeyMethod::None)
        {
            return Err(NativeError::Unsupported("encrypted HLS segments".into()));
        }
        if seg.byte_range.is_some() {
            return Err(NativeError::Unsupported("HLS byte-range segments".into()));
        }
        if let Some(map) = &seg.map {
            if init.is_some() {
                return Err(NativeError::Unsupported(
                    "more than one HLS init segment".into(),
                ));
            }
            init = Some(join(&map.uri)?);
        }
        segments.push((join(&seg.uri)?, f64::from(seg.duration)));
    }
    if !pl.end_list || segments.is_empty() {
        return Err(NativeError::Unsupported(
            "an HLS playlist that is live or empty".into(),
        ));
    }
    Ok(Playlist { init, segments })
}

/// Where segments go, in order.
pub(super) trait SegmentSink: Send {
    fn init(&mut self, bytes: &[u8]) -> Result<(), NativeError>;
    fn segment(&mut self, bytes: &[u8]) -> Result<(), NativeError>;
}

impl Session<'_> {
    /// A fresh signed URL and its playlist.
    async fn load_playlist(&mut self) -> Result<Playlist, NativeError> {
        let signed = self.signed_url().await?;
        let body = self.media(&signed, |c| c.playlist += 1).await?;
        parse(&signed, &body)
    }

    /// A GET that counts itself; `Expired` is handed back for the caller to renew.
    async fn media(
        &mut self,
        url: &Url,
        count: fn(&mut super::MediaRequests),
    ) -> Result<Vec<u8>, MediaError> {
        count(&mut self.counts);
        get_bytes(&self.native.http, self.native.retry, url, self.cancel).await
    }

    /// Fetches the whole HLS stream into `sink`; returns the playlist's total duration.
    pub(super) async fn fetch_hls(
        &mut self,
        sink: &mut (dyn SegmentSink + Send),
    ) -> Result<f64, NativeError> {
        let mut pl = self.load_playlist().await?;
        let total = pl.duration();
        let count = pl.segments.len();
        let mut renewals = 0;
        let mut next = 0;
        let mut init_done = false;
        loop {
            let outcome = self.fetch_from(&pl, &mut next, &mut init_done, sink).await;
            match outcome {
                Ok(()) => return Ok(total),
                Err(FetchStop::Expired) if renewals < MAX_RENEWALS => {
                    renewals += 1;
                    self.counts.renewals += 1;
                    tracing::debug!(
                        track = self.track_id,
                        segment = next,
                        "signed URL expired; renewing"
                    );
                    pl = self.load_playlist().await?;
                    if pl.segments.len() != count || (pl.duration() - total).abs() > 0.01 {
                        return Err(NativeError::Incomplete(format!(
                            "the renewed playlist lists {} segments ({:.1} s), the first {count} ({total:.1} s)",
                            pl.segments.len(),
                            pl.duration()
                        )));
                    }
                }
                Err(FetchStop::Expired) => {
                    return Err(NativeError::Media(format!(
                        "the CDN refused {} fresh signed URLs in a row (403)",
                        MAX_RENEWALS
                    )));
                }
                Err(FetchStop::Failed(e)) => return Err(e),
            }
        }
    }

    /// Fetches from segment `*next` on, a window at a time, handing each on in order.
    async fn fetch_from(
        &mut self,
        pl: &Playlist,
        next: &mut usize,
        init_done: &mut bool,
        sink: &mut (dyn SegmentSink + Send),
    ) -> Result<(), FetchStop> {
        if !*init_done {
            if let Some(init) = &pl.init {
                let bytes = self
                    .media(init, |c| c.init += 1)
                    .await
                    .map_err(FetchStop::from)?;
                sink.init(&bytes).map_err(FetchStop::Failed)?;
            }
            *init_done = true;
        }
        let window = self.native.segments_at_once.max(1);
        let mut running: JoinSet<(usize, Result<Vec<u8>, MediaError>)> = JoinSet::new();
        let mut ready: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut queued = *next;
        while *next < pl.segments.len() {
            hand_on(&mut ready, next, sink)?;
            if *next >= pl.segments.len() {
                break;
            }
            while queued < pl.segments.len() && running.len() + ready.len() < window {
                let (url, http, retry, cancel) = (
                    pl.segments[queued].0.clone(),
                    self.native.http.clone(),
                    self.native.retry,
                    self.cancel.clone(),
                );
                self.counts.segments += 1;
                let i = queued;
                running.spawn(async move { (i, get_bytes(&http, retry, &url, &cancel).await) });
                queued += 1;
            }
            let Some(joined) = running.join_next().await else {
                return Err(FetchStop::Failed(NativeError::Media(
                    "no segment in flight".into(),
                )));
            };
            let (i, result) =
                joined.map_err(|e| FetchStop::Failed(NativeError::Media(e.to_string())))?;
            match result {
                Ok(bytes) => {
                    ready.insert(i, bytes);
                }
                Err(e) => {
                    // The segments before the failed one still land; the rest are fetched
                    // again after a renewal (a 403 on one means the signature has expired).
                    running.abort_all();
                    hand_on(&mut ready, next, sink)?;
                    return Err(FetchStop::from(e));
                }
            }
        }
        Ok(())
    }
}

/// Hands the segments that arrived, from `*next` on without a gap, to the sink.
fn hand_on(
    ready: &mut BTreeMap<usize, Vec<u8>>,
    next: &mut usize,
    sink: &mut (dyn SegmentSink + Send),
) -> Result<(), FetchStop> {
    while let Some(bytes) = ready.remove(next) {
        sink.segment(&bytes).map_err(FetchStop::Failed)?;
        *next += 1;
    }
    Ok(())
}

/// Why a pass over the segments stopped.
enum FetchStop {
    Expired,
    Failed(NativeError),
}

impl From<MediaError> for FetchStop {
    fn from(e: MediaError) -> Self {
        match e {
            MediaError::Expired => FetchStop::Expired,
            e => FetchStop::Failed(NativeError::from(e)),
        }
    }
}
