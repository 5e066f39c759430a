//! Training: count the corpus's words, then merge the most frequent adjacent pair until the
//! vocabulary is full or no pair occurs twice.
//!
//! Each merge touches only the words that hold the chosen pair (an index from pair to words finds
//! them), and a max-heap keyed on (count, smallest pair first) picks the next pair; entries whose
//! count has since changed are skipped when they surface. Nothing here depends on hash-map
//! iteration order: the words are taken in byte order from a `BTreeMap`, and the heap's key is a
//! total order, so the same corpus — in any order — gives the same merges.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use crate::split::words;

/// A distinct word of the corpus: its current tokens and how often it occurs.
struct Word {
    tokens: Vec<u32>,
    count: u64,
}

/// Learns up to `max_merges` merges from `texts` (already lowercased if the config asks for it).
pub(crate) fn learn_merges<S: AsRef<str>>(texts: &[S], lowercase: bool, max_merges: usize) -> Vec<(u32, u32)> {
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for text in texts {
        let text = text.as_ref();
        let lowered;
        let text = if lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        for word in words(text.as_bytes()) {
            match counts.get_mut(word) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(word.to_vec(), 1);
                }
            }
        }
    }
    let mut corpus: Vec<Word> =
        counts.into_iter().map(|(w, count)| Word { tokens: w.into_iter().map(u32::from).collect(), count }).collect();

    // How often each adjacent pair occurs (weighted by word count), and which words hold it. The
    // word lists may hold stale or repeated entries; they are checked when used.
    let mut pair_counts: HashMap<(u32, u32), u64> = HashMap::new();
    let mut holders: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (w, word) in corpus.iter().enumerate() {
        for pair in word.tokens.windows(2).map(|p| (p[0], p[1])) {
            *pair_counts.entry(pair).or_insert(0) += word.count;
            let list = holders.entry(pair).or_default();
            if list.last() != Some(&w) {
                list.push(w);
            }
        }
    }
    let mut heap: BinaryHeap<(u64, Reverse<(u32, u32)>)> =
        pair_counts.iter().map(|(&pair, &count)| (count, Reverse(pair))).collect();

    let mut merges = Vec::new();
    let mut changed: Vec<(u32, u32)> = Vec::new();
    while merges.len() < max_merges {
        let Some((count, Reverse(pair))) = heap.pop() else { break };
        if pair_counts.get(&pair) != Some(&count) {
            continue; // stale: the pair's count changed after this entry was pushed
        }
        if count < 2 {
            break;
        }
        // `max_merges` keeps every id below `u32::MAX` (checked by the caller).
        let new_id = 256 + merges.len() as u32;
        merges.push(pair);

        let mut list = holders.remove(&pair).unwrap_or_default();
        list.sort_unstable();
        list.dedup();
        changed.clear();
        for w in list {
            let word = &mut corpus[w];
            if !word.tokens.windows(2).any(|p| (p[0], p[1]) == pair) {
                continue;
            }
            // Words are short: take all their pairs out, merge, and put the new pairs back.
            for old in word.tokens.windows(2).map(|p| (p[0], p[1])) {
                if let Entry::Occupied(mut e) = pair_counts.entry(old) {
                    *e.get_mut() -= word.count;
                    if *e.get() == 0 {
                        e.remove();
                    }
                }
                changed.push(old);
            }
            merge_in_place(&mut word.tokens, pair, new_id);
            for new in word.tokens.windows(2).map(|p| (p[0], p[1])) {
                *pair_counts.entry(new).or_insert(0) += word.count;
                holders.entry(new).or_default().push(w);
                changed.push(new);
            }
        }
        changed.sort_unstable();
        changed.dedup();
        for &pair in &changed {
            if let Some(&count) = pair_counts.get(&pair) {
                heap.push((count, Reverse(pair)));
            }
        }
    }
    merges
}

/// Replaces every occurrence of `pair` in `tokens`, left to right, by `id`.
fn merge_in_place(tokens: &mut Vec<u32>, pair: (u32, u32), id: u32) {
    let mut read = 0;
    let mut write = 0;
    while read < tokens.len() {
        if read + 1 < tokens.len() && (tokens[read], tokens[read + 1]) == pair {
            tokens[write] = id;
            read += 2;
        } else {
            tokens[write] = tokens[read];
            read += 1;
        }
        write += 1;
    }
    tokens.truncate(write);
}
