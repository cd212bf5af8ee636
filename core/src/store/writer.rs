//! Group commit. Every write of the host goes to one writer thread, which runs all writes
//! queued meanwhile in one transaction, each in its own savepoint, and commits them with one
//! fsync. A write still returns only once it is on disk (`synchronous=FULL`, as LDK requires
//! of monitor updates), but concurrent writers (thousands of nodes) share one fsync instead of
//! queueing for one each while holding the database.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::StoreError;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&Connection) -> Result<Output, StoreError> + Send>;

struct Job {
    work: Work,
    done: mpsc::SyncSender<Result<Output, StoreError>>,
}

/// Writes committed together at most: bounds how long the first of them waits.
const MAX_BATCH: usize = 1024;

/// Writes and commits so far: writes per commit is what group commit saves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub writes: u64,
    pub commits: u64,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    commits: AtomicU64,
}

/// The writer thread and the queue to it. Dropping it lets queued writes finish, then closes
/// the write connection.
pub(super) struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    pub(super) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (jobs, queue) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread = {
            let counters = counters.clone();
            std::thread::Builder::new()
                .name("flotilla-store-writer".into())
                .spawn(move || run(conn, queue, &counters))?
        };
        Ok(Writer {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
            counters,
        })
    }

    /// Runs `f` in the next commit and returns its result once that commit is durable. If `f`
    /// fails (or panics) its own changes are rolled back and the batch goes on without them.
    pub(super) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (done, answer) = mpsc::sync_channel(1);
        let work: Work = Box::new(move |conn| f(conn).map(|v| Box::new(v) as Output));
        let sent = lock(&self.jobs)
            .as_ref()
            .map(|jobs| jobs.send(Job { work, done }).is_ok());
        if sent != Some(true) {
            return Err(closed());
        }
        // Many callers waiting at once is what lets one commit serve them all.
        let output = crate::blocking::wait_blocking(|| answer.recv()).map_err(|_| closed())??;
        output
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|_| StoreError::InvalidValue("write returned an unexpected type".into()))
    }

    pub(super) fn stats(&self) -> WriteStats {
        WriteStats {
            writes: self.counters.writes.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        lock(&self.jobs).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<Job>, counters: &Counters) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        counters
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if commit(&conn, batch) {
            counters.commits.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One transaction for the whole batch; answers every job once it is committed (or not).
fn commit(conn: &Connection, batch: Vec<Job>) -> bool {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let reason = e.to_string();
        for job in batch {
            let _ = job.done.send(Err(not_committed(&reason)));
        }
        return false;
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut aborted: Option<String> = None;
    for job in batch {
        if let Some(reason) = &aborted {
            let _ = job.done.send(Err(not_committed(reason)));
            continue;
        }
        match run_one(conn, job.work) {
            Ok(result) => answers.push((job.done, result)),
            Err(e) => {
                // The savepoint itself failed: the transaction's state is unknown.
                aborted = Some(e.to_string());
                let _ = job.done.send(Err(e));
            }
        }
    }
    let committed = match aborted {
        Some(reason) => Err(reason),
        None => conn.execute_batch("COMMIT").map_err(|e| e.to_string()),
    };
    match committed {
        Ok(()) => {
            for (done, result) in answers {
                let _ = done.send(result);
            }
            true
        }
        Err(reason) => {
            let _ = conn.execute_batch("ROLLBACK");
            for (done, result) in answers {
                let _ = done.send(result.and(Err(not_committed(&reason))));
            }
            false
        }
    }
}

/// Runs one job in a savepoint. The outer error is the savepoint's own (fatal to the batch);
/// the inner result is the job's, whose changes are undone if it failed.
fn run_one(conn: &Connection, work: Work) -> Result<Result<Output, StoreError>, StoreError> {
    conn.execute_batch("SAVEPOINT write")?;
    let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
        tracing::error!("a database write panicked; its changes are rolled back");
        Err(StoreError::InvalidValue("the write panicked".into()))
    });
    if result.is_err() {
        conn.execute_batch("ROLLBACK TO write")?;
    }
    conn.execute_batch("RELEASE write")?;
    Ok(result)
}

fn not_committed(reason: &str) -> StoreError {
    StoreError::Io(std::io::Error::other(format!(
        "the write was not committed: {reason}"
    )))
}

fn closed() -> StoreError {
    StoreError::Io(std::io::Error::other("the database writer has stopped"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
