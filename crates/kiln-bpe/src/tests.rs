//! Unit and property tests. Random inputs come from a small splitmix64, so every run sees the
//! same strings.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::split::words;
use crate::*;

/// splitmix64 (Steele, Lea & Flood 2014): a tiny deterministic generator for test inputs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A byte string of length 0..max_len, drawn so that words, spaces, runs of spaces, digits,
    /// punctuation, UTF-8 and invalid UTF-8 all appear.
    fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"face",
            b" face",
            b"grinning",
            b"cat",
            b" ",
            b"  ",
            b"\t",
            b"\n",
            b"7",
            b"42",
            b"!",
            b"'s",
            "é".as_bytes(),
        ];
        let len = self.below(max_len + 1);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            match self.below(4) {
                0 => out.extend_from_slice(PIECES[self.below(PIECES.len())]),
                1 => out.push(self.next_u64() as u8), // any byte: invalid UTF-8 included
                _ => out.push(b"abcdefghij klmnopqrstuvwxyz "[self.below(28)]),
            }
        }
        out.truncate(len); // may cut a UTF-8 sequence in half: more invalid UTF-8
        out
    }
}

/// Captions like the ones kiln's DALL·E trains on: emoji names and MNIST digit phrases.
fn corpus() -> Vec<String> {
    let faces = ["grinning", "smiling", "winking", "crying", "sleeping", "angry", "thinking", "frowning"];
    let things = ["face", "cat face", "face with tears of joy", "face with open mouth"];
    let digits = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    let mut out = Vec::new();
    for f in faces {
        for t in things {
            out.push(format!("{f} {t}"));
        }
    }
    for d in digits {
        out.push(format!("a handwritten {d}"));
        out.push(format!("the digit {d}, written by hand"));
    }
    out
}

fn trained() -> Bpe {
    Bpe::train(&corpus(), &BpeConfig::new(400)).unwrap()
}

/// A straightforward reference encoder: repeatedly merge the leftmost pair of lowest rank.
fn naive_encode(bpe: &Bpe, bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::new();
    for word in words(bytes) {
        let mut toks: Vec<u32> = word.iter().map(|&b| u32::from(b)).collect();
        loop {
            let best = (0..toks.len().saturating_sub(1))
                .filter_map(|i| bpe.merges().iter().position(|&m| m == (toks[i], toks[i + 1])).map(|r| (r, i)))
                .min();
            let Some((rank, i)) = best else { break };
            toks[i] = (BYTE_TOKENS + rank) as u32;
            toks.remove(i + 1);
        }
        out.extend(toks);
    }
    out
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = std::env::temp_dir().join(format!("kiln-bpe-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn split_keeps_leading_space_and_covers_input() {
    let split = |s: &str| words(s.as_bytes()).map(|w| String::from_utf8_lossy(w).into_owned()).collect::<Vec<_>>();
    assert_eq!(split("grinning face"), ["grinning", " face"]);
    assert_eq!(split("a handwritten seven"), ["a", " handwritten", " seven"]);
    assert_eq!(split("two  spaces"), ["two", " ", " spaces"]);
    assert_eq!(split("digit 42, done!"), ["digit", " 42", ",", " done", "!"]);
    assert_eq!(split("café ok"), ["café", " ok"]);
    assert_eq!(split("end  "), ["end", "  "]);
    assert_eq!(split("\n word"), ["\n", " word"]);
    assert_eq!(split(""), Vec::<String>::new());
    let mut rng = SplitMix64(1);
    for _ in 0..2000 {
        let b = rng.bytes(64);
        let parts: Vec<&[u8]> = words(&b).collect();
        assert!(parts.iter().all(|p| !p.is_empty()));
        assert_eq!(parts.concat(), b);
    }
}

#[test]
fn bytes_round_trip_on_random_strings() {
    let bpe = trained();
    let empty = Bpe::train::<&str>(&[], &BpeConfig::new(400)).unwrap();
    let mut rng = SplitMix64(7);
    let mut invalid = 0;
    for n in 0..5000 {
        let b = if n == 0 { Vec::new() } else { rng.bytes(80) };
        invalid += usize::from(std::str::from_utf8(&b).is_err());
        for tok in [&bpe, &empty] {
            let ids = tok.encode_bytes(&b);
            assert!(ids.iter().all(|&id| id < tok.pad_id()), "encode never yields pad or out-of-range ids");
            assert_eq!(tok.decode(&ids).unwrap(), b, "round trip of {b:?}");
        }
    }
    assert!(invalid > 1000, "the generator should produce plenty of invalid UTF-8 ({invalid})");
    assert_eq!(bpe.encode_bytes(b""), Vec::<u32>::new());
    assert_eq!(bpe.decode(&[]).unwrap(), Vec::<u8>::new());
}

#[test]
fn fast_encoder_matches_reference_encoder() {
    let bpe = trained();
    let mut rng = SplitMix64(11);
    for _ in 0..2000 {
        let b = rng.bytes(48);
        assert_eq!(bpe.encode_bytes(&b), naive_encode(&bpe, &b), "input {b:?}");
    }
    for caption in corpus() {
        assert_eq!(bpe.encode(&caption), naive_encode(&bpe, caption.as_bytes()));
    }
    // Repeated letters exercise overlapping pairs ("aaa" can merge only one of its two "aa").
    let aaa = Bpe::train(&["aaaa aaaa aaa aaa aa"], &BpeConfig::new(300)).unwrap();
    for s in ["a", "aa", "aaa", "aaaaa", "aaaaaaa", " aaa aaaa"] {
        assert_eq!(aaa.encode(s), naive_encode(&aaa, s.as_bytes()), "{s:?}");
        assert_eq!(aaa.decode(&aaa.encode(s)).unwrap(), s.as_bytes());
    }
}

#[test]
fn text_round_trip_is_lowercased() {
    let bpe = trained();
    for text in ["grinning face", "a handwritten seven", "Grinning FACE", "Café  au lait 😀", "\tdigit 9\n", ""] {
        let ids = bpe.encode(text);
        assert_eq!(bpe.decode(&ids).unwrap(), text.to_lowercase().as_bytes(), "{text:?}");
        assert_eq!(bpe.decode_lossy(&ids), text.to_lowercase());
    }
    assert_eq!(bpe.encode("Grinning Face"), bpe.encode("grinning face"));

    let cased = Bpe::train(&corpus(), &BpeConfig { vocab_size: 400, lowercase: false }).unwrap();
    assert!(!cased.lowercase());
    assert_eq!(cased.decode(&cased.encode("Grinning Face")).unwrap(), b"Grinning Face");
    assert_ne!(cased.encode("Grinning Face"), cased.encode("grinning face"));
}

#[test]
fn training_is_deterministic_and_order_free() {
    let texts = corpus();
    let a = Bpe::train(&texts, &BpeConfig::new(400)).unwrap();
    let b = Bpe::train(&texts, &BpeConfig::new(400)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.to_json(), b.to_json());
    let mut reversed = texts.clone();
    reversed.reverse();
    assert_eq!(Bpe::train(&reversed, &BpeConfig::new(400)).unwrap(), a);
    // A smaller budget learns a prefix of the same merges.
    let small = Bpe::train(&texts, &BpeConfig::new(300)).unwrap();
    assert_eq!(small.vocab_size(), 300);
    assert_eq!(small.merges(), &a.merges()[..small.merges().len()]);
}

#[test]
fn frequent_words_become_one_token() {
    let bpe = trained();
    let one = |s: &str| {
        let ids = bpe.encode(s);
        assert_eq!(ids.len(), 1, "{s:?} should be one token, got {ids:?}");
        assert_eq!(bpe.token_bytes(ids[0]).unwrap(), s.as_bytes());
    };
    one(" face");
    one("grinning");
    one(" handwritten");
    assert_eq!(bpe.encode("grinning face").len(), 2);
    // Merges never cross words: a space appears only as a token's first byte, or in an
    // all-whitespace token.
    for id in 0..bpe.pad_id() {
        let t = bpe.token_bytes(id).unwrap();
        let all_space = t.iter().all(u8::is_ascii_whitespace);
        assert!(all_space || !t[1..].contains(&b' '), "token {id} = {:?} crosses a word", String::from_utf8_lossy(t));
    }
}

#[test]
fn merges_shrink_the_corpus() {
    let texts = corpus();
    let mut previous = usize::MAX;
    for vocab in [257, 270, 300, 400] {
        let bpe = Bpe::train(&texts, &BpeConfig::new(vocab)).unwrap();
        let tokens: usize = texts.iter().map(|t| bpe.encode(t).len()).sum();
        let bytes: usize = texts.iter().map(String::len).sum();
        if vocab == 257 {
            assert_eq!(tokens, bytes, "no merges: one token per byte");
        } else {
            assert!(tokens < previous, "vocab {vocab}: {tokens} tokens, not fewer than {previous}");
        }
        previous = tokens;
    }
    assert!(previous * 3 < texts.iter().map(String::len).sum::<usize>(), "400 ids should compress captions 3×");
}

#[test]
fn training_stops_when_no_pair_repeats() {
    // "ab" once: its only pair occurs once, so nothing is worth merging.
    let once = Bpe::train(&["ab"], &BpeConfig::new(1000)).unwrap();
    assert_eq!(once.vocab_size(), 257);
    assert_eq!(once.pad_id(), 256);
    let twice = Bpe::train(&["ab", "ab"], &BpeConfig::new(1000)).unwrap();
    assert_eq!(twice.merges(), &[(u32::from(b'a'), u32::from(b'b'))]);
    assert_eq!(twice.vocab_size(), 258);
    assert_eq!(twice.encode("ab"), [256]);
    let big = Bpe::train(&corpus(), &BpeConfig::new(100_000)).unwrap();
    assert!(big.vocab_size() < 1000, "a small corpus runs out of repeated pairs ({})", big.vocab_size());
    assert_eq!(big.pad_id() as usize, big.vocab_size() - 1);
}

#[test]
fn config_is_checked() {
    let err = Bpe::train(&corpus(), &BpeConfig::new(100)).unwrap_err();
    assert_eq!(err.to_string(), "vocab_size = 100: must be at least 257 (256 bytes + pad)");
    assert!(Bpe::train(&corpus(), &BpeConfig::new(256)).is_err());
    let minimal = Bpe::train(&corpus(), &BpeConfig::new(257)).unwrap();
    assert_eq!((minimal.vocab_size(), minimal.merges().len()), (257, 0));
    let empty = Bpe::train::<String>(&[], &BpeConfig::default()).unwrap();
    assert_eq!(empty.vocab_size(), 257);
    assert_eq!(empty.encode("hi"), [u32::from(b'h'), u32::from(b'i')]);
    assert_eq!(BpeConfig::default(), BpeConfig { vocab_size: 512, lowercase: true });
    let parsed: BpeConfig = serde_json::from_str(r#"{"vocab_size": 300}"#).unwrap();
    assert!(parsed.lowercase, "lowercase defaults to true");
}

#[test]
fn encode_padded_pads_and_truncates() {
    let bpe = trained();
    let ids = bpe.encode("grinning face");
    let padded = bpe.encode_padded("grinning face", 6);
    assert!(!padded.truncated);
    assert_eq!(padded.ids.len(), 6);
    assert_eq!(&padded.ids[..ids.len()], &ids[..]);
    assert!(padded.ids[ids.len()..].iter().all(|&id| id == bpe.pad_id()));
    assert_eq!(bpe.decode(&padded.ids).unwrap(), b"grinning face", "decode skips pad");

    let exact = bpe.encode_padded("grinning face", ids.len());
    assert_eq!((exact.ids, exact.truncated), (ids.clone(), false));

    let cut = bpe.encode_padded("the digit seven, written by hand", 3);
    assert!(cut.truncated);
    assert_eq!(cut.ids, bpe.encode("the digit seven, written by hand")[..3]);
    let none = bpe.encode_padded("", 4);
    assert_eq!((none.ids, none.truncated), (vec![bpe.pad_id(); 4], false));
    assert_eq!(bpe.encode_padded("face", 0), Padded { ids: vec![], truncated: true });
}

#[test]
fn decode_rejects_unknown_ids() {
    let bpe = trained();
    let vocab = bpe.vocab_size() as u32;
    for bad in [vocab, vocab + 5, u32::MAX] {
        let err = bpe.decode(&[104, 105, bad]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&bad.to_string()) && msg.contains("position 2"), "{msg}");
        assert!(matches!(err, BpeError::UnknownId { id, position: 2, .. } if id == bad));
    }
    assert_eq!(bpe.decode_lossy(&[104, vocab, 105, bpe.pad_id()]), "h\u{FFFD}i");
    assert_eq!(bpe.decode_lossy(&[0xC3]), "\u{FFFD}", "half a UTF-8 sequence");
    assert_eq!(bpe.decode_lossy(&[0xC3, 0xA9]), "é");
}

#[test]
fn json_round_trip_and_serde() {
    let bpe = trained();
    let json = bpe.to_json();
    assert_eq!(json, serde_json::to_string(&bpe).unwrap(), "hand-written JSON matches serde's");
    assert!(json.starts_with(r#"{"format":"kiln-bpe","version":1,"lowercase":true,"vocab_size":"#));
    assert_eq!(Bpe::from_json(&json).unwrap(), bpe);
    assert_eq!(serde_json::from_str::<Bpe>(&json).unwrap(), bpe);
    let pretty = serde_json::to_string_pretty(&bpe).unwrap();
    assert_eq!(Bpe::from_json(&pretty).unwrap(), bpe);
    let empty = Bpe::train::<&str>(&[], &BpeConfig::new(300)).unwrap();
    assert_eq!(Bpe::from_json(&empty.to_json()).unwrap(), empty);
}

#[test]
fn from_json_rejects_corrupt_files() {
    let err = |json: &str| Bpe::from_json(json).unwrap_err().to_string();
    let head = r#""format":"kiln-bpe","version":1,"lowercase":true"#;

    let msg = err(&format!(r#"{{{head},"vocab_size":259,"merges":[[97,98],[256,700]]}}"#));
    assert!(msg.contains("merge 1 = [256, 700] refers to id 700") && msg.contains("0..257"), "{msg}");
    let msg = err(&format!(r#"{{{head},"vocab_size":258,"merges":[[256,97]]}}"#));
    assert!(msg.contains("merge 0 = [256, 97] refers to id 256"), "a merge may not use its own id: {msg}");
    let msg = err(&format!(r#"{{{head},"vocab_size":259,"merges":[[97,98],[97,98]]}}"#));
    assert!(msg.contains("merge 1 = [97, 98] repeats merge 0"), "{msg}");
    let msg = err(&format!(r#"{{{head},"vocab_size":300,"merges":[[97,98]]}}"#));
    assert!(msg.contains("vocab_size = 300") && msg.contains("1 merges") && msg.contains("258"), "{msg}");
    let msg = err(&format!(r#"{{{head},"vocab_size":258}}"#));
    assert!(msg.contains("missing field `merges`"), "{msg}");
    let msg = err(r#"{"format":"kiln-vqvae","version":1,"lowercase":true,"vocab_size":257,"merges":[]}"#);
    assert!(msg.contains(r#"format = "kiln-vqvae""#), "{msg}");
    let msg = err(r#"{"format":"kiln-bpe","version":9,"lowercase":true,"vocab_size":257,"merges":[]}"#);
    assert!(msg.contains("version = 9"), "{msg}");
    let msg = err(&format!(r#"{{{head},"vocab_size":257,"merges":[],"extra":1}}"#));
    assert!(msg.contains("unknown field `extra`"), "{msg}");
    let msg = err(&format!(r#"{{{head},"vocab_size":258,"merges":[[97,-1]]}}"#));
    assert!(msg.starts_with("invalid tokenizer JSON:"), "{msg}");
    let msg = err("not json");
    assert!(msg.starts_with("invalid tokenizer JSON:"), "{msg}");
    // serde's own path validates too.
    let bad = format!(r#"{{{head},"vocab_size":258,"merges":[[97,300]]}}"#);
    let msg = serde_json::from_str::<Bpe>(&bad).unwrap_err().to_string();
    assert!(msg.contains("refers to id 300"), "{msg}");
}

#[test]
fn save_and_load_round_trip() {
    let bpe = trained();
    let dir = temp_dir("save");
    let path = dir.join("nested/tokenizer.json");
    bpe.save(&path).unwrap();
    assert_eq!(Bpe::load(&path).unwrap(), bpe);
    // Saving again replaces the file whole, and leaves no temporary file behind.
    let small = Bpe::train(&corpus(), &BpeConfig::new(260)).unwrap();
    small.save(&path).unwrap();
    assert_eq!(Bpe::load(&path).unwrap(), small);
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["tokenizer.json"]);

    let missing = dir.join("missing.json");
    let msg = Bpe::load(&missing).unwrap_err().to_string();
    assert!(msg.starts_with(&missing.display().to_string()), "{msg}");
    let corrupt = dir.join("corrupt.json");
    std::fs::write(
        &corrupt,
        r#"{"format":"kiln-bpe","version":1,"lowercase":true,"vocab_size":258,"merges":[[1,999]]}"#,
    )
    .unwrap();
    let msg = Bpe::load(&corrupt).unwrap_err().to_string();
    assert!(msg.starts_with(&corrupt.display().to_string()) && msg.contains("refers to id 999"), "{msg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn encoding_is_fast() {
    // Loose bounds (the expected times are a few milliseconds) that still catch a quadratic
    // encoder or a per-call rebuild of the merge table.
    let bpe = trained();
    let captions: Vec<String> = (0..5000).map(|i| corpus()[i % corpus().len()].clone()).collect();
    let start = Instant::now();
    let tokens: usize = captions.iter().map(|c| bpe.encode(c).len()).sum();
    let elapsed = start.elapsed();
    assert!(tokens > 5000);
    assert!(elapsed < Duration::from_secs(1), "5000 captions took {elapsed:?}");

    let long: Vec<u8> = b"grinningface".iter().copied().cycle().take(400_000).collect();
    let start = Instant::now();
    let ids = bpe.encode_bytes(&long);
    let elapsed = start.elapsed();
    assert_eq!(bpe.decode(&ids).unwrap(), long);
    assert!(elapsed < Duration::from_secs(2), "a 400 kB word took {elapsed:?}");
}
