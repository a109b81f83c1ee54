//! Killable connections: a fake's listener wraps every accepted stream so that the handler
//! can drop the connection mid-request (the Notion fake's `Fault::ResetBefore` and
//! `Fault::ResetAfter`, the receivers' `ReceiverFault::Reset`), and the client sees a genuine
//! TCP reset instead of a status code.
//!
//! Invariant: once a connection is killed, every read and write on it fails, and its close is
//! a reset (zero linger), as from a middlebox dropping it.

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

pub(crate) struct KillListener(pub(crate) TcpListener);

pub(crate) struct KillableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
}

/// Per-connection handle given to the handler through `ConnectInfo`.
#[derive(Clone, Debug)]
pub(crate) struct ConnHandle {
    killed: Arc<AtomicBool>,
}

impl ConnHandle {
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Listener for KillListener {
    type Io = KillableStream;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let killed = Arc::new(AtomicBool::new(false));
                    let handle = ConnHandle {
                        killed: killed.clone(),
                    };
                    return (
                        KillableStream {
                            inner: stream,
                            killed,
                        },
                        handle,
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(ConnHandle {
            killed: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, KillListener>> for ConnHandle {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl KillableStream {
    /// Once killed, every operation fails, so hyper drops the connection; zero linger turns the
    /// close into a TCP reset, which is what a client sees from a real middlebox dropping it.
    fn check(&mut self) -> std::io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "fault: connection reset",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Err(e) = self.check() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
