//! The consumer's archive uploader: a thread of its own that copies what
//! the ledger seals to the archive, so that consumption never waits for
//! object storage. It keeps the archive lag (entries acknowledged locally
//! and not yet archived) in the metrics, raises an alert past a threshold,
//! and tells the checkpoint schedule how far the archive holds each chain.
//! An unreachable archive is retried every interval; consumption goes on.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use lifeledger_ledger::archive::{Archive, ArchiveError, Uploader, unarchived};

use super::metrics::Metrics;
use crate::schedule::ArchivedHeads;

/// Settings of the archive uploader.
#[derive(Debug, Clone)]
pub struct ArchiveSettings {
    pub url: String,
    /// How often it uploads what was sealed.
    pub interval: Duration,
    /// Lag (entries) past which the alert fires.
    pub lag_alert_entries: u64,
    /// S3 settings over the environment's (see `Archive::open_with`).
    pub options: Vec<(String, String)>,
}

/// Chains another ledger extended in the archive: not to be extended here.
pub type Conflicts = Arc<Mutex<std::collections::BTreeSet<String>>>;

/// A running uploader.
#[derive(Debug)]
pub struct ArchiveRunner {
    archived: ArchivedHeads,
    conflicts: Conflicts,
    requests: Sender<Sender<bool>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ArchiveRunner {
    pub fn start(dir: &Path, settings: ArchiveSettings, metrics: Arc<Metrics>) -> ArchiveRunner {
        let archived: ArchivedHeads = Arc::new(Mutex::new(None));
        let conflicts: Conflicts = Arc::new(Mutex::new(std::collections::BTreeSet::new()));
        let (requests, inbox) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (dir, archived, conflicts, stop) = (
                dir.to_owned(),
                Arc::clone(&archived),
                Arc::clone(&conflicts),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || {
                run(
                    &dir, &settings, &metrics, &archived, &conflicts, &inbox, &stop,
                );
            })
        };
        ArchiveRunner {
            archived,
            conflicts,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// How far the archive holds each chain, for the checkpoint schedule.
    pub fn archived(&self) -> ArchivedHeads {
        Arc::clone(&self.archived)
    }

    /// Chains another ledger extended in the archive.
    pub fn conflicts(&self) -> Conflicts {
        Arc::clone(&self.conflicts)
    }

    /// Uploads what is sealed now, waiting up to `timeout`; true if every
    /// sealed segment is archived.
    pub fn flush(&self, timeout: Duration) -> bool {
        self.flusher().flush(timeout)
    }

    /// A handle that asks for an upload from elsewhere (the rebalance
    /// callback).
    pub fn flusher(&self) -> ArchiveFlush {
        ArchiveFlush {
            requests: self.requests.clone(),
        }
    }
}

/// Asks the uploader for an upload now and waits for it.
#[derive(Debug, Clone)]
pub struct ArchiveFlush {
    requests: Sender<Sender<bool>>,
}

impl ArchiveFlush {
    /// Uploads what is sealed now, waiting up to `timeout`; true if the
    /// upload step succeeded.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (reply, answer) = mpsc::channel();
        if self.requests.send(reply).is_err() {
            return false;
        }
        answer.recv_timeout(timeout).unwrap_or(false)
    }
}

impl Drop for ArchiveRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let (reply, _) = mpsc::channel();
        let _ = self.requests.send(reply);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    dir: &Path,
    settings: &ArchiveSettings,
    metrics: &Metrics,
    archived: &ArchivedHeads,
    conflicts: &Conflicts,
    inbox: &Receiver<Sender<bool>>,
    stop: &AtomicBool,
) {
    let mut uploader: Option<Uploader> = None;
    let mut reported = std::collections::BTreeSet::new();
    let mut alerting = false;
    let mut last_error: Option<String> = None;
    loop {
        let reply = match inbox.recv_timeout(settings.interval) {
            Ok(reply) => Some(reply),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let stepped = step(dir, settings, &mut uploader);
        let lag = match (&stepped, &uploader) {
            (Ok(lag), _) => Some(*lag),
            (Err(_), Some(u)) => u.lag_now().ok(),
            (Err(_), None) => unarchived(dir, &Default::default()).ok(),
        };
        match &stepped {
            Ok(_) => {
                if last_error.take().is_some() {
                    tracing::info!("the archive {} is reachable again", settings.url);
                }
            }
            Err(e) => {
                Metrics::add(&metrics.archive_errors, 1);
                let text = e.to_string();
                if last_error.as_deref() != Some(&text) {
                    tracing::warn!("archive: {text}; retrying every {:?}", settings.interval);
                }
                last_error = Some(text);
            }
        }
        if let Some(u) = uploader.as_mut() {
            metrics.observe_archived(&u.take_latencies());
        }
        if let Some(u) = &uploader {
            let p = u.progress();
            for (chain, detail) in &p.conflicts {
                if reported.insert(chain.clone()) {
                    Metrics::add(&metrics.archive_conflicts, 1);
                    tracing::error!(
                        "archive: chain {chain} was extended by another ledger; this ledger's entries from there are not archived and the chain is not extended here ({detail})"
                    );
                }
            }
            if let Ok(mut c) = conflicts.lock() {
                c.clone_from(&p.conflicts.keys().cloned().collect());
            }
            metrics
                .archive_segments
                .store(p.segments_uploaded, Ordering::Relaxed);
            metrics
                .archive_bytes
                .store(p.bytes_uploaded, Ordering::Relaxed);
            if stepped.is_ok() {
                if let Ok(mut a) = archived.lock() {
                    *a = Some(p.archived.clone());
                }
            }
        }
        if let Some(lag) = lag {
            metrics.archive_lag_entries.store(lag, Ordering::Relaxed);
            let over = lag > settings.lag_alert_entries;
            if over && !alerting {
                tracing::warn!(
                    "ALERT archive lag: {lag} entries acknowledged locally are not archived (threshold {})",
                    settings.lag_alert_entries
                );
            } else if !over && alerting {
                tracing::info!("archive lag back to {lag} entries");
            }
            alerting = over;
            metrics
                .archive_lag_alert
                .store(u64::from(alerting), Ordering::Relaxed);
        }
        if let Some(reply) = reply {
            let _ = reply.send(stepped.is_ok());
        }
    }
}

/// One upload step; returns the lag after it.
fn step(
    dir: &Path,
    settings: &ArchiveSettings,
    uploader: &mut Option<Uploader>,
) -> Result<u64, ArchiveError> {
    if uploader.is_none() {
        let archive = Archive::open_with(&settings.url, &settings.options)?;
        *uploader = Some(Uploader::new(archive, dir)?);
    }
    let Some(u) = uploader.as_mut() else {
        return Ok(0);
    };
    Ok(u.step()?.lag_entries)
}
