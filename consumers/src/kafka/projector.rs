//! The projection and the deadline monitor on threads of their own.
//!
//! Appending (intake, evidence, fsync), folding what was appended into the
//! projection, and judging what changed are each about a core's work at
//! full rate; done in turn on one thread, their costs add up. A writer's
//! sink hands each append's entries to the projection thread
//! ([`Projector::fold`]) and goes back to Kafka; that thread folds them
//! and saves the projection when due. On a tick it saves what it folded
//! and hands the monitor thread the saved states as they then are
//! ([`SavedStates`]: later saves and merges do not change them) with what
//! the folds touched, and goes on folding while the monitor judges.
//! Together they own the projection store, the projection and the monitor
//! until [`Projector::finish`] hands them back, and the ledger is whole
//! again: before anything replaces a chain's history (an archive
//! continuation), and when the consumer stops.
//!
//! Nothing here is evidence or an offset: a crash loses at most folds and
//! ticks not yet saved, which the next start does again from the saved
//! cursors and the monitor's book.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lifeledger_ledger::projection::{Dirty, Projection};
use lifeledger_ledger::{Appended, ProjectionStore, SavedStates, StoreError};

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
    pub fn start(parts: Parts, metrics: &Arc<Metrics>) -> Result<Self, StoreError> {
        let Parts {
            mut store,
            projection,
            monitor,
        } = parts;
        if monitor.is_some() {
            // Each tick's items were saved since the last: the monitor
            // reads them from what the saves wrote, not from the runs.
            store.keep_recent_saves();
        }
        let watcher = monitor
            .map(|m| Watcher::start(m, Arc::clone(metrics)))
            .transpose()?;
        let folding = Folding {
            store,
            projection,
            watcher,
        };
        let (jobs, queue) = sync_channel(QUEUED);
        let thread = std::thread::Builder::new()
            .name("projection".into())
            .spawn(move || {
                give_way_to_intake();
                work(folding, &queue)
            })
            .map_err(|source| spawn_failed("projection", source))?;
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

fn spawn_failed(what: &str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: format!("({what} thread)").into(),
        source,
    }
}

/// What the projection thread owns.
struct Folding {
    store: ProjectionStore,
    projection: Projection,
    watcher: Option<Watcher>,
}

/// The projection thread: does each job in turn until the queue closes
/// or one fails, then lets the monitor thread finish.
fn work(mut folding: Folding, queue: &Receiver<Job>) -> Outcome {
    let mut saved = Instant::now();
    let mut failed = None;
    while let Ok(job) = queue.recv() {
        let done = match job {
            Job::Fold(appended) => fold(&mut folding, appended, &mut saved),
            Job::Tick => tick(&mut folding, &mut saved),
            Job::Save => save(&mut folding, &mut saved),
            Job::Settle(answer) => {
                let _ = answer.send(());
                Ok(())
            }
        };
        if let Err(e) = done {
            failed = Some(e);
            break;
        }
    }
    let Folding {
        store,
        projection,
        watcher,
    } = folding;
    let (monitor, watched) = match watcher {
        Some(w) => {
            let (monitor, outcome) = w.finish();
            (Some(monitor), outcome)
        }
        None => (None, Ok(())),
    };
    let outcome = match failed {
        Some(e) => Err(e),
        None => watched,
    };
    (
        Parts {
            store,
            projection,
            monitor,
        },
        outcome,
    )
}

fn fold(folding: &mut Folding, appended: Appended, saved: &mut Instant) -> Result<(), StoreError> {
    folding.store.advance(appended);
    folding
        .store
        .catch_up_saving_when_due(&mut folding.projection)?;
    if folding.projection.unsaved() == 0 {
        *saved = Instant::now();
    } else if saved.elapsed() >= SAVE_INTERVAL {
        save(folding, saved)?;
    }
    Ok(())
}

fn save(folding: &mut Folding, saved: &mut Instant) -> Result<(), StoreError> {
    if folding.projection.unsaved() > 0 {
        folding.store.save_projection(&mut folding.projection)?;
    }
    *saved = Instant::now();
    Ok(())
}

/// Saves what was folded, then hands the monitor thread the saved states
/// as they now are, with what the folds since the last tick touched.
fn tick(folding: &mut Folding, saved: &mut Instant) -> Result<(), StoreError> {
    if folding.watcher.is_none() {
        return Ok(());
    }
    save(folding, saved)?;
    let look = Look {
        states: folding.store.hand_over_saved_states(),
        projection: folding.projection.without_states(),
        touched: folding.projection.take_touched(),
    };
    let stopped = folding
        .watcher
        .as_ref()
        .is_some_and(|w| w.looks.send(look).is_err());
    if !stopped {
        return Ok(());
    }
    // The monitor thread stopped on a failure: say which.
    match folding.watcher.take().map(|w| w.finish().1) {
        Some(Err(e)) => Err(e),
        _ => Err(StoreError::Damaged {
            key: "monitor thread".into(),
            detail: "it stopped without saying why".into(),
        }),
    }
}

/// What one tick hands the monitor: the facts as of the tick, and what
/// changed since the last.
struct Look {
    states: SavedStates,
    /// The projection's policies, imports and cursors as of the tick.
    projection: Projection,
    touched: Dirty,
}

/// The monitor thread and the way to hand it looks.
struct Watcher {
    looks: SyncSender<Look>,
    thread: JoinHandle<(MonitorRunner, Result<(), StoreError>)>,
}

impl Watcher {
    /// Starts the thread (the monitor is lost with it if it cannot start:
    /// the consumer stops, and the next start opens the book again).
    fn start(monitor: MonitorRunner, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        // One look may wait while the monitor judges the one before.
        let (looks, queue) = sync_channel::<Look>(1);
        let thread = std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || {
                give_way_to_intake();
                watch(monitor, &queue, &metrics)
            })
            .map_err(|source| spawn_failed("monitor", source))?;
        Ok(Watcher { looks, thread })
    }

    /// Lets the thread judge what it was handed; takes the monitor back.
    fn finish(self) -> (MonitorRunner, Result<(), StoreError>) {
        let Watcher { looks, thread } = self;
        drop(looks);
        match thread.join() {
            Ok(done) => done,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The monitor thread: judges each look in turn. A look whose alerts
/// could not be delivered stays in the outbox for the next; only a
/// failure of the store stops the thread.
fn watch(
    mut monitor: MonitorRunner,
    queue: &Receiver<Look>,
    metrics: &Metrics,
) -> (MonitorRunner, Result<(), StoreError>) {
    while let Ok(look) = queue.recv() {
        let ticked = monitor.tick(&look.states, &look.projection, look.touched);
        if let Err(e) = survive_undelivered(ticked, metrics) {
            return (monitor, Err(e));
        }
    }
    (monitor, Ok(()))
}

/// What a monitor tick's outcome means for the ledger: a failure of the
/// store stops it; alerts that could not be delivered stay in the outbox
/// for the next tick (counted and logged), and never stop the ledger.
pub(super) fn survive_undelivered<T>(
    ticked: Result<T, MonitorError>,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    match ticked {
        Ok(_) => Ok(()),
        Err(MonitorError::Store(e)) => Err(e),
        Err(e) => {
            tracing::warn!("deadline monitor: {e}; the alerts stay in the outbox and are retried");
            Metrics::add(&metrics.alert_failures, 1);
            Ok(())
        }
    }
}

/// How much lower than the consumer's the folding and judging threads'
/// priority is: nice +5, a third of the consumer's share of a core when
/// both want one (Linux's weights: 1024 at nice 0, 335 at nice 5).
const DERIVED_NICENESS: i32 = 5;

/// Lowers the calling thread's priority below the consumer's. What it
/// derives (the fold, the judgement) waits for a core while intake wants
/// it, and takes the core whenever intake waits (for a fetch, an fsync):
/// the job then uses both cores more fully. Derived work cannot fall far
/// behind: the queue to it is bounded. Best effort: if the priority
/// cannot be changed, the thread runs as it is.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn give_way_to_intake() {
    // SAFETY: getpriority and setpriority take plain integers and touch
    // nothing of ours. On Linux each thread has its own nice value, and
    // `who` 0 names the calling thread. getpriority returns -1 both for
    // nice -1 and on error; errno is not checked because an error
    // leaves the nice value as it is either way (setpriority then sets
    // a value near the one it has, or fails, which is ignored).
    unsafe {
        let now = libc::getpriority(libc::PRIO_PROCESS, 0);
        let lower = (now + DERIVED_NICENESS).min(19);
        if libc::setpriority(libc::PRIO_PROCESS, 0, lower) != 0 {
            tracing::debug!("the derived work's thread keeps its priority");
        }
    }
}

/// Elsewhere a process's threads share one nice value: lowering it would
/// slow intake too.
#[cfg(not(target_os = "linux"))]
fn give_way_to_intake() {}
