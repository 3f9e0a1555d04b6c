//! Stopping blocking work from async code: a [`Cancel`] handed to a dump,
//! an archive walk or a restore kills the client tools they started, so a
//! dropped future (timeout, shutdown) cannot leave a `pg_dump` running on
//! unseen.

use std::io;
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Lets an async caller stop blocking work it started: dropping the future
/// (timeout, shutdown) kills the dump instead of letting it run on unseen.
#[derive(Clone, Default)]
pub(crate) struct Cancel(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    cancelled: AtomicBool,
    children: Mutex<Vec<Weak<Mutex<Child>>>>,
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let children = self.0.children.lock().unwrap_or_else(|p| p.into_inner());
        for c in children.iter().filter_map(Weak::upgrade) {
            kill_group(&mut c.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }

    pub fn check(&self) -> io::Result<()> {
        if self.is_cancelled() {
            // Not ErrorKind::Interrupted: io::copy (inside tar) retries that
            // forever, and a cancelled files backup would spin.
            Err(io::Error::other("the backup was cancelled"))
        } else {
            Ok(())
        }
    }

    /// Kills `child` with the others on [`Cancel::cancel`] (at once when
    /// already cancelled).
    pub(super) fn register(&self, child: &Arc<Mutex<Child>>) {
        let mut children = self.0.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|w| w.strong_count() > 0);
        children.push(Arc::downgrade(child));
        if self.is_cancelled() {
            kill_group(&mut child.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Cancels when dropped unless [`CancelOnDrop::disarm`]ed.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

/// SIGKILLs a tool and everything it forked (pg_dump -j workers): each tool
/// leads its own process group. The group is signalled only while the
/// leader is unreaped, so its id cannot have been recycled.
pub(super) fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: kill(2) on the process group our unreaped child leads.
        unsafe {
            libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
        }
    }
    // A no-op once the child has been reaped.
    let _ = child.kill();
}

pub(crate) struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}
