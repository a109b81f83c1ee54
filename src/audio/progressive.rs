//! A progressive stream: one file behind one signed URL, fetched with ranged GETs.
//!
//! Invariants: the bytes on disk are always a prefix of the file, so a cut connection or an
//! expired signature (403, renewed) resumes with `Range: bytes=<written>-`, never from zero; the
//! download ends only when the length the server announced has arrived.

use super::media_http::{MediaError, backoff, classify, network};
use super::{NativeError, Session};
use reqwest::header::{CONTENT_RANGE, RANGE};
use std::path::Path;
use tokio::io::AsyncWriteExt;
use url::Url;

impl Session<'_> {
    /// Fetches the stream into `out`; returns its length in bytes.
    pub(super) async fn fetch_progressive(&mut self, out: &Path) -> Result<u64, NativeError> {
        let mut file = tokio::fs::File::create(out)
            .await
            .map_err(NativeError::Io)?;
        let mut url = self.signed_url().await?;
        let (mut written, mut total) = (0u64, None::<u64>);
        let (mut failures, mut renewals) = (0u32, 0u32);
        while total != Some(written) {
            self.counts.progressive += 1;
            let got = self.ranged(&url, written, &mut file, &mut total).await;
            let got = match got {
                Ok(0) => Err(MediaError::Network {
                    host: super::media_http::host(&url),
                    reason: "the body ended before the announced length".into(),
                }),
                other => other,
            };
            match got {
                Ok(n) => {
                    written += n;
                    failures = 0;
                }
                Err(MediaError::Expired) if renewals < super::hls::MAX_RENEWALS => {
                    renewals += 1;
                    self.counts.renewals += 1;
                    url = self.signed_url().await?;
                }
                Err(e @ (MediaError::Network { .. } | MediaError::Status { .. }))
                    if failures + 1 < self.native.retry.attempts =>
                {
                    failures += 1;
                    tracing::debug!(
                        track = self.track_id,
                        written,
                        "progressive stream cut: {e}; resuming"
                    );
                    backoff(self.native.retry, failures, self.cancel).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        file.sync_all().await.map_err(NativeError::Io)?;
        Ok(written)
    }

    /// One GET from byte `from`: appends what arrives (even when cut), returns how much.
    async fn ranged(
        &self,
        url: &Url,
        from: u64,
        file: &mut tokio::fs::File,
        total: &mut Option<u64>,
    ) -> Result<u64, MediaError> {
        let send = self
            .native
            .http
            .get(url.clone())
            .header(RANGE, format!("bytes={from}-"))
            .send();
        let mut resp = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(MediaError::Cancelled),
            r = send => r.map_err(|e| network(url, &e))?,
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(classify(url, status).unwrap_or_else(|e| e));
        }
        if status.as_u16() == 200 && from > 0 {
            // The server ignored the range: only a full answer from byte 0 would fit.
            return Err(MediaError::Status {
                host: super::media_http::host(url),
                status: 200,
            });
        }
        let announced = resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit('/').next())
            .and_then(|n| n.parse().ok())
            .or_else(|| resp.content_length().map(|n| n + from));
        if total.is_none() {
            *total = announced;
        }
        let mut n = 0u64;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return Err(MediaError::Cancelled),
                c = resp.chunk() => c,
            };
            match chunk {
                Ok(Some(bytes)) => {
                    file.write_all(&bytes)
                        .await
                        .map_err(|e| MediaError::Network {
                            host: "the local disk".into(),
                            reason: e.to_string(),
                        })?;
                    n += bytes.len() as u64;
                }
                Ok(None) => break,
                Err(e) if n > 0 => {
                    tracing::debug!("progressive body cut after {n} bytes: {e}");
                    break;
                }
                Err(e) => return Err(network(url, &e)),
            }
        }
        file.flush().await.map_err(|e| MediaError::Network {
            host: "the local disk".into(),
            reason: e.to_string(),
        })?;
        if total.is_none() {
            *total = Some(from + n);
        }
        Ok(n)
    }
}
