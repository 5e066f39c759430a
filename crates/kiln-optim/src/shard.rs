//! One batch's gradient computed in slices ("shards"), at the same time where the backend can.
//!
//! A step of a model built from many small ops — DRAW's 64 LSTM steps at batch 64, where every
//! op is a few thousand floats, or a small diffusion U-Net — cannot keep a second core busy op by
//! op: waking another thread costs about as much as the op. Cut the batch in two instead and step each half through the whole network
//! on its own core, and both cores are busy for the whole step. The halves' losses are weighted
//! by their share of the batch, so their gradients add up to the whole batch's (up to float
//! rounding: the sums are grouped differently), and [`crate::Optim::step_shards`] folds them in
//! as one update.
//!
//! Who runs the shards at the same time is the backend's business: kiln-device registers
//! kiln-cpu's [`ShardRunner`] for the CPU. Without one (other backends, or `KILN_FUSED=0`) the
//! shards run one after the other, which gives the same bits: each shard's work is the same
//! whichever thread runs it, and the gradients are added in shard order. A run's numbers thus
//! depend on its shard count, which is a setting of the experiment, never on the machine.
//!
//! Only for models whose examples do not interact within a step: a batch-norm layer would
//! normalise each shard with its own statistics. Random draws inside a shard come from burn's one
//! global generator in whatever order the threads reach it, so a sharded model draws its noise
//! for the whole batch before the split.

use std::ops::Range;
use std::sync::Mutex;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use kiln_kernels::fused::{self, ShardRunner};

/// What one shard gave back: its slice of the batch, the model it ran, its gradients (of its loss
/// weighted by its share of the batch) and whatever else the closure returned (the loss terms,
/// for metrics).
pub struct Shard<B: AutodiffBackend, M, T> {
    /// The examples of the batch this shard took.
    pub range: Range<usize>,
    /// The model the shard ran: with several shards a copy of the caller's with parameters of its
    /// own (see [`backward_shards`]), whose gradients `grads` holds; with one, the caller's.
    pub model: M,
    /// The gradients of `loss · len/n`.
    pub grads: B::Gradients,
    /// The closure's second result.
    pub out: T,
}

impl<B: AutodiffBackend, M, T> Shard<B, M, T> {
    /// This shard's share of the batch, `len / n`: the weight of its per-example means.
    pub fn weight(&self, n: usize) -> f64 {
        self.range.len() as f64 / n as f64
    }
}

/// The batch's means of per-shard means `out` (loss terms, say): each weighted by its shard's
/// share of the batch and added in shard order. With one shard, its terms as they are.
///
/// # Panics
/// If `shards` is empty ([`backward_shards`] never returns no shard).
pub fn batch_means<B, M, T, const K: usize>(shards: &[Shard<B, M, [Tensor<T, 1>; K]>]) -> [Tensor<T, 1>; K]
where
    B: AutodiffBackend,
    T: Backend,
{
    let n: usize = shards.iter().map(|s| s.range.len()).sum();
    let mut sums: [Option<Tensor<T, 1>>; K] = std::array::from_fn(|_| None);
    for shard in shards {
        let w = shard.weight(n);
        for (sum, t) in sums.iter_mut().zip(shard.out.clone()) {
            let t = if shards.len() == 1 { t } else { t * w };
            *sum = Some(match sum.take() {
                Some(s) => s + t,
                None => t,
            });
        }
    }
    sums.map(|s| s.expect("batch_means of no shard"))
}

/// The batch `0..n` cut into `shards` contiguous slices (at most `n`, at least one) that differ in
/// length by at most one, the longer ones first.
pub fn shard_ranges(n: usize, shards: usize) -> Vec<Range<usize>> {
    let k = shards.clamp(1, n.max(1));
    let (len, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let end = start + len + usize::from(i < extra);
            let range = start..end;
            start = end;
            range
        })
        .collect()
}

/// Calls `loss(model, range)` for each slice of a batch of `n` examples ([`shard_ranges`]), where
/// `loss` returns the slice's loss as a mean over its examples, `[1]`, and anything else the
/// caller wants back; back-propagates each loss weighted by the slice's share of the batch, and
/// returns the shards in batch order, for [`crate::Optim::step_shards`]. The shards run at the
/// same time where backend `B` has a [`ShardRunner`] registered, else one after the other; with
/// one shard, `loss(model, 0..n)` runs here unweighted, exactly as an unsharded step would.
///
/// With several shards each runs a copy of `model` whose parameters are fresh autodiff leaves:
/// burn's autodiff joins every graph that touches a tracked tensor into one, behind one lock, so
/// shards sharing the caller's parameters would share one graph — stepping it in turn at best, and
/// at worst deadlocking (burn-autodiff 0.21 takes its graph-locator lock and a graph's lock in one
/// order when registering an op and in the other when a backward pass ends).
///
/// # Panics
/// If `loss` panics (on whichever thread ran it).
pub fn backward_shards<B, M, T, F>(model: &M, n: usize, shards: usize, loss: F) -> Vec<Shard<B, M, T>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Sync,
    T: Send,
    F: Fn(&M, Range<usize>) -> (Tensor<B, 1>, T) + Sync,
{
    let ranges = shard_ranges(n, shards);
    let k = ranges.len();
    if k == 1 {
        let (value, out) = loss(model, 0..n);
        return vec![Shard { range: 0..n, model: model.clone(), grads: value.backward(), out }];
    }
    // Every parameter read here first: reading one that burn initialises lazily draws it from the
    // global generator, which the shards' threads would reach in no fixed order. (Each shard then
    // reads the model again rather than cloning this: a clone of an inner parameter forgets that
    // the parameter is trained.)
    drop(model.valid());
    let run = |i: usize| {
        let range = ranges[i].clone();
        let copy = M::from_inner(model.valid());
        let (value, out) = loss(&copy, range.clone());
        let grads = (value * (range.len() as f64 / n as f64)).backward();
        Shard { range, model: copy, grads, out }
    };
    let slots: Vec<Mutex<Option<Shard<B, M, T>>>> = (0..k).map(|_| Mutex::new(None)).collect();
    let job = |i: usize| {
        let shard = run(i);
        *slots[i].lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(shard);
    };
    match fused::find::<ShardRunner<B>>() {
        Some(ShardRunner(runner, _)) => runner(k, &job),
        None => (0..k).for_each(job),
    }
    slots
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .expect("every shard ran: the runner returns only once all have")
        })
        .collect()
}
