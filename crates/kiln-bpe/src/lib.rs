//! Byte-level BPE text tokenizer for kiln's caption-conditioned models (the small DALL·E): it turns
//! captions such as "grinning face" or "a handwritten seven" into token ids and back.
//!
//! ```text
//! captions ──Bpe::train(&config)──▶ Bpe ──encode / encode_padded──▶ ids [≤ len] / [len]
//!                                       ◀──decode / decode_lossy───
//!                                   Bpe::save / Bpe::load: one JSON file
//! ```
//! Ids `0..256` are the bytes themselves, id `256 + i` is the `i`-th learned merge, and the last id
//! is the pad token. Starting from bytes rather than characters or words means there is no
//! "unknown" token: any text — any byte string, invalid UTF-8 included — encodes, and decodes back
//! to exactly itself; a word the corpus never showed just costs more tokens. Text is cut into
//! words first, GPT-2 style (a word keeps its leading space, `" face"`), so merges never cross a
//! word boundary, and training is deterministic: the same captions, in any order, give the same
//! merges.
//!
//! Why kiln writes its own instead of using the `tokenizers` crate: kiln needs one model (BPE),
//! one pre-tokenizer and a JSON file, about 500 lines here, and STYLE.md asks library crates to
//! stay lean. Measured on the 2-core development machine (Intel Xeon, `lscpu`: "Intel(R) Xeon(R)
//! Processor"), a clean `cargo build --release` of a scratch binary on `tokenizers` 0.22.2 with
//! default features off plus `fancy-regex` compiles 72 dependency crates (rayon, regex,
//! fancy-regex, derive_builder, esaxx-rs, …) in 82 s; this crate builds in 1.0 s once serde is
//! built, or in 8.2 s from an empty target directory (13 crates, serde and thiserror included).
//!
//! ```
//! use kiln_bpe::{Bpe, BpeConfig};
//!
//! let captions = ["grinning face", "smiling face", "a handwritten seven", "grinning cat face"];
//! let bpe = Bpe::train(&captions, &BpeConfig::new(300))?;
//! let ids = bpe.encode("Grinning face"); // lowercased first: the default config says so
//! assert_eq!(bpe.decode(&ids)?, b"grinning face");
//! assert!(ids.len() < "grinning face".len()); // " face" and "grinning" were learned
//!
//! let slot = bpe.encode_padded("smiling face", 8);
//! assert_eq!(slot.ids.len(), 8);
//! assert_eq!(slot.ids[7], bpe.pad_id());
//! assert_eq!(Bpe::from_json(&bpe.to_json())?, bpe);
//! # Ok::<(), kiln_bpe::BpeError>(())
//! ```
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod bpe;
mod split;
mod train;

pub use bpe::{BYTE_TOKENS, Bpe, BpeConfig, BpeError, FORMAT, MIN_VOCAB_SIZE, Padded, VERSION};

#[cfg(test)]
mod tests;
