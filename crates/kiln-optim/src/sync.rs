//! Data-parallel training's seam: the optimizers average their gradients over every process of a
//! run through a [`GradSync`], whatever engine carries the bytes.
//!
//! # Why the optimizer, and why installed rather than passed
//! In data-parallel training every process (a *rank*) runs the same step on its own share of the
//! batch; before the update, each gradient is replaced by its mean over the ranks, so every rank
//! applies the same update to the same weights. The update happens in [`crate::Optim::step`], which
//! every family's task calls — a GAN twice, once per network — so that is the one place the
//! averaging reaches them all without a parameter threaded through each family's task. The
//! trainer installs the engine on the thread that runs the steps, for as long as the run lasts
//! ([`install`] returns a guard); other threads — and other runs in the same process, such as
//! tests — train alone.
//!
//! # What crosses the wire
//! One flat `f32` buffer per update: the gradients of every parameter in module-path order
//! (`decoder.0.weight`, …), which every rank builds identically — unlike burn's `ParamId`s, random
//! per process. One round trip per optimizer step, not one per tensor. On an optimizer's first
//! update its module's weights are also broadcast from rank 0, so ranks whose initial weights
//! differed (another seed, a parameter drawn lazily in another order) hold one model from then on;
//! that first step's gradients are still each rank's own, so ranks should start alike — kiln's
//! trainer seeds every rank with the run's seed.
//!
//! # Failures
//! `Optim::step` cannot return an error (its callers are every family's step). A failed exchange
//! leaves the weights as they were and is kept here; the trainer asks [`take_failure`] after each
//! step and stops the run with it, naming what the engine said.

use std::cell::RefCell;
use std::sync::Arc;

/// Why an exchange between ranks failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rank {rank} of {world}: {message}")]
pub struct SyncError {
    /// This process's rank.
    pub rank: usize,
    /// The number of ranks.
    pub world: usize,
    /// What went wrong (a peer that died, a timeout, a mismatch).
    pub message: String,
}

/// A collective engine as kiln's optimizers need it. [`ThreadGroup`] runs ranks as threads of one
/// process; an engine between processes and hosts implements the same four methods.
///
/// Not burn-collective 0.21, which BURN.md names as the candidate: its global (multi-process)
/// mode completes one all-reduce per process and then hangs in every later one — its peer
/// barrier (`SyncService::sync`) clears a *copy* of the list of peers that have arrived, so from
/// the second call on the list never matches again (read in burn-collective-0.21.0's
/// `global/node/sync.rs`, and reproduced with two kiln processes: the second exchange waited until
/// the timeout). A training step needs thousands of them.
pub trait GradSync: Send + Sync + std::fmt::Debug {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Replaces `values` by their element-wise mean over all ranks. Every rank calls it with a
    /// buffer of the same length, in the same order of calls.
    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<(), SyncError>;

    /// Replaces `values` on every rank by rank 0's.
    fn broadcast(&self, values: &mut [f32]) -> Result<(), SyncError>;

    /// Exchanges so far and the seconds spent in them (waiting included), if the engine counts.
    fn exchange_time(&self) -> Option<(usize, f64)> {
        None
    }

    /// Whether any rank said `yes` (a stop asked on one rank stops them all at the same step).
    fn any(&self, yes: bool) -> Result<bool, SyncError> {
        let mut flag = [if yes { 1.0 } else { 0.0 }];
        self.all_reduce_mean(&mut flag)?;
        Ok(flag[0] > 0.0)
    }

    /// Checks every rank holds the same `digest` (of its experiment, say), naming the first rank
    /// that does not agree with rank 0 only as "a rank" (the mean cannot say which).
    fn agree(&self, digest: u64) -> Result<(), SyncError> {
        // Four 16-bit pieces: exact in f32, so the mean equals the piece only if all agree.
        let pieces: Vec<f32> = (0..4).map(|i| ((digest >> (16 * i)) & 0xFFFF) as f32).collect();
        let mut mean = pieces.clone();
        self.all_reduce_mean(&mut mean)?;
        if mean != pieces {
            return Err(SyncError {
                rank: self.rank(),
                world: self.world_size(),
                message: "the ranks disagree on the experiment (different files, flags or data); every rank must \
                          train the same one"
                    .into(),
            });
        }
        Ok(())
    }
}

thread_local! {
    static INSTALLED: RefCell<Option<Arc<dyn GradSync>>> = const { RefCell::new(None) };
    static FAILURE: RefCell<Option<SyncError>> = const { RefCell::new(None) };
}

/// While the returned guard lives, every optimizer stepping on this thread averages its
/// gradients through `sync`.
#[must_use = "the engine is uninstalled when the guard is dropped"]
pub fn install(sync: Arc<dyn GradSync>) -> Installed {
    INSTALLED.with(|slot| *slot.borrow_mut() = Some(sync));
    FAILURE.with(|slot| *slot.borrow_mut() = None);
    Installed(())
}

/// Keeps a [`GradSync`] installed on this thread; dropping it goes back to training alone.
#[derive(Debug)]
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        INSTALLED.with(|slot| *slot.borrow_mut() = None);
    }
}

/// The engine this thread's optimizers use now, if any.
pub fn installed() -> Option<Arc<dyn GradSync>> {
    INSTALLED.with(|slot| slot.borrow().clone())
}

/// Records a failed exchange (the first one is kept).
pub(crate) fn fail(error: SyncError) {
    FAILURE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    });
}

/// The exchange that failed on this thread since the last call, if one did: the trainer stops
/// the run with it.
pub fn take_failure() -> Option<SyncError> {
    FAILURE.with(|slot| slot.borrow_mut().take())
}

/// Ranks as threads of one process, exchanging through shared memory: data-parallel training
/// over several devices driven from one process (one thread per device), and the engine the
/// tests of the seam run on. [`ThreadGroup::ranks`] makes one handle per rank; each thread
/// installs its own.
#[derive(Debug)]
pub struct ThreadGroup {
    world: usize,
    barrier: std::sync::Barrier,
    slots: std::sync::Mutex<Vec<Vec<f32>>>,
}

/// One rank of a [`ThreadGroup`].
#[derive(Debug, Clone)]
pub struct ThreadRank {
    group: Arc<ThreadGroup>,
    rank: usize,
}

impl ThreadGroup {
    /// The `world` ranks of a new group, rank `r` at index `r`.
    pub fn ranks(world: usize) -> Vec<ThreadRank> {
        let group = Arc::new(Self {
            world,
            barrier: std::sync::Barrier::new(world),
            slots: std::sync::Mutex::new(vec![Vec::new(); world]),
        });
        (0..world).map(|rank| ThreadRank { group: group.clone(), rank }).collect()
    }
}

impl ThreadRank {
    fn slots(&self) -> Result<std::sync::MutexGuard<'_, Vec<Vec<f32>>>, SyncError> {
        self.group.slots.lock().map_err(|_| SyncError {
            rank: self.rank,
            world: self.group.world,
            message: "another rank's thread panicked during an exchange".into(),
        })
    }
}

impl GradSync for ThreadRank {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.group.world
    }

    fn all_reduce_mean(&self, values: &mut [f32]) -> Result<(), SyncError> {
        self.slots()?[self.rank] = values.to_vec();
        self.group.barrier.wait();
        {
            // Every rank sums in rank order, so all get the same bits.
            let slots = self.slots()?;
            if slots.iter().any(|s| s.len() != values.len()) {
                return Err(SyncError {
                    rank: self.rank,
                    world: self.group.world,
                    message: "the ranks exchanged buffers of different lengths: they run different models".into(),
                });
            }
            for (i, v) in values.iter_mut().enumerate() {
                *v = slots.iter().map(|s| s[i]).sum::<f32>() / self.group.world as f32;
            }
        }
        // No rank writes its next buffer before every rank has read this one.
        self.group.barrier.wait();
        Ok(())
    }

    fn broadcast(&self, values: &mut [f32]) -> Result<(), SyncError> {
        if self.rank == 0 {
            self.slots()?[0] = values.to_vec();
        }
        self.group.barrier.wait();
        let copied = {
            let slots = self.slots()?;
            (slots[0].len() == values.len()).then(|| values.copy_from_slice(&slots[0]))
        };
        self.group.barrier.wait();
        copied.ok_or_else(|| SyncError {
            rank: self.rank,
            world: self.group.world,
            message: "rank 0 broadcast a buffer of another length: the ranks run different models".into(),
        })
    }
}
