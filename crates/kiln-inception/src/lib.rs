//! The FID feature extractor: pytorch-fid's InceptionV3 (the 2015 TensorFlow graph used by every
//! published FID), as a burn module generic over the backend.
//!
//! [`FidInception`] gives, for `[N, C, H, W]` images in `[0, 1]`, the `[N, 2048]` pool3 features
//! that FID, KID and precision/recall are computed from (`kiln-metrics` does the statistics) and
//! the `[N, 1008]` logits whose softmax the Inception Score uses. Preprocessing follows pytorch-fid
//! 0.3.0 exactly — bilinear resize to 299×299 with `align_corners = false` and no antialiasing,
//! then `2x - 1` — so features match pytorch-fid's and scores are comparable with published ones.
//! Greyscale (`C = 1`) images are repeated to three channels.
//!
//! ```no_run
//! use burn::tensor::{Tensor, backend::Backend};
//! use kiln_inception::FidInception;
//!
//! fn pool3<B: Backend>(device: &B::Device, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, kiln_inception::InceptionError> {
//!     let net = FidInception::<B>::load("pt_inception-2015-12-05-6726825d.pth", device)?;
//!     net.features(images) // [N, 2048]
//! }
//! ```
//!
//! # Weights
//! The network needs pytorch-fid's converted TensorFlow weights, which this crate does not ship
//! or download; `kiln eval --extractor inception` fetches them through kiln-data's verified
//! downloader (manifest `datasets/pt-inception.toml`). By hand:
//!
//! ```text
//! curl -LO https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
//! sha256sum pt_inception-2015-12-05-6726825d.pth
//! # 6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2, 95,628,359 bytes
//! ```
//!
//! pytorch-fid states only the first 8 hex digits of the SHA-256 (the `6726825d` in the name,
//! torch.hub's convention); the full digest is the one torch-fidelity and other projects pin for
//! the same bytes. This crate has not seen the file.
//!
//! [`FidInception::load`] reads it with burn-store's PyTorch reader (zip or legacy pickle
//! format). A `.safetensors` file with the same keys also works, e.g. one written from Python by
//! `safetensors.torch.save_file(torch.load(path), "inception.safetensors")`.
//!
//! # How the port is checked
//! Without the real weights: `golden/make_golden.py` fills pytorch-fid's own network with
//! deterministic stand-in weights (a hash of tensor name and index), runs images through it and
//! stores the features, logits and an FID; `tests/golden.rs` builds the same weights from the same
//! formula (the hidden test-support module `standin`) and must agree (see the README for
//! tolerances).

#![warn(missing_docs)]

mod error;
mod model;
#[doc(hidden)]
pub mod standin;
mod weights;

pub use error::InceptionError;
pub use model::{
    BranchPool, CLASSES, ConvBn, FEATURES, FidInception, INPUT_SIZE, InceptionA, InceptionB, InceptionC, InceptionD,
    InceptionE, InceptionOutput, MIN_INPUT_SIZE, preprocess, resize_bilinear,
};
pub use weights::{InceptionConfig, read_state_dict, state_dict_layout};
