//! Group commit for a SQLite database: every write goes to one writer thread, which runs all
//! writes queued meanwhile in one transaction, each in its own savepoint, and commits them with
//! one fsync. A write still returns only once it is on disk (`synchronous=FULL`), but concurrent
//! writers (thousands of nodes) share one fsync instead of queueing for one each while holding
//! the database. Used by the host's store (`flotilla_host::store`) and the signer's state store
//! (`flotilla_signer::state_db`), each with its own error type ([`Failure`]).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;

/// The errors a writer's user reports: SQLite's own, plus the writer's.
pub trait Failure: From<rusqlite::Error> + std::fmt::Display + Send + 'static {
    /// The write ran, but its batch was not committed (`reason` is SQLite's).
    fn not_committed(reason: &str) -> Self;
    /// The writer thread has stopped.
    fn closed() -> Self;
    /// The write panicked or returned something unexpected; its changes were rolled back.
    fn bug(what: &str) -> Self;
}

type Output = Box<dyn Any + Send>;
type Work<E> = Box<dyn FnOnce(&Connection) -> Result<Output, E> + Send>;
/// Told the write's outcome once its batch is committed (or not), on the writer thread.
type Done<E> = Box<dyn FnOnce(Result<Output, E>) + Send>;

struct Job<E> {
    work: Work<E>,
    done: Done<E>,
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
pub struct Writer<E: Failure> {
    jobs: Mutex<Option<mpsc::Sender<Job<E>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl<E: Failure> Writer<E> {
    /// Starts the writer thread (named `name`) on `conn`, which it alone uses from now on.
    pub fn start(conn: Connection, name: &str) -> std::io::Result<Writer<E>> {
        let (jobs, queue) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread = {
            let counters = counters.clone();
            std::thread::Builder::new()
                .name(name.into())
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
    pub fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        let (done, answer) = mpsc::sync_channel(1);
        self.submit(f, move |result| {
            let _ = done.send(result);
        });
        // Many callers waiting at once is what lets one commit serve them all.
        crate::blocking::wait_blocking(|| answer.recv()).map_err(|_| E::closed())?
    }

    /// Queues `f` for the next commit and returns at once; `done` gets `f`'s result once that
    /// commit is durable (or the reason it is not), on the writer thread, so it must be quick.
    /// Writes are committed in the order they are queued: a write is never durable before one
    /// queued earlier.
    pub fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
        done: impl FnOnce(Result<T, E>) + Send + 'static,
    ) {
        let work: Work<E> = Box::new(move |conn| f(conn).map(|v| Box::new(v) as Output));
        let done: Done<E> = Box::new(move |output: Result<Output, E>| {
            done(output.and_then(|v| {
                v.downcast::<T>()
                    .map(|v| *v)
                    .map_err(|_| E::bug("the write returned an unexpected type"))
            }))
        });
        let refused = match lock(&self.jobs).as_ref() {
            Some(jobs) => jobs.send(Job { work, done }).err().map(|e| e.0.done),
            None => Some(done),
        };
        if let Some(done) = refused {
            done(Err(E::closed()));
        }
    }

    pub fn stats(&self) -> WriteStats {
        WriteStats {
            writes: self.counters.writes.load(Ordering::Relaxed),
            commits: self.counters.commits.load(Ordering::Relaxed),
        }
    }
}

impl<E: Failure> Drop for Writer<E> {
    fn drop(&mut self) {
        lock(&self.jobs).take();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn run<E: Failure>(conn: Connection, queue: mpsc::Receiver<Job<E>>, counters: &Counters) {
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
        commit(&conn, batch, counters);
    }
}

/// One transaction for the whole batch; answers every job once it is committed (or not),
/// counted first, so a caller's stats include its own commit.
fn commit<E: Failure>(conn: &Connection, batch: Vec<Job<E>>, counters: &Counters) {
    if let Err(e) = run_sql(conn, "BEGIN IMMEDIATE") {
        let reason = e.to_string();
        for job in batch {
            (job.done)(Err(E::not_committed(&reason)));
        }
        return;
    }
    let mut answers = Vec::with_capacity(batch.len());
    let mut aborted: Option<String> = None;
    for job in batch {
        if let Some(reason) = &aborted {
            (job.done)(Err(E::not_committed(reason)));
            continue;
        }
        match run_one(conn, job.work) {
            Ok(result) => answers.push((job.done, result)),
            Err(e) => {
                // The savepoint itself failed: the transaction's state is unknown.
                aborted = Some(e.to_string());
                (job.done)(Err(e));
            }
        }
    }
    let committed = match aborted {
        Some(reason) => Err(reason),
        None => run_sql(conn, "COMMIT").map_err(|e| e.to_string()),
    };
    match committed {
        Ok(()) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            for (done, result) in answers {
                done(result);
            }
        }
        Err(reason) => {
            let _ = run_sql(conn, "ROLLBACK");
            for (done, result) in answers {
                done(result.and(Err(E::not_committed(&reason))));
            }
        }
    }
}

/// Runs one job in a savepoint. The outer error is the savepoint's own (fatal to the batch);
/// the inner result is the job's, whose changes are undone if it failed.
fn run_one<E: Failure>(conn: &Connection, work: Work<E>) -> Result<Result<Output, E>, E> {
    run_sql(conn, "SAVEPOINT write")?;
    let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
        tracing::error!("a database write panicked; its changes are rolled back");
        Err(E::bug("the write panicked"))
    });
    if result.is_err() {
        run_sql(conn, "ROLLBACK TO write")?;
    }
    run_sql(conn, "RELEASE write")?;
    Ok(result)
}

/// Runs a transaction-control statement, prepared once per connection.
fn run_sql(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
