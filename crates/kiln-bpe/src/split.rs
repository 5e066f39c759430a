//! The pre-tokenizer: cuts a byte string into words so that merges never cross a word boundary.
//!
//! The rules follow GPT-2's pattern without its regex. Bytes fall into four classes — letters
//! (ASCII letters and every byte ≥ 0x80, so that UTF-8 letters such as `é` stay inside their word
//! and invalid UTF-8 needs no special case), digits, whitespace and everything else — and a word
//! is a run of one class. A single space before a letter, digit or other run joins that run as its
//! first byte (`"grinning face"` → `"grinning"`, `" face"`), which lets the vocabulary learn
//! `" face"` as one token that means "face, as a new word". A run of whitespace gives up its last
//! space to the word after it, as GPT-2's `\s+(?!\S)` does. The words are slices of the input
//! that together cover it exactly, so splitting loses nothing.

/// The class of a byte; a word is a run of bytes of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' | 0x80..=0xFF => Class::Letter,
        b'0'..=b'9' => Class::Digit,
        b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => Class::Space,
        _ => Class::Other,
    }
}

/// The words of `bytes`, in order; their concatenation is `bytes`.
pub(crate) fn words(bytes: &[u8]) -> Words<'_> {
    Words { bytes, pos: 0 }
}

/// Iterator returned by [`words`].
pub(crate) struct Words<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Words<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let bytes = self.bytes;
        let start = self.pos;
        let first = *bytes.get(start)?;
        let mut i = start;
        // A single space joins the non-space run that follows it.
        if first == b' ' && bytes.get(start + 1).is_some_and(|&b| class(b) != Class::Space) {
            i += 1;
        }
        let c = class(bytes[i]);
        let mut end = i + 1;
        while end < bytes.len() && class(bytes[end]) == c {
            end += 1;
        }
        // A whitespace run followed by a word leaves its final space to that word. (A run of one
        // space before a word never gets here: the branch above made it the word's first byte.)
        if c == Class::Space && end < bytes.len() && end - start >= 2 && bytes[end - 1] == b' ' {
            end -= 1;
        }
        self.pos = end;
        Some(&bytes[start..end])
    }
}
