//! Scaled dot-product attention forward and backward in blocks of query rows, as one autodiff
//! op: the `[L_q, L_k]` score matrix is never built.
//!
//! Under `Autodiff`, attention composed from tensor ops keeps the scores and their exponentials
//! (`[B·H, L_q, L_k]` each, 256 MiB apiece for W6's B = 8, H = 8, L = 1024) until the backward
//! pass, and every element-wise step is another pass over them through main memory. Here each
//! task takes one head and walks its queries `BLOCK` rows at a time against all the keys the
//! rows may see:
//!
//! - forward: `S = Q_b·Kᵀ` (`BLOCK × L_k`, a quarter of a MiB at L = 1024, so it stays in L2),
//!   the exact softmax of each row over `S` in place, `O_b = P·V / Σ`, and the row's
//!   log-sum-exp `lse = max + ln Σ` kept for the backward pass (`L_q` floats a head);
//! - backward (FlashAttention-2's equations, Dao 2023, arXiv:2307.08691 — with a whole row of
//!   keys per block there is no running rescale): `P = exp(scale·S − lse)` recomputed from
//!   `Q_b·Kᵀ`, `dV += Pᵀ·dO_b`, `dP = dO_b·Vᵀ`, `dS = scale · P ∘ (dP − rowsum(dO ∘ O))`,
//!   `dQ_b = dS·K`, `dK += dSᵀ·Q_b`.
//!
//! Seven GEMMs per block instead of the composed path's six (the forward product is done
//! again), traded for never writing or reading the two score-sized tensors. A causal mask
//! (top-left, as PyTorch's `is_causal`) stops each block at the last key its last row sees,
//! which skips half of the products. Other masks are not handled here: kiln-kernels keeps the
//! composed path for them.
//!
//! Heads are independent, so with at least as many heads (`B·H`) as threads each task runs its
//! head's GEMMs single-threaded and owns its slices of `dQ`, `dK` and `dV`; with fewer heads the
//! heads run in turn and each GEMM is threaded.

use crate::gemm::{MatRef, sgemm};
use crate::inner::contiguous;
use crate::rows::{exp_sum, scaled_max, softmax_grad};
use crate::transpose::transpose_serial;
use crate::{CpuInner, KilnCpu};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::tensor::FloatTensor;
use burn_backend::{Shape, TensorMetadata};
use rayon::prelude::*;

/// Query rows per block: `BLOCK × L_k` scores (and, backward, as many score gradients) stay in
/// the L2 cache up to L_k of a few thousand.
const BLOCK: usize = 64;

/// The sizes of one attention call, heads folded: `bh` heads of `lq` queries and `lk` keys,
/// query/key width `d`, value width `dv`.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    bh: usize,
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
    /// With a causal mask, query `r` sees keys `j ≤ r + offset` (0: PyTorch's top-left
    /// alignment; `L_k − L_q`: burn's bottom-right one); `None` without a mask.
    causal_offset: Option<usize>,
    scale: f32,
}

/// Query rows `r0 .. r0 + rows` of a head, which see the first `keys` keys between them.
#[derive(Debug, Clone, Copy)]
struct Block {
    r0: usize,
    rows: usize,
    keys: usize,
}

impl Geometry {
    /// The blocks of query rows, in order, each with the keys its rows need between them: all
    /// of them, or with a causal mask up to the last row's own position.
    fn blocks(&self) -> impl Iterator<Item = Block> + '_ {
        (0..self.lq).step_by(BLOCK).map(|r0| {
            let rows = BLOCK.min(self.lq - r0);
            let keys = self.causal_offset.map_or(self.lk, |o| (r0 + rows + o).min(self.lk));
            Block { r0, rows, keys }
        })
    }

    /// How many keys row `r` (absolute) sees, in a block that computed `keys` of them.
    fn visible(&self, r: usize, keys: usize) -> usize {
        self.causal_offset.map_or(keys, |o| (r + o + 1).min(keys))
    }

    /// Heads go to separate tasks with serial GEMMs, or (fewer heads than threads) run in turn
    /// with threaded GEMMs.
    fn heads_in_parallel(&self) -> bool {
        self.bh >= rayon::current_num_threads()
    }

    fn q_len(&self) -> usize {
        self.lq * self.d
    }

    fn k_len(&self) -> usize {
        self.lk * self.d
    }

    fn v_len(&self) -> usize {
        self.lk * self.dv
    }

    fn o_len(&self) -> usize {
        self.lq * self.dv
    }
}

/// Runs `f(head, chunks…)` for every head, on separate tasks or in turn (see
/// [`Geometry::heads_in_parallel`]); `f` gets whether its GEMMs should be threaded.
fn for_each_head<T: Send>(g: Geometry, items: Vec<T>, f: impl Fn(usize, T, bool) + Sync) {
    if g.heads_in_parallel() {
        items.into_par_iter().enumerate().for_each(|(h, item)| f(h, item, false));
    } else {
        items.into_iter().enumerate().for_each(|(h, item)| f(h, item, true));
    }
}

/// `Mᵀ` of a row-major `rows × cols` matrix: the score products read `Kᵀ` and `Vᵀ` as
/// row-major right-hand sides, the orientation `gemm` packs fastest.
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    transpose_serial(m, rows, cols, &mut t);
    t
}

/// `S[rows × keys] = Q_b · Kᵀ[:, ..keys]` for query block `b`, into the first `rows · keys`
/// floats of `s` (row stride `keys`).
fn scores(q: &[f32], kt: &[f32], b: Block, s: &mut [f32], g: Geometry, threaded: bool) {
    let lhs = MatRef::row_major(&q[b.r0 * g.d..], g.d);
    let rhs = MatRef { data: kt, row_stride: g.lk, col_stride: 1 };
    sgemm(b.rows, b.keys, g.d, lhs, rhs, s, b.keys, false, threaded);
}

/// The output `[bh, lq, dv]` and each query row's log-sum-exp `[bh, lq]`.
fn forward(q: &[f32], k: &[f32], v: &[f32], g: Geometry) -> (Vec<f32>, Vec<f32>) {
    let mut out = vec![0.0f32; g.bh * g.o_len()];
    let mut lse = vec![0.0f32; g.bh * g.lq];
    let chunks: Vec<_> = out.chunks_mut(g.o_len()).zip(lse.chunks_mut(g.lq)).collect();
    for_each_head(g, chunks, |h, (out, lse), threaded| {
        let q = &q[h * g.q_len()..][..g.q_len()];
        let kt = transposed(&k[h * g.k_len()..][..g.k_len()], g.lk, g.d); // [d, lk]
        let v = &v[h * g.v_len()..][..g.v_len()];
        let mut s = vec![0.0f32; BLOCK.min(g.lq) * g.lk];
        for b in g.blocks() {
            let Block { r0, rows, keys } = b;
            scores(q, &kt, b, &mut s, g, threaded); // [rows, keys]
            let mut norm = [0.0f32; BLOCK];
            for (i, row) in s[..rows * keys].chunks_mut(keys).enumerate() {
                let (seen, masked) = row.split_at_mut(g.visible(r0 + i, keys));
                let max = scaled_max(seen, g.scale);
                let sum = exp_sum(seen, g.scale, max); // P, unnormalised
                masked.fill(0.0);
                lse[r0 + i] = max + sum.ln();
                norm[i] = 1.0 / sum;
            }
            // O_b[rows × dv] = P · V[..keys], then each row over its Σ
            let o = &mut out[r0 * g.dv..(r0 + rows) * g.dv];
            let p = MatRef::row_major(&s, keys);
            sgemm(rows, g.dv, keys, p, MatRef::row_major(v, g.dv), o, g.dv, false, threaded);
            for (row, n) in o.chunks_mut(g.dv).zip(norm) {
                row.iter_mut().for_each(|x| *x *= n);
            }
        }
    });
    (out, lse)
}

/// What the backward pass reads: the inputs, the output and its gradient, the log-sum-exps.
struct Saved<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
    grad: &'a [f32],
}

/// `(dQ, dK, dV)`, shaped as `Q`, `K`, `V`.
fn backward(saved: Saved<'_>, g: Geometry) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut dq = vec![0.0f32; g.bh * g.q_len()];
    let mut dk = vec![0.0f32; g.bh * g.k_len()];
    let mut dv = vec![0.0f32; g.bh * g.v_len()];
    let chunks: Vec<_> = dq.chunks_mut(g.q_len()).zip(dk.chunks_mut(g.k_len())).zip(dv.chunks_mut(g.v_len())).collect();
    for_each_head(g, chunks, |h, ((dq, dk), dv), threaded| {
        let q = &saved.q[h * g.q_len()..][..g.q_len()];
        let k = &saved.k[h * g.k_len()..][..g.k_len()];
        let v = &saved.v[h * g.v_len()..][..g.v_len()];
        let out = &saved.out[h * g.o_len()..][..g.o_len()];
        let grad = &saved.grad[h * g.o_len()..][..g.o_len()];
        let lse = &saved.lse[h * g.lq..][..g.lq];
        let (kt, vt) = (transposed(k, g.lk, g.d), transposed(v, g.lk, g.dv)); // [d, lk], [dv, lk]
        // rowsum(dO ∘ O): the softmax gradient's correction term, one float per query
        let delta: Vec<f32> =
            grad.chunks(g.dv).zip(out.chunks(g.dv)).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum()).collect();
        let block = BLOCK.min(g.lq) * g.lk;
        let (mut p, mut ds) = (vec![0.0f32; block], vec![0.0f32; block]);
        for b in g.blocks() {
            let Block { r0, rows, keys } = b;
            let grad_b = &grad[r0 * g.dv..(r0 + rows) * g.dv];
            scores(q, &kt, b, &mut p, g, threaded); // S [rows, keys]
            for (i, row) in p[..rows * keys].chunks_mut(keys).enumerate() {
                let (seen, masked) = row.split_at_mut(g.visible(r0 + i, keys));
                let lse = lse[r0 + i];
                exp_sum(seen, g.scale, lse); // P
                masked.fill(0.0);
            }
            // dV[..keys] += Pᵀ · dO_b
            let pt = MatRef::row_major(&p, keys).t();
            sgemm(keys, g.dv, rows, pt, MatRef::row_major(grad_b, g.dv), dv, g.dv, true, threaded);
            // dP[rows × keys] = dO_b · Vᵀ[:, ..keys]
            let vt_ref = MatRef { data: &vt, row_stride: g.lk, col_stride: 1 };
            sgemm(rows, keys, g.dv, MatRef::row_major(grad_b, g.dv), vt_ref, &mut ds, keys, false, threaded);
            // dS = scale · P ∘ (dP − δ), in place of dP
            for (i, (ds, p)) in ds[..rows * keys].chunks_mut(keys).zip(p.chunks(keys)).enumerate() {
                softmax_grad(ds, p, g.scale, delta[r0 + i]);
            }
            // dQ_b = dS · K[..keys]
            let dq_b = &mut dq[r0 * g.d..(r0 + rows) * g.d];
            sgemm(rows, g.d, keys, MatRef::row_major(&ds, keys), MatRef::row_major(k, g.d), dq_b, g.d, false, threaded);
            // dK[..keys] += dSᵀ · Q_b
            let dst = MatRef::row_major(&ds, keys).t();
            sgemm(keys, g.d, rows, dst, MatRef::row_major(&q[r0 * g.d..], g.d), dk, g.d, true, threaded);
        }
    });
    (dq, dk, dv)
}

/// The tensors the backward pass needs (contiguous copies where the inputs were views).
#[derive(Debug, Clone)]
struct State<B: CpuInner> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    geometry: Geometry,
}

#[derive(Debug)]
struct BlockedAttention;

impl<B: CpuInner> Backward<KilnCpu<B>, 3> for BlockedAttention {
    type State = State<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<KilnCpu<B>>(&ops.node);
        let s = ops.state;
        let views = (B::f32_view(&s.q), B::f32_view(&s.k), B::f32_view(&s.v), B::f32_view(&s.out), B::f32_view(&s.lse));
        let (Some(q), Some(k), Some(v), Some(out), Some(lse)) = views else {
            unreachable!("the forward pass checked that every input is f32");
        };
        let grad = B::f32_view(&grad).expect("the gradient of an f32 output is f32");
        let g = s.geometry;
        let saved = Saved { q: &q, k: &k, v: &v, out: &out, lse: &lse, grad: &grad };
        let (dq, dk, dv) = backward(saved, g);
        let [node_q, node_k, node_v] = ops.parents;
        for (node, data, like) in [(node_q, dq, &s.q), (node_k, dk, &s.k), (node_v, dv, &s.v)] {
            if let Some(node) = node {
                grads.register::<KilnCpu<B>>(node.id, B::f32_tensor(data, like.shape()));
            }
        }
    }
}

/// The sizes of `q` `[B, H, L_q, D]`, `k` `[B, H, L_k, D]`, `v` `[B, H, L_k, D_v]` without a
/// mask, or `None` if they are not such tensors or an axis is empty.
fn geometry<B: CpuInner>(q: &FloatTensor<B>, k: &FloatTensor<B>, v: &FloatTensor<B>, scale: f64) -> Option<Geometry> {
    let dims = |t: &FloatTensor<B>| {
        let s = t.shape();
        (s.num_dims() == 4).then(|| [s[0], s[1], s[2], s[3]])
    };
    let [b, h, lq, d] = dims(q)?;
    let [kb, kh, lk, kd] = dims(k)?;
    let [vb, vh, vl, dv] = dims(v)?;
    let agree = [kb, kh, kd] == [b, h, d] && [vb, vh, vl] == [b, h, lk];
    (agree && ![b, h, lq, lk, d, dv].contains(&0)).then_some(Geometry {
        bh: b * h,
        lq,
        lk,
        d,
        dv,
        causal_offset: None,
        scale: scale as f32,
    })
}

/// burn's `attention` op without autodiff (`ModuleOps::attention` of `KilnCpu`): the blocked
/// forward pass when there is no bool mask, bias or soft cap and the inputs are f32, with burn's
/// bottom-right causal alignment; `None` otherwise, for the inner backend. flex's own kernel
/// copies permuted views one element at a time and runs libm's `expf`: 28 % of W4's sampling
/// by recomputation in perf.
pub(crate) fn attention_inference<B: CpuInner>(
    q: &FloatTensor<B>,
    k: &FloatTensor<B>,
    v: &FloatTensor<B>,
    masked: bool,
    options: &burn_backend::ops::AttentionModuleOptions,
) -> Option<FloatTensor<B>> {
    if masked || options.softcap.is_some() {
        return None;
    }
    let d = q.shape()[q.shape().num_dims().checked_sub(1)?];
    let mut g = geometry::<B>(q, k, v, options.scale.unwrap_or(1.0 / (d as f64).sqrt()))?;
    if options.is_causal {
        // Bottom-right: the last query sees every key. With more queries than keys the first
        // rows would see none; leave that to the inner backend.
        g.causal_offset = Some(g.lk.checked_sub(g.lq)?);
    }
    let shape = q.shape();
    let (out, _) = forward(&B::f32_view(q)?, &B::f32_view(k)?, &B::f32_view(v)?, g);
    Some(B::f32_tensor(out, Shape::from(vec![shape[0], shape[1], g.lq, g.dv])))
}

/// `softmax(Q·Kᵀ · scale) · V` on `Autodiff<KilnCpu<B>>` with its gradient, in blocks (module
/// docs), for `q` `[B, H, L_q, D]`, `k` `[B, H, L_k, D]`, `v` `[B, H, L_k, D_v]`; `causal` masks
/// key `j > i` for query `i` (top-left aligned).
///
/// `None` when this kernel does not apply — a dtype other than f32, shapes that do not agree,
/// an empty axis — and the caller should use its composed attention.
pub fn attention_autodiff<B: CpuInner, C: CheckpointStrategy>(
    q: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    k: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    v: &FloatTensor<Autodiff<KilnCpu<B>, C>>,
    causal: bool,
    scale: f64,
) -> Option<FloatTensor<Autodiff<KilnCpu<B>, C>>> {
    let mut g = geometry::<B>(&q.primitive, &k.primitive, &v.primitive, scale)?;
    g.causal_offset = causal.then_some(0);
    let (qc, kc, vc) = (contiguous::<B>(&q.primitive), contiguous::<B>(&k.primitive), contiguous::<B>(&v.primitive));
    let (out, lse) = forward(&B::f32_view(&qc)?, &B::f32_view(&kc)?, &B::f32_view(&vc)?, g);
    let shape = qc.shape();
    let out = B::f32_tensor(out, Shape::from(vec![shape[0], shape[1], g.lq, g.dv]));
    let nodes = [q.node.clone(), k.node.clone(), v.node.clone()];
    Some(match BlockedAttention.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let lse = B::f32_tensor(lse, Shape::from(vec![g.bh, g.lq]));
            let state = State { q: qc, k: kc, v: vc, out: out.clone(), lse, geometry: g };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    })
}
