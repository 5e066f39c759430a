//! The tokenizer: its configuration, the trained [`Bpe`], encoding, decoding and the JSON file.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::split::words;
use crate::train::learn_merges;

/// The number of byte tokens: ids `0..256` are the bytes themselves.
pub const BYTE_TOKENS: usize = 256;

/// The smallest vocabulary: the 256 bytes and the pad token, no merges.
pub const MIN_VOCAB_SIZE: usize = BYTE_TOKENS + 1;

/// The `format` field of the JSON file, so that a file of some other kind is named as such.
pub const FORMAT: &str = "kiln-bpe";

/// The version of the JSON layout written by [`Bpe::to_json`].
pub const VERSION: u32 = 1;

/// Settings of [`Bpe::train`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpeConfig {
    /// The vocabulary size to aim for, counting the 256 byte tokens and the pad token: training
    /// learns at most `vocab_size - 257` merges. It stops early when no pair of tokens occurs
    /// twice, so the trained tokenizer may be smaller; [`Bpe::vocab_size`] gives the true size.
    pub vocab_size: usize,
    /// Whether text is lowercased (Unicode `to_lowercase`) before training and encoding: captions
    /// rarely carry meaning in case, and folding it halves the words a small corpus has to teach.
    #[serde(default = "default_lowercase")]
    pub lowercase: bool,
}

fn default_lowercase() -> bool {
    true
}

impl BpeConfig {
    /// A config for `vocab_size` tokens that lowercases text.
    pub fn new(vocab_size: usize) -> Self {
        Self { vocab_size, lowercase: true }
    }
}

impl Default for BpeConfig {
    /// 512 tokens, lowercased: more than a caption set of a few hundred distinct words needs
    /// (training stops by itself once no pair repeats), and small enough for a tiny text embedding.
    fn default() -> Self {
        Self::new(512)
    }
}

/// Errors of this crate. Each message names the value, id or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    /// A configuration value is out of range.
    #[error("{field} = {value}: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Its value, as written.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// [`Bpe::decode`] met an id outside the vocabulary.
    #[error("token id {id} at position {position} is not in the vocabulary (ids 0..{vocab_size})")]
    UnknownId {
        /// The id.
        id: u32,
        /// Its index in the input.
        position: usize,
        /// The vocabulary size: valid ids are below it.
        vocab_size: usize,
    },
    /// A tokenizer JSON text does not parse or does not describe a valid tokenizer.
    #[error("invalid tokenizer JSON: {message}")]
    Format {
        /// What is wrong.
        message: String,
    },
    /// Reading or writing a tokenizer file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A tokenizer file was read but its content is invalid.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong (the [`BpeError::Format`] message).
        message: String,
    },
}

/// What [`Bpe::encode_padded`] returns: ids of a fixed length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Padded {
    /// Exactly the requested number of ids: the text's tokens, then [`Bpe::pad_id`] to fill.
    pub ids: Vec<u32>,
    /// Whether the text had more tokens than fit, and the tail was cut off.
    pub truncated: bool,
}

/// A trained byte-level BPE tokenizer.
///
/// Ids `0..256` are bytes, id `256 + i` is the token made by merge `i` (the pair of older ids that
/// [`Bpe::train`] joined `i`-th), and the last id, [`Bpe::pad_id`], is the padding token. Two
/// tokenizers are equal when they lowercase alike and hold the same merges in the same order.
#[derive(Clone, PartialEq)]
pub struct Bpe {
    lowercase: bool,
    /// The learned merges, in order: the source of truth (the rest is derived from it).
    merges: Vec<(u32, u32)>,
    /// Pair → its merge's rank (index in `merges`); the new token's id is `256 + rank`.
    ranks: HashMap<(u32, u32), u32>,
    /// The bytes of every non-pad id.
    tokens: Vec<Vec<u8>>,
}

impl fmt::Debug for Bpe {
    // The derived tables repeat what `merges` says; leave them out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bpe")
            .field("vocab_size", &self.vocab_size())
            .field("lowercase", &self.lowercase)
            .field("merges", &self.merges)
            .finish()
    }
}

impl Bpe {
    /// Learns a tokenizer from `texts`. Texts are lowercased first if `config.lowercase`, and cut
    /// into words (a word keeps its leading space: `" face"`); merges never cross words. Each step
    /// merges the most frequent adjacent pair, the smallest `(left, right)` ids among equals, so
    /// the result depends only on the multiset of texts. An empty corpus gives a tokenizer with no
    /// merges. Fails only if `config.vocab_size` is below 257 or above 2³².
    pub fn train<S: AsRef<str>>(texts: &[S], config: &BpeConfig) -> Result<Bpe, BpeError> {
        let vocab_size = config.vocab_size;
        let bad = |reason: &str| BpeError::Config {
            field: "vocab_size",
            value: vocab_size.to_string(),
            reason: reason.to_string(),
        };
        if vocab_size < MIN_VOCAB_SIZE {
            return Err(bad("must be at least 257 (256 bytes + pad)"));
        }
        if u32::try_from(vocab_size - 1).is_err() {
            return Err(bad("must be at most 2^32 (ids are u32)"));
        }
        let merges = learn_merges(texts, config.lowercase, vocab_size - MIN_VOCAB_SIZE);
        Bpe::from_merges(config.lowercase, merges).map_err(|message| BpeError::Format { message })
    }

    /// The number of ids, `0..vocab_size`: 256 bytes, the merges, and the pad token.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len() + 1
    }

    /// The padding token: the last id. [`Bpe::decode`] skips it.
    pub fn pad_id(&self) -> u32 {
        // `from_merges` keeps every id within u32.
        self.tokens.len() as u32
    }

    /// Whether [`Bpe::encode`] lowercases its text.
    pub fn lowercase(&self) -> bool {
        self.lowercase
    }

    /// The learned merges in order: merge `i` joins the pair into id `256 + i`.
    pub fn merges(&self) -> &[(u32, u32)] {
        &self.merges
    }

    /// The bytes id `id` stands for, or `None` for the pad id and ids outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(Vec::as_slice)
    }

    /// The token ids of `text`, lowercased first if the tokenizer was trained so. Never fails:
    /// every byte has a token. `[len(text) bytes] → [≤ len(text) ids]`, no pad ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        if self.lowercase {
            self.encode_bytes(text.to_lowercase().as_bytes())
        } else {
            self.encode_bytes(text.as_bytes())
        }
    }

    /// The token ids of any byte string (invalid UTF-8 included), as it is: no lowercasing.
    /// `decode(encode_bytes(b)) == b` for every `b`.
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut scratch = Scratch::default();
        for word in words(bytes) {
            self.encode_word(word, &mut out, &mut scratch);
        }
        out
    }

    /// [`Bpe::encode`] cut or padded to exactly `len` ids, as a fixed-length caption slot needs:
    /// a longer text keeps its first `len` tokens and says `truncated`; a shorter one is filled
    /// with [`Bpe::pad_id`].
    pub fn encode_padded(&self, text: &str, len: usize) -> Padded {
        let mut ids = self.encode(text);
        let truncated = ids.len() > len;
        ids.truncate(len);
        ids.resize(len, self.pad_id());
        Padded { ids, truncated }
    }

    /// The bytes that `ids` stand for. Pad ids are skipped; any other id at or above
    /// [`Bpe::vocab_size`] is an error naming it and its position.
    pub fn decode(&self, ids: &[u32]) -> Result<Vec<u8>, BpeError> {
        let pad = self.pad_id();
        let mut out = Vec::with_capacity(ids.len() * 2);
        for (position, &id) in ids.iter().enumerate() {
            if id == pad {
                continue;
            }
            match self.tokens.get(id as usize) {
                Some(bytes) => out.extend_from_slice(bytes),
                None => return Err(BpeError::UnknownId { id, position, vocab_size: self.vocab_size() }),
            }
        }
        Ok(out)
    }

    /// [`Bpe::decode`] for display: invalid UTF-8 and unknown ids become `U+FFFD`, pad ids are
    /// skipped.
    pub fn decode_lossy(&self, ids: &[u32]) -> String {
        let pad = self.pad_id();
        let mut text = String::new();
        let mut run: Vec<u8> = Vec::new();
        for &id in ids {
            if id == pad {
                continue;
            }
            match self.tokens.get(id as usize) {
                Some(bytes) => run.extend_from_slice(bytes),
                None => {
                    text.push_str(&String::from_utf8_lossy(&run));
                    run.clear();
                    text.push(char::REPLACEMENT_CHARACTER);
                }
            }
        }
        text.push_str(&String::from_utf8_lossy(&run));
        text
    }

    /// The tokenizer as one line of JSON:
    /// `{"format":"kiln-bpe","version":1,"lowercase":true,"vocab_size":N,"merges":[[l,r],…]}`.
    pub fn to_json(&self) -> String {
        // Written by hand rather than through serde_json, whose `to_string` returns a `Result`
        // that cannot fail for these fields; a test checks both give the same text.
        let mut json = format!(
            "{{\"format\":\"{FORMAT}\",\"version\":{VERSION},\"lowercase\":{},\"vocab_size\":{},\"merges\":[",
            self.lowercase,
            self.vocab_size()
        );
        for (i, (left, right)) in self.merges.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!("[{left},{right}]"));
        }
        json.push_str("]}");
        json
    }

    /// Parses what [`Bpe::to_json`] wrote, and checks it: the format tag and version, that every
    /// merge joins ids that exist before it, that no merge repeats, and that `vocab_size` is
    /// 257 + the number of merges. Errors say which field or merge is wrong.
    pub fn from_json(text: &str) -> Result<Bpe, BpeError> {
        let file: BpeFile = serde_json::from_str(text).map_err(|e| BpeError::Format { message: e.to_string() })?;
        Bpe::from_file(file).map_err(|message| BpeError::Format { message })
    }

    /// Writes [`Bpe::to_json`] to `path` atomically: into a temporary file beside it, then renamed
    /// over it, so a reader never sees half a file. Creates missing parent directories.
    pub fn save(&self, path: &Path) -> Result<(), BpeError> {
        atomic_write(path, self.to_json().as_bytes())
    }

    /// Reads a tokenizer written by [`Bpe::save`]. Errors name `path`.
    pub fn load(path: &Path) -> Result<Bpe, BpeError> {
        let text = std::fs::read_to_string(path).map_err(|source| BpeError::Io { path: path.to_path_buf(), source })?;
        Bpe::from_json(&text).map_err(|e| BpeError::File { path: path.to_path_buf(), message: e.to_string() })
    }

    /// Builds the derived tables from `merges`, checking that each merge joins existing ids and
    /// none repeats. The error is a sentence naming the merge at fault.
    fn from_merges(lowercase: bool, merges: Vec<(u32, u32)>) -> Result<Bpe, String> {
        if u32::try_from(BYTE_TOKENS + merges.len()).is_err() {
            return Err(format!("{} merges: ids would not fit in u32", merges.len()));
        }
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        tokens.reserve(merges.len());
        let mut ranks = HashMap::with_capacity(merges.len());
        for (rank, &(left, right)) in merges.iter().enumerate() {
            let known = tokens.len();
            for id in [left, right] {
                if id as usize >= known {
                    return Err(format!(
                        "merge {rank} = [{left}, {right}] refers to id {id}, but only ids 0..{known} exist before it"
                    ));
                }
            }
            // The length check above keeps `rank` within u32.
            if let Some(first) = ranks.insert((left, right), rank as u32) {
                return Err(format!("merge {rank} = [{left}, {right}] repeats merge {first}"));
            }
            let mut bytes = tokens[left as usize].clone();
            bytes.extend_from_slice(&tokens[right as usize]);
            tokens.push(bytes);
        }
        Ok(Bpe { lowercase, merges, ranks, tokens })
    }

    fn file(&self) -> BpeFileRef<'_> {
        BpeFileRef {
            format: FORMAT,
            version: VERSION,
            lowercase: self.lowercase,
            vocab_size: self.vocab_size(),
            merges: &self.merges,
        }
    }

    fn from_file(file: BpeFile) -> Result<Bpe, String> {
        if file.format != FORMAT {
            return Err(format!("format = {:?}: expected {FORMAT:?}", file.format));
        }
        if file.version != VERSION {
            return Err(format!("version = {}: this build reads version {VERSION}", file.version));
        }
        let expected = MIN_VOCAB_SIZE + file.merges.len();
        if file.vocab_size != expected {
            return Err(format!(
                "vocab_size = {} but the file holds {} merges, which make {expected} ids (256 bytes + merges + pad)",
                file.vocab_size,
                file.merges.len()
            ));
        }
        Bpe::from_merges(file.lowercase, file.merges)
    }

    /// Appends the tokens of one word. Merges are applied lowest rank first, leftmost first among
    /// equal ranks, which reproduces what training did to the same word. The word's symbols form a
    /// linked list and candidate pairs sit in a min-heap, so a word of n bytes costs O(n log n):
    /// a long run without spaces (say, a megabyte of base64) does not go quadratic.
    fn encode_word(&self, word: &[u8], out: &mut Vec<u32>, s: &mut Scratch) {
        if word.len() < 2 || self.merges.is_empty() {
            out.extend(word.iter().map(|&b| u32::from(b)));
            return;
        }
        s.sym.clear();
        s.sym.extend(word.iter().map(|&b| u32::from(b)));
        s.next.clear();
        s.next.extend(1..=word.len());
        s.prev.clear();
        s.prev.extend((0..word.len()).map(|i| i.wrapping_sub(1)));
        s.heap.clear();
        let n = word.len();
        for i in 0..n - 1 {
            if let Some(&rank) = self.ranks.get(&(s.sym[i], s.sym[i + 1])) {
                s.heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = s.heap.pop() {
            let j = s.next[i];
            // Stale if `i` was absorbed into its left neighbour, or either side has changed since
            // the entry was pushed (ids only grow, so a changed pair never matches again).
            if s.sym[i] == DEAD || j >= n || (s.sym[i], s.sym[j]) != self.merges[rank as usize] {
                continue;
            }
            s.sym[i] = BYTE_TOKENS as u32 + rank;
            s.sym[j] = DEAD;
            let k = s.next[j];
            s.next[i] = k;
            if k < n {
                s.prev[k] = i;
                if let Some(&r) = self.ranks.get(&(s.sym[i], s.sym[k])) {
                    s.heap.push(Reverse((r, i)));
                }
            }
            let p = s.prev[i];
            if p < n
                && let Some(&r) = self.ranks.get(&(s.sym[p], s.sym[i]))
            {
                s.heap.push(Reverse((r, p)));
            }
        }
        let mut i = 0;
        while i < n {
            out.push(s.sym[i]);
            i = s.next[i];
        }
    }
}

/// Marks a symbol merged into its left neighbour. No token is `u32::MAX`: that is at most the pad
/// id, which `encode_word` never produces.
const DEAD: u32 = u32::MAX;

/// Buffers reused across the words of one `encode_bytes` call.
#[derive(Default)]
struct Scratch {
    sym: Vec<u32>,
    next: Vec<usize>,
    prev: Vec<usize>,
    heap: BinaryHeap<Reverse<(u32, usize)>>,
}

/// The JSON layout, as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BpeFile {
    format: String,
    version: u32,
    lowercase: bool,
    vocab_size: usize,
    merges: Vec<(u32, u32)>,
}

/// The JSON layout, as written (borrowing the merges instead of copying them).
#[derive(Serialize)]
struct BpeFileRef<'a> {
    format: &'a str,
    version: u32,
    lowercase: bool,
    vocab_size: usize,
    merges: &'a [(u32, u32)],
}

impl Serialize for Bpe {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.file().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Bpe {
    /// Checks the same things as [`Bpe::from_json`], so a tokenizer embedded in a larger config
    /// is validated too.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let file = BpeFile::deserialize(deserializer)?;
        Bpe::from_file(file).map_err(serde::de::Error::custom)
    }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`.
fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), BpeError> {
    // Distinguishes concurrent saves from threads of one process, which share a pid.
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let io = |source| BpeError::Io { path: path.to_path_buf(), source };
    let Some(name) = path.file_name() else {
        return Err(io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path")));
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}-{}", std::process::id(), SAVES.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file is ours and useless now; the write error is the one
        // worth reporting.
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}
