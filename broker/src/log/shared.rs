//! [`SharedLog`]: one [`PartitionLog`] shared between threads, with group commit.
//!
//! Appends take the write lock only to write into the page cache. Making data durable is
//! separate: [`SharedLog::flush_to`] lets one thread at a time run fsync *outside* the log's
//! lock, while later appends keep landing; whoever waits next finds its data covered by that
//! fsync or runs the next one, which covers everyone who arrived meanwhile. So concurrent
//! writers share fsyncs (group commit), and under load each fsync covers many appends.
//!
//! Waiters that must not hold a thread each (a broker's acks=all produce requests) use
//! [`SharedLog::claim_flusher`] and [`SharedLog::flush_rounds`] instead: one of them at a
//! time runs fsyncs on a thread until everything appended is durable, and the others wait
//! on the flushed offset's watch.
//!
//! Reads take the read lock only to locate their bytes; the bytes are read after it is
//! released. Two watermarks are published for waiters: the log end (for long-poll fetches)
//! and the flushed offset (for acknowledgements after fsync).
//!
//! The blocking methods do file I/O: call them from a blocking context (for example
//! `tokio::task::spawn_blocking`), never directly on an async runtime's worker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, TryLockError};
use std::time::SystemTime;

use bytes::Bytes;
use mq_protocol::Offset;
use tokio::sync::watch;

use super::config::FlushPolicy;
use super::error::{LogError, LogResult};
use super::partition_log::{AppendInfo, PartitionLog};

/// A partition log shared between threads.
#[derive(Debug)]
pub struct SharedLog {
    /// The log; appends and other mutations take the write lock, reads the read lock.
    log: RwLock<PartitionLog>,
    /// Held by the one thread running an fsync, so that fsyncs do not pile up.
    flush_lock: Mutex<()>,
    /// Set while a caller that claimed it runs [`SharedLog::flush_rounds`].
    flusher_claimed: AtomicBool,
    /// Everything below this offset is durable.
    flushed: watch::Sender<Offset>,
    /// The log end offset: records below it can be read.
    log_end: watch::Sender<Offset>,
    /// The log's flush policy, copied out of its config.
    flush_policy: FlushPolicy,
    /// Flush jobs run so far (each one fsync of the unflushed files): with the number of
    /// appends, it shows how well group commit shares fsyncs.
    flush_count: AtomicU64,
}

impl SharedLog {
    /// Shares `log`.
    pub fn new(log: PartitionLog) -> SharedLog {
        let flushed = watch::Sender::new(log.recovery_point());
        let log_end = watch::Sender::new(log.log_end());
        let flush_policy = log.config().flush;
        SharedLog {
            log: RwLock::new(log),
            flush_lock: Mutex::new(()),
            flusher_claimed: AtomicBool::new(false),
            flushed,
            log_end,
            flush_policy,
            flush_count: AtomicU64::new(0),
        }
    }

    /// Appends batches (see [`PartitionLog::append`]) and, under [`FlushPolicy::Always`],
    /// returns only once they are durable. Blocking.
    pub fn append(&self, batches: &mut [u8], now: SystemTime) -> LogResult<AppendInfo> {
        let info = self.append_unflushed(batches, now)?;
        if self.flush_policy == FlushPolicy::Always {
            self.flush_to(info.log_end)?;
        }
        Ok(info)
    }

    /// Appends batches and returns once they are written (in the page cache), whatever the
    /// flush policy: for acknowledgements that do not promise durability (`acks=1`).
    /// Blocking.
    pub fn append_unflushed(&self, batches: &mut [u8], now: SystemTime) -> LogResult<AppendInfo> {
        let info = self.lock_write()?.append(batches, now)?;
        self.log_end
            .send_if_modified(|log_end| advance(log_end, info.log_end));
        Ok(info)
    }

    /// Appends batches, like [`SharedLog::append_unflushed`], if `allowed` says yes when
    /// asked under the log's write lock; `None` otherwise. Whoever changes what `allowed`
    /// reads and then takes the write lock once (for example through
    /// [`SharedLog::with_log_mut`]) knows that no append allowed by the old answer is still
    /// to come. Blocking.
    pub fn append_unflushed_if(
        &self,
        batches: &mut [u8],
        now: SystemTime,
        allowed: impl FnOnce() -> bool,
    ) -> LogResult<Option<Appended>> {
        let appended = {
            let mut log = self.lock_write()?;
            if !allowed() {
                return Ok(None);
            }
            let info = log.append(batches, now)?;
            Appended {
                info,
                log_start: log.log_start(),
            }
        };
        self.published(appended);
        Ok(Some(appended))
    }

    /// Appends batches like [`SharedLog::append_unflushed_if`] if that cannot wait on
    /// anything but the write into the page cache: [`TryAppend::WouldWait`], with nothing
    /// written, if another thread holds the log or the append would roll a segment or
    /// write the checkpoint first (see [`PartitionLog::append_in_place`]). For small
    /// appends on an async runtime's worker, saving the hand-off to a blocking thread and
    /// back; the caller retries `WouldWait` on a blocking thread.
    pub fn try_append_unflushed_if(
        &self,
        batches: &mut [u8],
        now: SystemTime,
        allowed: impl FnOnce() -> bool,
    ) -> LogResult<TryAppend> {
        let appended = {
            let mut log = match self.log.try_write() {
                Ok(log) => log,
                Err(TryLockError::WouldBlock) => return Ok(TryAppend::WouldWait),
                Err(TryLockError::Poisoned(poisoned)) => {
                    return Err(LogError::Offline {
                        path: poisoned.get_ref().dir().to_path_buf(),
                    })
                }
            };
            if !allowed() {
                return Ok(TryAppend::NotAllowed);
            }
            match log.append_in_place(batches, now)? {
                Some(info) => Appended {
                    info,
                    log_start: log.log_start(),
                },
                None => return Ok(TryAppend::WouldWait),
            }
        };
        self.published(appended);
        Ok(TryAppend::Appended(appended))
    }

    /// Publishes the log end an append moved, once the lock is released.
    fn published(&self, appended: Appended) {
        self.log_end
            .send_if_modified(|log_end| advance(log_end, appended.info.log_end));
    }

    /// Appends batches copied from another broker's log (see
    /// [`PartitionLog::append_copy`]), without waiting for durability. Blocking.
    pub fn append_copy(&self, batches: &mut [u8], now: SystemTime) -> LogResult<AppendInfo> {
        let info = self.lock_write()?.append_copy(batches, now)?;
        self.log_end
            .send_if_modified(|log_end| advance(log_end, info.log_end));
        Ok(info)
    }

    /// Empties the log and starts it at `offset` (see [`PartitionLog::reset_to`]). Blocking.
    pub fn reset_to(&self, offset: Offset, now: SystemTime) -> LogResult<()> {
        self.with_log_mut(|log| log.reset_to(offset, now))?
    }

    /// The log's flush policy.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.flush_policy
    }

    /// Returns once everything below `offset` is durable, running an fsync if no other
    /// thread's covers it. Blocking.
    pub fn flush_to(&self, offset: Offset) -> LogResult<()> {
        if *self.flushed.borrow() >= offset {
            return Ok(());
        }
        let _flushing = self
            .flush_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Whoever held the lock before us may have covered our offset already.
        if *self.flushed.borrow() >= offset {
            return Ok(());
        }
        let job = self.lock_read()?.flush_job()?;
        let result = job.sync();
        self.flush_count.fetch_add(1, Ordering::Relaxed);
        let recovery_point = {
            let mut log = self.lock_write()?;
            log.complete_flush(&job, result)?;
            log.recovery_point()
        };
        self.flushed
            .send_if_modified(|flushed| advance(flushed, recovery_point));
        Ok(())
    }

    /// Claims the flusher's role: `true` if no one held it, and the caller must now run
    /// [`SharedLog::flush_rounds`]; `false` if a flusher is at work, whose rounds will cover
    /// every append made before this call (wait on [`SharedLog::subscribe_flushed`], and
    /// claim again whenever it changes: the flusher may have stopped just short).
    pub fn claim_flusher(&self) -> bool {
        !self.flusher_claimed.swap(true, Ordering::SeqCst)
    }

    /// For the caller that [claimed](SharedLog::claim_flusher) the flusher's role: runs
    /// fsyncs until everything appended is durable, each covering what was appended while
    /// the one before it ran, and gives the role up. The role is given up before the last
    /// check for more, and claimed again if there is more, so an append whose waiter found
    /// the role taken is always covered. On failure (the log is then offline), the flushed
    /// watch's waiters are woken, to claim the role and find the failure themselves.
    /// Blocking.
    pub fn flush_rounds(&self) -> LogResult<()> {
        self.flush_rounds_of(|log| log.flush_to(log.log_end()))
    }

    /// [`SharedLog::flush_rounds`], with each round's work given, so that tests can append
    /// between a round's fsync and the role's release.
    pub(super) fn flush_rounds_of(
        &self,
        mut round: impl FnMut(&SharedLog) -> LogResult<()>,
    ) -> LogResult<()> {
        loop {
            let result = {
                let _role = FlusherRole(&self.flusher_claimed);
                round(self)
            };
            if let Err(error) = result {
                self.flushed.send_modify(|_| {});
                return Err(error);
            }
            if self.flushed() >= self.log_end() || !self.claim_flusher() {
                return Ok(());
            }
        }
    }

    /// Reads whole batches from `from` (see [`PartitionLog::read`]), holding the lock only to
    /// locate them. Blocking.
    pub fn read(&self, from: Offset, max_bytes: u64) -> LogResult<Bytes> {
        let plan = self.lock_read()?.plan_read(from, max_bytes)?;
        match plan {
            Some(plan) => plan.execute(),
            None => Ok(Bytes::new()),
        }
    }

    /// The current log end offset.
    pub fn log_end(&self) -> Offset {
        *self.log_end.borrow()
    }

    /// Everything below this offset is durable.
    pub fn flushed(&self) -> Offset {
        *self.flushed.borrow()
    }

    /// How many flush jobs (fsync rounds) have run.
    pub fn flush_count(&self) -> u64 {
        self.flush_count.load(Ordering::Relaxed)
    }

    /// A receiver that sees the log end offset change (long-poll fetches wait on it).
    pub fn subscribe_log_end(&self) -> watch::Receiver<Offset> {
        self.log_end.subscribe()
    }

    /// A receiver that sees the flushed offset change.
    pub fn subscribe_flushed(&self) -> watch::Receiver<Offset> {
        self.flushed.subscribe()
    }

    /// Runs `f` with shared access to the log (for queries).
    pub fn with_log<T>(&self, f: impl FnOnce(&PartitionLog) -> T) -> LogResult<T> {
        Ok(f(&*self.lock_read()?))
    }

    /// Runs `f` with exclusive access to the log (retention, truncation, checkpoints), then
    /// republishes the watermarks, which `f` may have moved either way.
    pub fn with_log_mut<T>(&self, f: impl FnOnce(&mut PartitionLog) -> T) -> LogResult<T> {
        let mut log = self.lock_write()?;
        let result = f(&mut log);
        let (log_end, recovery_point) = (log.log_end(), log.recovery_point());
        drop(log);
        self.log_end
            .send_if_modified(|current| replace(current, log_end));
        self.flushed
            .send_if_modified(|current| replace(current, recovery_point));
        Ok(result)
    }

    /// Closes the log cleanly (see [`PartitionLog::close`]).
    pub fn close(self) -> LogResult<()> {
        self.log
            .into_inner()
            .map_err(|poisoned| LogError::Offline {
                path: poisoned.into_inner().dir().to_path_buf(),
            })?
            .close()
    }

    fn lock_read(&self) -> LogResult<RwLockReadGuard<'_, PartitionLog>> {
        // A panic while the log was locked means its state may be half-changed: refuse it.
        self.log.read().map_err(|poisoned| LogError::Offline {
            path: poisoned.get_ref().dir().to_path_buf(),
        })
    }

    fn lock_write(&self) -> LogResult<RwLockWriteGuard<'_, PartitionLog>> {
        self.log.write().map_err(|poisoned| LogError::Offline {
            path: poisoned.get_ref().dir().to_path_buf(),
        })
    }
}

/// The flusher's role, given up when dropped (also if a flush panics, so the role is never
/// lost).
struct FlusherRole<'a>(&'a AtomicBool);

impl Drop for FlusherRole<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// An append to a [`SharedLog`], with the log start read under the same lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// What the append did.
    pub info: AppendInfo,
    /// The log start offset just after it.
    pub log_start: Offset,
}

/// The outcome of [`SharedLog::try_append_unflushed_if`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryAppend {
    /// Appended.
    Appended(Appended),
    /// Refused: `allowed` said no.
    NotAllowed,
    /// Nothing done: the append would have waited for the log's lock or for file work.
    WouldWait,
}

fn advance(current: &mut Offset, to: Offset) -> bool {
    if to > *current {
        *current = to;
        true
    } else {
        false
    }
}

fn replace(current: &mut Offset, to: Offset) -> bool {
    let changed = *current != to;
    *current = to;
    changed
}
