//! The projection and the deadline monitor on a thread of their own.
//!
//! Appending (intake, evidence, fsync) and then folding what was appended
//! into the projection and judging it are each about a core's work at full
//! rate; done in turn on one thread, their costs add up. A writer's sink
//! hands each append's entries to this thread ([`Projector::fold`]) and
//! goes back to Kafka; the thread folds them, saves the projection when
//! due, and ticks the monitor when asked, in the order asked. It owns the
//! projection store, the projection and the monitor until
//! [`Projector::finish`] hands them back, and the ledger is whole again:
//! before anything replaces a chain's history (an archive continuation),
//! and when the consumer stops.
//!
//! Nothing here is evidence or an offset: a crash loses at most folds and
//! ticks not yet saved, which the next start does again from the saved
//! cursors and the monitor's book.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lifeledger_ledger::projection::Projection;
use lifeledger_ledger::{Appended, ProjectionStore, StoreError};

use super::metrics::Metrics;
use crate::monitor::{MonitorError, MonitorRunner};

/// What the thread owns while it runs, handed back by
/// [`Projector::finish`].
#[derive(Debug)]
pub struct Parts {
    pub store: ProjectionStore,
    pub projection: Projection,
    pub monitor: Option<MonitorRunner>,
}

enum Job {
    /// Fold what one append wrote.
    Fold(Appended),
    /// Let the monitor look at what changed and at deadlines passed.
    Tick,
    /// Save what the projection folded and has not saved.
    Save,
    /// Answer once every earlier job is done.
    Settle(SyncSender<()>),
}

/// Appends a sink may hand over before it waits for the thread: enough
/// to keep both busy, few enough that the entries waiting stay a few
/// batches.
const QUEUED: usize = 2;

/// The longest folded entries wait to be saved while entries keep coming.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// The thread, and the way to hand it work.
#[derive(Debug)]
pub struct Projector {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<Outcome>>,
}

type Outcome = (Parts, Result<(), StoreError>);

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Fold(_) => "fold",
            Job::Tick => "tick",
            Job::Save => "save",
            Job::Settle(_) => "settle",
        })
    }
}

impl Projector {
    /// Starts the thread with what it owns.
    pub fn start(parts: Parts, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let (jobs, queue) = sync_channel(QUEUED);
        let thread = std::thread::Builder::new()
            .name("projection".into())
            .spawn(move || work(parts, &queue, &metrics))
            .map_err(|source| StoreError::Io {
                path: "(projection thread)".into(),
                source,
            })?;
        Ok(Projector {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Hands over what one append wrote. Waits only while the thread is
    /// `QUEUED` appends behind. An error: the thread stopped on a failure
    /// (see [`Projector::finish`] for which).
    pub fn fold(&self, appended: Appended) -> Result<(), Stopped> {
        self.send(Job::Fold(appended))
    }

    /// Asks for a monitor tick after the folds handed over so far.
    pub fn tick(&self) -> Result<(), Stopped> {
        self.send(Job::Tick)
    }

    /// Asks for a save of what is folded, and waits until it and
    /// everything before it is done.
    pub fn save_and_settle(&self) -> Result<(), Stopped> {
        self.send(Job::Save)?;
        let (done, answer) = sync_channel(1);
        self.send(Job::Settle(done))?;
        answer.recv().map_err(|_| Stopped)
    }

    fn send(&self, job: Job) -> Result<(), Stopped> {
        self.jobs
            .as_ref()
            .ok_or(Stopped)?
            .send(job)
            .map_err(|_| Stopped)
    }

    /// Lets the thread finish what it was handed, and takes back what it
    /// owns, with the failure that stopped it, if any.
    pub fn finish(mut self) -> Result<Outcome, StoreError> {
        self.join()
    }

    fn join(&mut self) -> Result<Outcome, StoreError> {
        // The thread ends once the queue is empty and closed.
        self.jobs = None;
        let thread = self
            .thread
            .take()
            .ok_or(StoreError::ProjectionStoreDetached)?;
        thread.join().map_err(|_| StoreError::Damaged {
            key: "projection thread".into(),
            detail: "it panicked; the projection is folded again from its saved cursors on the next start".into(),
        })
    }
}

impl Drop for Projector {
    /// Not finished (a sink dropped on an error): the thread still ends
    /// before the ledger can be opened again, so nothing writes the
    /// projection's files behind a later owner's back.
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.join();
        }
    }
}

/// The thread stopped on a failure; [`Projector::finish`] says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// The thread: does each job in turn until the queue closes or one fails.
fn work(mut parts: Parts, queue: &Receiver<Job>, metrics: &Metrics) -> Outcome {
    let mut saved = Instant::now();
    while let Ok(job) = queue.recv() {
        let done = match job {
            Job::Fold(appended) => fold(&mut parts, appended, &mut saved),
            Job::Tick => tick(&mut parts, metrics),
            Job::Save => save(&mut parts, &mut saved),
            Job::Settle(answer) => {
                let _ = answer.send(());
                Ok(())
            }
        };
        if let Err(e) = done {
            return (parts, Err(e));
        }
    }
    (parts, Ok(()))
}

fn fold(parts: &mut Parts, appended: Appended, saved: &mut Instant) -> Result<(), StoreError> {
    parts.store.advance(appended);
    parts
        .store
        .catch_up_saving_when_due(&mut parts.projection)?;
    if parts.projection.unsaved() == 0 {
        *saved = Instant::now();
    } else if saved.elapsed() >= SAVE_INTERVAL {
        save(parts, saved)?;
    }
    Ok(())
}

fn save(parts: &mut Parts, saved: &mut Instant) -> Result<(), StoreError> {
    if parts.projection.unsaved() > 0 {
        parts.store.save_projection(&mut parts.projection)?;
    }
    *saved = Instant::now();
    Ok(())
}

/// A tick whose alerts could not be delivered stays in the outbox for
/// the next; only a failure of the store stops the thread.
fn tick(parts: &mut Parts, metrics: &Metrics) -> Result<(), StoreError> {
    let Some(monitor) = parts.monitor.as_mut() else {
        return Ok(());
    };
    match monitor.tick(&parts.store, &mut parts.projection) {
        Ok(_) => Ok(()),
        Err(MonitorError::Store(e)) => Err(e),
        Err(e) => {
            tracing::warn!("deadline monitor: {e}; the alerts stay in the outbox and are retried");
            Metrics::add(&metrics.alert_failures, 1);
            Ok(())
        }
    }
}
