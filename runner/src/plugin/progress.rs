//! Telling a hung transfer from a slow one: count the bytes that move, and
//! stop a call only when none has moved for `[runner] stall_timeout`.
//!
//! A plugin's bytes pass through the host in two places, and both count:
//! the local file streams handed to `upload`/`fetch` (every read and write),
//! and the bodies of wasi:http requests and responses (sent by the host on
//! the plugin's behalf). A plugin on raw sockets (FTP, TFTP) reads the file
//! only as fast as its socket drains, so file reads track its network too.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Bytes moved by one plugin instance so far (only ever grows).
#[derive(Clone, Default, Debug)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a watched call was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It ran past its hard time limit.
    Limit,
    /// Nothing moved for the stall limit; `moved` bytes in `after` before.
    Stall { moved: u64, after: Duration },
}

/// Run `call` until it ends, `limit` passes, or no byte has moved for
/// `stall` (a transfer that keeps moving is never cut by `stall`).
pub async fn watch<F: Future>(
    call: F,
    limit: Duration,
    stall: Duration,
    progress: &Progress,
) -> Result<F::Output, Stopped> {
    let started = Instant::now();
    let tick = (stall / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let hard = tokio::time::sleep(limit);
    tokio::pin!(call, hard);
    let mut seen = progress.get();
    let mut last_move = Instant::now();
    loop {
        tokio::select! {
            out = &mut call => return Ok(out),
            _ = &mut hard => return Err(Stopped::Limit),
            _ = tokio::time::sleep(tick) => {
                let now = progress.get();
                if now != seen {
                    seen = now;
                    last_move = Instant::now();
                } else if last_move.elapsed() >= stall {
                    return Err(Stopped::Stall { moved: now, after: started.elapsed() });
                }
            }
        }
    }
}

/// An HTTP body that counts the bytes of its data frames as they pass.
pub struct Counted<B> {
    inner: B,
    progress: Progress,
}

impl<B> Counted<B> {
    pub fn new(inner: B, progress: Progress) -> Self {
        Counted { inner, progress }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            self.progress.add(d.len());
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_moving_call_runs_past_the_stall_limit_a_silent_one_does_not() {
        let p = Progress::default();
        let mover = {
            let p = p.clone();
            async move {
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    p.add(1);
                }
                "done"
            }
        };
        let stall = Duration::from_millis(100);
        let r = watch(mover, Duration::from_secs(5), stall, &p).await;
        assert_eq!(r, Ok("done"));

        let silent = tokio::time::sleep(Duration::from_secs(5));
        let t = Instant::now();
        let r = watch(silent, Duration::from_secs(5), stall, &p).await;
        assert!(matches!(r, Err(Stopped::Stall { moved: 10, .. })), "{r:?}");
        assert!(t.elapsed() < Duration::from_secs(1));

        let r = watch(
            tokio::time::sleep(Duration::from_secs(5)),
            Duration::from_millis(50),
            stall,
            &p,
        )
        .await;
        assert_eq!(r, Err(Stopped::Limit));
    }
}
