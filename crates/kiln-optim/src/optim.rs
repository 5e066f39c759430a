//! Adam and AdamW over any `AutodiffModule`, with schedules, global-norm clipping and gradient
//! accumulation, and state keyed by parameter path.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, ElementConversion, Tensor, TensorData, TensorPrimitive};
use kiln_kernels::fused::{self, AdamKernel, AdamUpdate};
use serde::{Deserialize, Serialize};

use crate::params::{PathStack, UpdateFloats, VisitGrads};
use crate::shard::Shard;
use crate::state::state_err;
use crate::sync::{GradSync, SyncError};
use crate::{Decay, OptimError, Schedule, TensorFile};

/// Which update rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OptimKind {
    /// Adam; `weight_decay` is an L2 term added to the gradient.
    #[default]
    Adam,
    /// AdamW; `weight_decay` shrinks the weights directly, scaled by the learning rate.
    Adamw,
}

/// Optimiser settings, as written under `[train.optim]` in an experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// `adam` or `adamw`.
    pub kind: OptimKind,
    /// Base learning rate.
    pub lr: f64,
    /// First-moment decay β₁ (GANs often use 0.0 or 0.5).
    pub beta1: f64,
    /// Second-moment decay β₂.
    pub beta2: f64,
    /// Added to √v̂ in the denominator.
    pub eps: f64,
    /// Weight decay (see [`OptimKind`]).
    pub weight_decay: f64,
    /// Linear warm-up, in updates.
    pub warmup: usize,
    /// Decay after warm-up: `constant`, `cosine` or `linear`.
    pub decay: Decay,
    /// Final learning-rate factor of a cosine or linear decay.
    pub min_lr_factor: f64,
    /// Rescale the gradient so its global L2 norm is at most this.
    pub clip_norm: Option<f64>,
    /// Average the gradients of this many calls to [`Optim::step`] before one update.
    pub accumulate: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            kind: OptimKind::Adam,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            warmup: 0,
            decay: Decay::Constant,
            min_lr_factor: 0.0,
            clip_norm: None,
            accumulate: 1,
        }
    }
}

impl OptimConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), OptimError> {
        let bad = |field, value: f64, reason| Err(OptimError::Config { field, value: value.to_string(), reason });
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("optim.lr", self.lr, "must be a positive number");
        }
        for (field, v) in [("optim.beta1", self.beta1), ("optim.beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(field, v, "must be in [0, 1)");
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("optim.eps", self.eps, "must be a positive number");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("optim.weight_decay", self.weight_decay, "must be zero or positive");
        }
        if !(0.0..=1.0).contains(&self.min_lr_factor) {
            return bad("optim.min_lr_factor", self.min_lr_factor, "must be in [0, 1]");
        }
        if let Some(c) = self.clip_norm
            && !(c.is_finite() && c > 0.0)
        {
            return bad("optim.clip_norm", c, "must be a positive number");
        }
        if self.accumulate == 0 {
            return bad("optim.accumulate", 0.0, "must be at least 1");
        }
        Ok(())
    }

    /// The learning-rate schedule these settings describe.
    pub fn schedule(&self) -> Schedule {
        Schedule { warmup: self.warmup, decay: self.decay, min_factor: self.min_lr_factor }
    }
}

/// Adam's running moments of one parameter, flattened.
struct Moments<B: Backend> {
    m: Tensor<B, 1>,
    v: Tensor<B, 1>,
}

/// An Adam/AdamW optimiser for one module (a GAN has two: one per network).
pub struct Optim<B: AutodiffBackend> {
    config: OptimConfig,
    schedule: Schedule,
    /// Updates planned for the run, for the schedule's decay.
    total_updates: usize,
    /// Updates applied so far (Adam's `t`).
    updates: usize,
    /// Gradients summed over the calls since the last update, by path.
    pending: BTreeMap<String, Tensor<B::InnerBackend, 1>>,
    /// Calls folded into `pending`.
    micro: usize,
    moments: BTreeMap<String, Moments<B::InnerBackend>>,
    last_grad_norm: Option<f64>,
}

impl<B: AutodiffBackend> std::fmt::Debug for Optim<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Optim")
            .field("config", &self.config)
            .field("total_updates", &self.total_updates)
            .field("updates", &self.updates)
            .field("micro", &self.micro)
            .finish_non_exhaustive()
    }
}

impl<B: AutodiffBackend> Optim<B> {
    /// An optimiser with no state yet, for a run of `total_updates` updates (the schedule's
    /// length; use the run's step count divided by `accumulate`).
    pub fn new(config: OptimConfig, total_updates: usize) -> Result<Self, OptimError> {
        config.validate()?;
        Ok(Self {
            schedule: config.schedule(),
            config,
            total_updates,
            updates: 0,
            pending: BTreeMap::new(),
            micro: 0,
            moments: BTreeMap::new(),
            last_grad_norm: None,
        })
    }

    /// The settings.
    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Updates applied so far.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// The learning rate the next update will use.
    pub fn lr(&self) -> f64 {
        self.config.lr * self.schedule.factor(self.updates, self.total_updates)
    }

    /// The global gradient norm before clipping at the last update (only measured when
    /// `clip_norm` is set, since it costs a device→host transfer).
    pub fn last_grad_norm(&self) -> Option<f64> {
        self.last_grad_norm
    }

    /// Folds in the gradients `grads` of `model`'s parameters and, every `accumulate` calls,
    /// updates the model with their mean. Parameters without a gradient (frozen ones, batch-norm
    /// statistics) are left alone.
    pub fn step<M: AutodiffModule<B>>(&mut self, model: M, grads: &B::Gradients) -> M {
        self.fold(&model, grads);
        self.update(model)
    }

    /// [`Optim::step`] for one batch whose gradient was computed in slices
    /// ([`crate::backward_shards`]): the slices' gradients, each read from the slice's copy of
    /// the model and added in slice order, are folded in as one call, and `model` is updated.
    pub fn step_shards<M: AutodiffModule<B>, T>(&mut self, model: M, shards: &[Shard<B, M, T>]) -> M {
        for shard in shards {
            self.fold(&shard.model, &shard.grads);
        }
        self.update(model)
    }

    /// Adds the gradients `grads` of `model`'s parameters to the pending sums, by path.
    fn fold<M: AutodiffModule<B>>(&mut self, model: &M, grads: &B::Gradients) {
        let pending = &mut self.pending;
        model.visit(&mut VisitGrads {
            path: PathStack::default(),
            grads,
            f: |path: &str, grad: Tensor<B::InnerBackend, 1>| {
                let sum = match pending.remove(path) {
                    Some(sum) => sum + grad,
                    None => grad,
                };
                pending.insert(path.to_string(), sum);
            },
        });
    }

    /// Counts one folded call and, every `accumulate` calls, updates `model` with the mean.
    fn update<M: AutodiffModule<B>>(&mut self, model: M) -> M {
        let accumulate = self.config.accumulate;
        self.micro += 1;
        if self.micro < accumulate {
            return model;
        }
        self.micro = 0;
        let mut grads = std::mem::take(&mut self.pending);
        // Data-parallel: every rank starts from rank 0's weights and applies the mean gradient
        // (see `sync`); a failed exchange leaves the weights alone and stops the run.
        let mut model = model;
        if let Some(sync) = crate::sync::installed() {
            let exchanged = if self.updates == 0 { broadcast_weights(model, sync.as_ref()) } else { Ok(model) };
            model = match exchanged {
                Ok(model) => model,
                Err((model, e)) => {
                    crate::sync::fail(e);
                    return model;
                }
            };
            if let Err(e) = average::<B::InnerBackend>(&mut grads, sync.as_ref()) {
                crate::sync::fail(e);
                return model;
            }
        }

        // Ordered maps: the global norm sums the parameters in path order, so it is the same float
        // in every process (a hash map's order would change its last bits from run to run).
        let mut scale = 1.0 / accumulate as f64;
        self.last_grad_norm = None;
        if let Some(max_norm) = self.config.clip_norm {
            let squares: Vec<Tensor<B::InnerBackend, 1>> =
                grads.values().map(|g| (g.clone() * g.clone()).sum()).collect();
            let norm = if squares.is_empty() {
                0.0
            } else {
                Tensor::cat(squares, 0).sum().into_scalar().elem::<f64>().sqrt() * scale
            };
            self.last_grad_norm = Some(norm);
            if norm > max_norm {
                scale *= max_norm / (norm + 1e-6);
            }
        }

        let c = &self.config;
        let t = (self.updates + 1) as i32;
        let lr = self.lr();
        let (b1, b2) = (c.beta1, c.beta2);
        let step_size = lr / (1.0 - b1.powi(t));
        let inv_sqrt_bc2 = 1.0 / (1.0 - b2.powi(t)).sqrt();
        let (eps, wd, kind) = (c.eps, c.weight_decay, c.kind);
        let moments = &mut self.moments;
        // A backend's one-pass update (kiln-cpu's), on the same scalars rounded to f32 as the
        // tensor ops below would round them, and giving the same bits.
        let fused = fused::find::<AdamKernel<B::InnerBackend>>();
        let update = AdamUpdate {
            grad_scale: (scale != 1.0).then_some(scale as f32),
            l2: (kind == OptimKind::Adam && wd > 0.0).then_some(wd as f32),
            beta1: b1 as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2: b2 as f32,
            one_minus_beta2: (1.0 - b2) as f32,
            inv_sqrt_bc2: inv_sqrt_bc2 as f32,
            eps: eps as f32,
            decay: (kind == OptimKind::Adamw && wd > 0.0).then_some((1.0 - lr * wd) as f32),
            step_size: step_size as f32,
        };
        let model = model.map(&mut UpdateFloats {
            path: PathStack::default(),
            f: |path: &str, mut w: Tensor<B::InnerBackend, 1>| {
                let mut g = grads.remove(path)?;
                if let Some(AdamKernel(kernel)) = fused {
                    let primitive = |t: &Tensor<B::InnerBackend, 1>| t.clone().into_primitive().tensor();
                    let tensor = |p| Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(p));
                    // Handed over, not cloned: the kernel may then update them in place.
                    let old = moments
                        .remove(path)
                        .map(|Moments { m, v }| (m.into_primitive().tensor(), v.into_primitive().tensor()));
                    match kernel(&update, &primitive(&w), &primitive(&g), old) {
                        Ok([w, m, v]) => {
                            moments.insert(path.to_string(), Moments { m: tensor(m), v: tensor(v) });
                            return Some(tensor(w));
                        }
                        Err(old) => {
                            if let Some((m, v)) = old {
                                moments.insert(path.to_string(), Moments { m: tensor(m), v: tensor(v) });
                            }
                        }
                    }
                }
                if scale != 1.0 {
                    g = g.mul_scalar(scale);
                }
                if kind == OptimKind::Adam && wd > 0.0 {
                    g = g + w.clone().mul_scalar(wd);
                }
                let (m, v) = match moments.remove(path) {
                    Some(Moments { m, v }) => (
                        m.mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1),
                        v.mul_scalar(b2) + (g.clone() * g).mul_scalar(1.0 - b2),
                    ),
                    None => (g.clone().mul_scalar(1.0 - b1), (g.clone() * g).mul_scalar(1.0 - b2)),
                };
                // w ← w − lr·m̂/(√v̂ + ε), with the bias corrections folded into two scalars.
                let denom = v.clone().sqrt().mul_scalar(inv_sqrt_bc2).add_scalar(eps);
                if kind == OptimKind::Adamw && wd > 0.0 {
                    w = w.mul_scalar(1.0 - lr * wd);
                }
                w = w - (m.clone() / denom).mul_scalar(step_size);
                moments.insert(path.to_string(), Moments { m, v });
                Some(w)
            },
        });
        self.updates += 1;
        model
    }

    /// Writes the optimiser's state (moments, pending gradients, counters) to `path`.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        let mut file = TensorFile::new();
        file.set_meta("kiln.kind", "optim");
        file.set_meta("updates", self.updates);
        file.set_meta("micro", self.micro);
        let mut paths: Vec<&String> = self.moments.keys().collect();
        paths.sort();
        for p in paths {
            let Moments { m, v } = &self.moments[p];
            file.push(format!("{p}.m"), m.clone());
            file.push(format!("{p}.v"), v.clone());
        }
        let mut paths: Vec<&String> = self.pending.keys().collect();
        paths.sort();
        for p in paths {
            file.push(format!("{p}.pending"), self.pending[p].clone());
        }
        file.write(path)
    }

    /// Restores state written by [`Optim::save`] for `model`, checking that every tensor names
    /// one of its parameters with the same size.
    pub fn load<M: Module<B>>(&mut self, path: &Path, model: &M, device: &Device<B>) -> Result<(), OptimError> {
        let file = TensorFile::read(path)?;
        if file.meta("kiln.kind") != Some("optim") {
            return Err(state_err(path, "not a kiln optimiser state file (metadata kiln.kind ≠ optim)"));
        }
        let updates: usize = file.meta_parse("updates", path)?;
        let micro: usize = file.meta_parse("micro", path)?;
        let sizes: HashMap<String, usize> =
            crate::param_paths(model).into_iter().map(|(p, dims)| (p, dims.iter().product())).collect();
        let inner: Device<B::InnerBackend> = device.clone();
        let mut moments = BTreeMap::new();
        let mut pending = BTreeMap::new();
        for name in file.names() {
            let (param, suffix) =
                name.rsplit_once('.').ok_or_else(|| state_err(path, format!("unexpected tensor `{name}`")))?;
            let &n = sizes
                .get(param)
                .ok_or_else(|| state_err(path, format!("`{name}`: the model has no parameter `{param}`")))?;
            let tensor = file.tensor::<B::InnerBackend>(name, n, &inner, path)?;
            match suffix {
                "m" => {
                    let v = file.tensor::<B::InnerBackend>(&format!("{param}.v"), n, &inner, path)?;
                    moments.insert(param.to_string(), Moments { m: tensor, v });
                }
                "v" => {}
                "pending" => {
                    pending.insert(param.to_string(), tensor);
                }
                _ => return Err(state_err(path, format!("unexpected tensor `{name}`"))),
            }
        }
        self.updates = updates;
        self.micro = micro;
        self.moments = moments;
        self.pending = pending;
        Ok(())
    }
}

/// Replaces each gradient by its mean over the ranks: one flat buffer, in path order.
fn average<B: Backend>(grads: &mut BTreeMap<String, Tensor<B, 1>>, sync: &dyn GradSync) -> Result<(), SyncError> {
    let Some(device) = grads.values().next().map(Tensor::device) else {
        return Ok(());
    };
    let lens: Vec<usize> = grads.values().map(|g| g.dims()[0]).collect();
    let flat = Tensor::cat(grads.values().cloned().collect(), 0);
    let mut values = host_values(flat, sync)?;
    sync.all_reduce_mean(&mut values)?;
    let total = values.len();
    let flat = Tensor::<B, 1>::from_data(TensorData::new(values, [total]), &device);
    let mut start = 0;
    for (g, len) in grads.values_mut().zip(lens) {
        *g = flat.clone().narrow(0, start, len);
        start += len;
    }
    Ok(())
}

/// `model` with every float parameter replaced by rank 0's (on a failure, the model unchanged).
fn broadcast_weights<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: M,
    sync: &dyn GradSync,
) -> Result<M, (M, SyncError)> {
    let mut values = Vec::new();
    let mut failed = None;
    let model = model.map(&mut UpdateFloats {
        path: PathStack::default(),
        f: |_: &str, w: Tensor<B::InnerBackend, 1>| {
            match host_values(w, sync) {
                Ok(v) => values.extend(v),
                Err(e) => failed = Some(e),
            }
            None
        },
    });
    if let Some(e) = failed {
        return Err((model, e));
    }
    if let Err(e) = sync.broadcast(&mut values) {
        return Err((model, e));
    }
    let mut start = 0;
    Ok(model.map(&mut UpdateFloats {
        path: PathStack::default(),
        f: |_: &str, w: Tensor<B::InnerBackend, 1>| {
            let n = w.dims()[0];
            let part = values[start..start + n].to_vec();
            start += n;
            Some(Tensor::from_data(TensorData::new(part, [n]), &w.device()))
        },
    }))
}

/// A tensor's values on the host, as `f32`.
fn host_values<B: Backend>(t: Tensor<B, 1>, sync: &dyn GradSync) -> Result<Vec<f32>, SyncError> {
    t.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| SyncError {
        rank: sync.rank(),
        world: sync.world_size(),
        message: format!("reading a tensor for the exchange: {e:?}"),
    })
}
