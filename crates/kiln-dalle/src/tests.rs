//! Unit tests on tiny shapes, on burn-flex (the backend is named here and nowhere else in the
//! crate).

use std::path::PathBuf;
use std::sync::Arc;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData, Tolerance};
use kiln_bpe::{Bpe, BpeConfig};
use kiln_core::{Generative, Loader, SampleRequest, Task};
use kiln_vqvae::VqVaeConfig;

use crate::sample::{Decoding, TokenSampling, draw, sample_codes};
use crate::*;

type TestBackend = burn::backend::Flex;
type TestAutodiff = Autodiff<TestBackend>;

fn device() -> burn::tensor::Device<TestBackend> {
    Default::default()
}

/// The backend's random generator is global and tests run in parallel: every test that draws
/// weights holds this lock, so a seeded test sees the same draws each time.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-dalle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny(text_len: usize) -> DalleConfig {
    DalleConfig::new(300, text_len, 8, 3).with_layers(2).with_heads(2).with_width(16)
}

fn ints<B: Backend>(rows: &[Vec<i64>], device: &B::Device) -> Tensor<B, 2, Int> {
    let cols = rows.first().map_or(0, Vec::len);
    let data: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(data, [rows.len(), cols]), device)
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

#[test]
fn a_future_token_does_not_change_earlier_logits() {
    let _lock = rng_lock();
    TestBackend::seed(&device(), 1);
    let model = tiny(4).init::<TestBackend>(&device());
    let text = ints::<TestBackend>(&[vec![5, 9, 2, 299]], &device());
    let a = ints::<TestBackend>(&[vec![1, 2, 3, 4, 5, 6, 7, 0, 1]], &device());
    // Change image token 5 (input position 1 + 4 + 5 = 10, seen first by the output predicting token 6).
    let b = ints::<TestBackend>(&[vec![1, 2, 3, 4, 5, 0, 7, 0, 1]], &device());
    let (ta, ia) = model.forward(text.clone(), a);
    let (tb, ib) = model.forward(text, b);
    // Every text logit and image logits 0..=5 (which predict tokens 0..=5) see only earlier inputs.
    ta.unwrap().into_data().assert_approx_eq::<f32>(&tb.unwrap().into_data(), Tolerance::absolute(1e-6));
    let (ia, ib) = (values(ia), values(ib));
    let k = 8;
    assert_eq!(&ia[..6 * k], &ib[..6 * k], "logits before the changed token moved");
    assert!(ia[6 * k..].iter().zip(&ib[6 * k..]).any(|(x, y)| (x - y).abs() > 1e-6), "the change reached nothing");
}

#[test]
fn cached_decoding_gives_the_logits_and_tokens_of_full_recompute() {
    let _lock = rng_lock();
    TestBackend::seed(&device(), 2);
    for text_len in [4, 0] {
        let model = tiny(text_len).init::<TestBackend>(&device());
        let text = ints::<TestBackend>(
            &[vec![7, 1, 299, 299][..text_len].to_vec(), vec![3, 3, 3, 8][..text_len].to_vec()],
            &device(),
        );
        let image = ints::<TestBackend>(&[vec![1, 2, 3, 4, 5, 6, 7, 0, 1], vec![0, 0, 1, 1, 2, 2, 3, 3, 4]], &device());
        // Step by step against the cache: the logits for code j+1 match a full pass over the prefix.
        let mut cache = model.cache();
        let mut logits = model.prefill(text.clone(), &mut cache);
        for j in 0..9 {
            let full = model.next_logits_recompute(text.clone(), image.clone(), j);
            logits.clone().into_data().assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(1e-5));
            if j + 1 < 9 {
                logits = model.step(image.clone().narrow(1, j, 1).reshape([2]), &mut cache);
            }
        }
        assert_eq!(cache.len(), 1 + text_len + 8);
        let sampling = TokenSampling { seed: 7, ..TokenSampling::default() };
        let cached = sample_codes(&model, text.clone(), None, &sampling, Decoding::Cached);
        let recomputed = sample_codes(&model, text, None, &sampling, Decoding::Recompute);
        assert_eq!(cached, recomputed);
        assert_eq!(cached.len(), 2);
        assert!(cached.iter().all(|row| row.len() == 9 && row.iter().all(|&c| c < 8)));
    }
}

#[test]
fn guidance_at_scale_one_is_plain_conditional_sampling() {
    let _lock = rng_lock();
    TestBackend::seed(&device(), 3);
    let model = tiny(4).init::<TestBackend>(&device());
    let text = ints::<TestBackend>(&[vec![7, 1, 299, 299], vec![3, 3, 3, 8]], &device());
    let null = ints::<TestBackend>(&[vec![299; 4], vec![299; 4]], &device());
    let plain = TokenSampling { seed: 11, ..TokenSampling::default() };
    let at_one = TokenSampling { guidance: Some(1.0), ..plain.clone() };
    // An untrained model's conditional and null logits differ by ~1e-2; a large scale makes that count.
    let strong = TokenSampling { guidance: Some(50.0), ..plain.clone() };
    let a = sample_codes(&model, text.clone(), None, &plain, Decoding::Cached);
    // The guided path runs 4 rows (conditional + null) and combines them; at s = 1 it is exact.
    let b = sample_codes(&model, text.clone(), Some(null.clone()), &at_one, Decoding::Cached);
    assert_eq!(a, b);
    let c = sample_codes(&model, text, Some(null), &strong, Decoding::Cached);
    assert_ne!(a, c, "guidance at 50 changed nothing: the null rows are not used");
}

#[test]
fn draw_honours_top_k_top_p_and_temperature() {
    let logits = [0.0f32, 3.0, 1.0, 2.9];
    let base = TokenSampling::default();
    let greedy = TokenSampling { top_k: Some(1), ..base.clone() };
    for u in [0.0, 0.5, 0.999] {
        assert_eq!(draw(&logits, &greedy, u), 1);
    }
    let nucleus = TokenSampling { top_p: Some(0.3), ..base.clone() };
    assert_eq!(draw(&logits, &nucleus, 0.99), 1, "p = 0.3 keeps only the likeliest (mass 0.47)");
    let two = TokenSampling { top_k: Some(2), ..base.clone() };
    let drawn: std::collections::BTreeSet<u32> = (0..100).map(|i| draw(&logits, &two, i as f64 / 100.0)).collect();
    assert_eq!(drawn, [1, 3].into_iter().collect());
    // A low temperature concentrates the mass on the argmax; u = 0.9 lands on code 3 at t = 1.
    assert_eq!(draw(&logits, &base, 0.9), 3);
    let cold = TokenSampling { temperature: 0.01, ..base };
    assert_eq!(draw(&logits, &cold, 0.9), 1);
}

#[test]
fn the_loader_is_seeded_covers_each_epoch_and_resumes() {
    let codes: Vec<Vec<u32>> = (0..10).map(|i| vec![i; 4]).collect();
    let (set, _) = TokenSet::new(None, 0, &codes);
    let set = Arc::new(set);
    let mut a = TokenLoader::<TestBackend>::new(set.clone(), 3, 5, &device());
    let firsts =
        |batch: TokenBatch<TestBackend>| -> Vec<i64> { batch.image.into_data().iter::<i64>().step_by(4).collect() };
    let epoch: Vec<i64> = (0..3).flat_map(|_| firsts(a.next_batch())).collect();
    let mut sorted = epoch.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 9, "an epoch visits distinct rows");
    let position = a.position();
    let next: Vec<Vec<i64>> = (0..4).map(|_| firsts(a.next_batch())).collect();
    let mut b = TokenLoader::<TestBackend>::new(set, 3, 5, &device());
    b.seek(position);
    let again: Vec<Vec<i64>> = (0..4).map(|_| firsts(b.next_batch())).collect();
    assert_eq!(next, again);
}

#[test]
fn sharded_loaders_take_one_process_batches_in_rank_order() {
    // 12 rows, batches of 3: an epoch's 4 batches split over 2 ranks, in rank order, step by step.
    let codes: Vec<Vec<u32>> = (0..12).map(|i| vec![i; 4]).collect();
    let (set, _) = TokenSet::new(None, 0, &codes);
    let set = Arc::new(set);
    let firsts =
        |batch: TokenBatch<TestBackend>| -> Vec<i64> { batch.image.into_data().iter::<i64>().step_by(4).collect() };
    let mut alone = TokenLoader::<TestBackend>::new(set.clone(), 3, 5, &device());
    let mut ranks: Vec<_> = (0..2)
        .map(|r| TokenLoader::<TestBackend>::new(set.clone(), 3, 5, &device()).with_shard(r, 2).unwrap())
        .collect();
    for step in 0..5 {
        for (r, rank) in ranks.iter_mut().enumerate() {
            assert_eq!(firsts(alone.next_batch()), firsts(rank.next_batch()), "step {step}, rank {r}");
        }
        assert_eq!(ranks[0].position(), ranks[1].position());
    }
    assert!(TokenLoader::<TestBackend>::new(set, 7, 5, &device()).with_shard(0, 2).is_none());
}

fn tiny_vqvae() -> VqVaeConfig {
    // 12×12 images, two halvings: a 3×3 grid of 8 codes.
    VqVaeConfig::new().with_image_size(12).with_hidden(8).with_res_hidden(4).with_codebook_size(8).with_code_dim(4)
}

fn captions() -> Vec<String> {
    ["red circle", "blue square", "green triangle", "a handwritten seven"].map(String::from).to_vec()
}

fn parts(preview: Vec<String>) -> DalleParts<TestBackend> {
    let bpe = Bpe::train(&captions(), &BpeConfig { vocab_size: 300, lowercase: true }).unwrap();
    let vq_config = tiny_vqvae();
    let vqvae = vq_config.init::<TestBackend>(&device());
    DalleParts { bpe: Some(bpe), vqvae, vq_config, preview_captions: preview }
}

#[test]
fn a_tiny_model_learns_a_handful_of_caption_to_image_pairs() {
    let _lock = rng_lock();
    TestAutodiff::seed(&device(), 4);
    let parts = parts(captions());
    let bpe = parts.bpe.clone().unwrap();
    let config = DalleConfig::new(bpe.vocab_size(), 24, 8, 3).with_layers(2).with_heads(2).with_width(32);
    // Four captions, each with its own fixed 3×3 code grid.
    let codes: Vec<Vec<u32>> = vec![
        vec![0, 1, 2, 3, 4, 5, 6, 7, 0],
        vec![7, 7, 7, 0, 0, 0, 7, 7, 7],
        vec![1, 3, 5, 7, 1, 3, 5, 7, 1],
        vec![2, 2, 4, 4, 6, 6, 2, 2, 4],
    ];
    let (set, cut) = TokenSet::new(Some((&bpe, &captions())), config.text_len, &codes);
    assert_eq!(cut, 0);
    let set = Arc::new(set);
    let settings = DalleTaskConfig { caption_dropout: 0.0, ..DalleTaskConfig::default() };
    let mut task = DalleTask::<TestAutodiff>::new(config, &settings, 300, parts, &device()).unwrap();
    let mut loader = TokenLoader::<TestAutodiff>::new(set, 4, 0, &device());
    let first = task.step(loader.next_batch(), 0).metrics;
    let mut last = first.clone();
    for step in 1..300 {
        last = task.step(loader.next_batch(), step).metrics;
    }
    let image_ce = |m: &[(&str, f64)]| m.iter().find(|(n, _)| *n == "image_ce").unwrap().1;
    assert!(image_ce(&first) > 1.8, "an untrained model is near uniform over 8 codes (ln 8 = 2.08): {first:?}");
    assert!(image_ce(&last) < 0.05, "the pairs were not learnt: {last:?}");
    // Greedy decoding of each caption now draws its own grid.
    let generator = task.trained();
    let greedy = TokenSampling { top_k: Some(1), ..TokenSampling::default() };
    for (caption, want) in captions().iter().zip(&codes) {
        let ids = generator.encode_caption(caption).unwrap();
        let text = ints::<TestBackend>(&[ids.iter().map(|&t| t as i64).collect()], &device());
        let got = sample_codes(&generator.dalle, text, None, &greedy, Decoding::Cached);
        assert_eq!(&got[0], want, "{caption:?}");
    }
    assert_eq!(task.previews()[0].images.dims(), [4 * 8, 1, 12, 12]);
}

#[test]
fn a_saved_generator_loads_back_and_draws_the_same_images() {
    let _lock = rng_lock();
    TestAutodiff::seed(&device(), 5);
    let parts = parts(vec!["red circle".into()]);
    let vocab = parts.bpe.as_ref().unwrap().vocab_size();
    let config = DalleConfig::new(vocab, 12, 8, 3).with_layers(1).with_heads(2).with_width(16);
    let settings = DalleTaskConfig::default();
    let task = DalleTask::<TestAutodiff>::new(config, &settings, 10, parts, &device()).unwrap();
    let dir = tmp("roundtrip");
    task.save(&dir).unwrap();
    let loaded = DalleGenerator::<TestBackend>::load(&dir, &device()).unwrap();
    let original = task.trained();
    let mut request = SampleRequest::new(3, 9);
    request.prompt = Some("blue square".into());
    request.guidance = Some(2.0);
    request.top_k = Some(4);
    let a = original.sample(&request, &device()).unwrap().images;
    let b = loaded.sample(&request, &device()).unwrap().images;
    assert_eq!(a.dims(), [3, 1, 12, 12]);
    assert_eq!(values(a), values(b));
    let card = loaded.card();
    assert!(card.accepts.contains(&kiln_core::SampleOption::Guidance));
    // Bad requests name the flag.
    request.prompt = Some("a very long caption that is much longer than twelve tokens can hold".into());
    let err = loaded.sample(&request, &device()).unwrap_err().to_string();
    assert!(err.starts_with("--prompt") && err.contains("at most 12"), "{err}");
    request.prompt = Some("red".into());
    request.temperature = Some(0.0);
    assert!(loaded.sample(&request, &device()).unwrap_err().to_string().starts_with("--temperature 0"));
    // A damaged file is an error that names it.
    std::fs::write(dir.join(BPE_FILE), "{").unwrap();
    let err = DalleGenerator::<TestBackend>::load(&dir, &device()).unwrap_err().to_string();
    assert!(err.contains(BPE_FILE), "{err}");
}

#[test]
fn resume_is_bit_exact() {
    let _lock = rng_lock();
    let run = |steps: usize, split: Option<usize>| -> Vec<f32> {
        TestAutodiff::seed(&device(), 6);
        let parts = parts(vec!["red circle".into()]);
        let bpe = parts.bpe.clone().unwrap();
        let config = DalleConfig::new(bpe.vocab_size(), 6, 8, 3).with_layers(1).with_heads(2).with_width(16);
        let codes: Vec<Vec<u32>> = (0..4).map(|i| vec![i as u32; 9]).collect();
        let set = Arc::new(TokenSet::new(Some((&bpe, &captions())), 6, &codes).0);
        let settings = DalleTaskConfig { caption_dropout: 0.5, ..DalleTaskConfig::default() };
        let mut task = DalleTask::<TestAutodiff>::new(config.clone(), &settings, steps, parts, &device()).unwrap();
        let mut loader = TokenLoader::<TestAutodiff>::new(set.clone(), 2, 1, &device());
        for step in 0..steps {
            if Some(step) == split {
                let dir = tmp("resume");
                task.save_state(&dir).unwrap();
                let position = loader.position();
                let mut fresh = DalleTask::<TestAutodiff>::new(
                    config.clone(),
                    &settings,
                    steps,
                    self::parts(vec!["red circle".into()]),
                    &device(),
                )
                .unwrap();
                fresh.load_state(&dir).unwrap();
                task = fresh;
                loader = TokenLoader::<TestAutodiff>::new(set.clone(), 2, 1, &device());
                loader.seek(position);
            }
            // The trainer seeds the backend per step; so does this loop.
            TestAutodiff::seed(&device(), 100 + step as u64);
            task.step(loader.next_batch(), step);
        }
        let text = ints::<TestBackend>(&[vec![1, 2, 3, 4, 5, 6]], &device());
        let image = ints::<TestBackend>(&[vec![0; 9]], &device());
        values(task.trained().dalle.forward(text, image).1)
    };
    assert_eq!(run(6, None), run(6, Some(3)));
}
