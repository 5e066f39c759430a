//! Data-parallel kiln runs across processes and hosts: [`MpiSync`], a [`kiln_optim::GradSync`]
//! on MPI. Built with the `mpi` feature (it links the system's MPI library); without it this
//! crate is empty.
//!
//! # The engine, and the others weighed
//! - **MPI** (chosen), through rsmpi: the maintained standard for collectives between processes
//!   on one or many hosts, on CPUs (and GPUs through host memory). `mpirun` is the launcher users
//!   of clusters already have (hostfiles, schedulers), and it stops the whole job when one rank
//!   dies — the behaviour a data-parallel run needs. Costs: a system library and libclang at build
//!   time, so it is an optional feature.
//! - **burn-collective 0.21** (burn's own, pure Rust): tried first. Its global mode completes one
//!   all-reduce per process and hangs in the second — `SyncService::sync`, which ends every
//!   all-reduce, clears a copy of its list of arrived peers rather than the list — and it was
//!   removed upstream after 0.21.
//! - **NCCL through cudarc**: the engine between GPUs, GPU only; a `GradSync` for it would sit
//!   beside this one.
//!
//! # Threads
//! MPI is initialised and called on one dedicated thread (`MPI_THREAD_SINGLE` holds: no other
//! thread touches MPI), which the training thread hands each exchange to and waits for a bounded
//! time — so a rank whose peers vanished without `mpirun` noticing still stops with an error
//! instead of hanging.
#![cfg(feature = "mpi")]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use kiln_optim::{GradSync, SyncError};
use mpi::collective::SystemOperation;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

/// Whether this process was started by an MPI launcher (Open MPI's `mpirun`, MPICH's or Intel's
/// `mpiexec`, Slurm's `srun` with PMI): the variables they set for each rank.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MV2_COMM_WORLD_SIZE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

enum Op {
    Mean,
    Broadcast,
}

struct Job {
    op: Op,
    values: Vec<f32>,
    reply: Sender<Vec<f32>>,
}

/// This process's rank of an MPI job (`MPI_COMM_WORLD`), as a [`GradSync`].
#[derive(Debug)]
pub struct MpiSync {
    rank: usize,
    world: usize,
    timeout: Duration,
    jobs: Mutex<Option<Sender<Job>>>,
    exchanger: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set once an exchange timed out: the MPI thread may be stuck in it, so later ones fail at once.
    broken: AtomicBool,
    /// Exchanges done, and nanoseconds spent in them (waiting for the slowest rank included).
    exchanges: AtomicU64,
    exchange_ns: AtomicU64,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("values", &self.values.len()).finish_non_exhaustive()
    }
}

impl MpiSync {
    /// Initialises MPI on its own thread and joins `MPI_COMM_WORLD`; every exchange may take at
    /// most `timeout`.
    pub fn init(timeout: Duration) -> Result<Self, SyncError> {
        let err = |message: String| SyncError { rank: 0, world: 0, message };
        let (jobs, inbox) = channel::<Job>();
        let (ready, joined) = channel::<Option<(usize, usize)>>();
        let exchanger = std::thread::Builder::new()
            .name("kiln-mpi".into())
            .spawn(move || exchange_thread(&ready, &inbox))
            .map_err(|e| err(format!("starting the MPI thread: {e}")))?;
        let (rank, world) = joined
            .recv_timeout(timeout)
            .map_err(|_| err(format!("MPI did not start within {:.0} s", timeout.as_secs_f64())))?
            .ok_or_else(|| err("MPI could not be initialised (is it already, in this process?)".into()))?;
        Ok(Self {
            rank,
            world,
            timeout,
            jobs: Mutex::new(Some(jobs)),
            exchanger: Mutex::new(Some(exchanger)),
            broken: AtomicBool::new(false),
            exchanges: AtomicU64::new(0),
            exchange_ns: AtomicU64::new(0),
        })
    }

    fn error(&self, message: String) -> SyncError {
        SyncError { rank: self.rank, world: self.world, message }
    }

    fn exchange(&self, op: Op, values: &mut [f32]) -> Result<(), SyncError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(self.error("an earlier exchange timed out; the run cannot continue".into()));
        }
        let started = std::time::Instant::now();
        let (reply, answer) = channel();
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.as_ref().is_some_and(|j| j.send(Job { op, values: values.to_vec(), reply }).is_ok()),
            Err(_) => false,
        };
        if !sent {
            return Err(self.error("the MPI thread is gone".into()));
        }
        match answer.recv_timeout(self.timeout) {
            Ok(out) => {
                values.copy_from_slice(&out);
                self.exchanges.fetch_add(1, Ordering::Relaxed);
                self.exchange_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(_) => {
                self.broken.store(true, Ordering::SeqCst);
                Err(self.error(format!(
                    "no answer from the other ranks within {:.0} s: a rank died, hangs or lost its connection",
                    self.timeout.as_secs_f64()
                )))
            }
        }
    }
}

impl Drop for MpiSync {
    fn drop(&mut self) {
        // Closing the channel ends the MPI thread, which finalises MPI (a collective call: every
        // rank finishes its exchanges first). A thread stuck in a timed-out exchange is left.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if !self.broken.load(Ordering::SeqCst)
            && let Ok(mut exchanger) = self.exchanger.lock()
            && let Some(handle) = exchanger.take()
        {
            let _ = handle.join();
        }
    }
}

impl GradSync for MpiSync {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<(), SyncError> {
        self.exchange(Op::Mean, values)
    }

    fn broadcast(&self, values: &mut [f32]) -> Result<(), SyncError> {
        self.exchange(Op::Broadcast, values)
    }

    fn exchange_time(&self) -> Option<(usize, f64)> {
        let n = self.exchanges.load(Ordering::Relaxed) as usize;
        Some((n, self.exchange_ns.load(Ordering::Relaxed) as f64 * 1e-9))
    }
}

/// Owns MPI: initialises it, answers each job with one collective, finalises when the channel
/// closes. A rank given buffers of another length than its peers' would make MPI abort the job
/// (mpirun reports it), as every other MPI error does.
fn exchange_thread(ready: &Sender<Option<(usize, usize)>>, inbox: &Receiver<Job>) {
    let Some(universe) = mpi::initialize() else {
        let _ = ready.send(None);
        return;
    };
    let world = universe.world();
    let (rank, size) = (world.rank() as usize, world.size() as usize);
    let _ = ready.send(Some((rank, size)));
    for job in inbox {
        let out = match job.op {
            Op::Mean => {
                let mut sum = vec![0.0f32; job.values.len()];
                world.all_reduce_into(&job.values[..], &mut sum[..], SystemOperation::sum());
                // Every rank divides the same sum by the same count: the same bits everywhere.
                sum.iter().map(|s| s / size as f32).collect()
            }
            Op::Broadcast => {
                let mut values = job.values;
                world.process_at_rank(0).broadcast_into(&mut values[..]);
                values
            }
        };
        let _ = job.reply.send(out);
    }
    drop(universe);
}
