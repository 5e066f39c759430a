//! A 5×7 bitmap font for the labels on grids and loss plots, so that they need no font files.
//!
//! The glyphs are drawn here by hand, one string per row (`#` ink, `.` paper), in the style of
//! the classic 5×7 character-generator fonts: capitals and digits fill the 7 rows, lowercase
//! letters have a 5-row x-height on the same baseline, and the descenders of g, p, q and y hang
//! two rows below it (a line of text is [`LINE_H`] rows high).

/// Width of a glyph in font pixels.
pub(crate) const GLYPH_W: usize = 5;
/// Height of a glyph in font pixels, from the top of a capital to the baseline.
pub(crate) const GLYPH_H: usize = 7;
/// Height of a line of text in font pixels: a glyph and the descender below the baseline.
pub(crate) const LINE_H: usize = GLYPH_H + DESCENT;
/// Rows a descender reaches below the baseline.
const DESCENT: usize = 2;
/// Letters whose glyph is drawn [`DESCENT`] rows lower: its 7 rows are the x-height and the tail.
const DESCENDERS: &str = "gpqy";
/// Horizontal distance from one glyph to the next (one column of space between).
pub(crate) const ADVANCE: usize = GLYPH_W + 1;

/// What a character without a glyph is drawn as.
const FALLBACK: char = '?';

#[rustfmt::skip]
const GLYPHS: &[(char, [&str; GLYPH_H])] = &[
    (' ', [".....", ".....", ".....", ".....", ".....", ".....", "....."]),
    ('0', [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."]),
    ('1', ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('2', [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"]),
    ('3', ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."]),
    ('4', ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."]),
    ('5', ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."]),
    ('6', ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."]),
    ('7', ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."]),
    ('8', [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."]),
    ('9', [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."]),
    ('A', [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]),
    ('B', ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."]),
    ('C', [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."]),
    ('D', ["###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."]),
    ('E', ["#####", "#....", "#....", "####.", "#....", "#....", "#####"]),
    ('F', ["#####", "#....", "#....", "####.", "#....", "#....", "#...."]),
    ('G', [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"]),
    ('H', ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"]),
    ('I', [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('J', ["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."]),
    ('K', ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"]),
    ('L', ["#....", "#....", "#....", "#....", "#....", "#....", "#####"]),
    ('M', ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"]),
    ('N', ["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"]),
    ('O', [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('P', ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."]),
    ('Q', [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"]),
    ('R', ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"]),
    ('S', [".####", "#....", "#....", ".###.", "....#", "....#", "####."]),
    ('T', ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."]),
    ('U', ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."]),
    ('V', ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."]),
    ('W', ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."]),
    ('X', ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"]),
    ('Y', ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."]),
    ('Z', ["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"]),
    ('a', [".....", ".....", ".###.", "....#", ".####", "#...#", ".####"]),
    ('b', ["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."]),
    ('c', [".....", ".....", ".###.", "#....", "#....", "#...#", ".###."]),
    ('d', ["....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"]),
    ('e', [".....", ".....", ".###.", "#...#", "#####", "#....", ".###."]),
    ('f', ["..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."]),
    ('g', [".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."]),
    ('h', ["#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"]),
    ('i', ["..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."]),
    ('j', ["...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."]),
    ('k', ["#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."]),
    ('l', [".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."]),
    ('m', [".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"]),
    ('n', [".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"]),
    ('o', [".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."]),
    ('p', ["####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."]),
    ('q', [".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"]),
    ('r', [".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."]),
    ('s', [".....", ".....", ".####", "#....", ".###.", "....#", "####."]),
    ('t', [".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."]),
    ('u', [".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"]),
    ('v', [".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."]),
    ('w', [".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."]),
    ('x', [".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"]),
    ('y', ["#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."]),
    ('z', [".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"]),
    ('.', [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."]),
    (',', [".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."]),
    ('-', [".....", ".....", ".....", ".###.", ".....", ".....", "....."]),
    ('_', [".....", ".....", ".....", ".....", ".....", ".....", "#####"]),
    (':', [".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."]),
    ('/', [".....", "....#", "...#.", "..#..", ".#...", "#....", "....."]),
    ('=', [".....", ".....", "#####", ".....", "#####", ".....", "....."]),
    ('+', [".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."]),
    ('(', ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."]),
    (')', [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."]),
    ('%', ["##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"]),
    ('?', [".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."]),
];

/// The rows of `c`'s glyph (`#` ink, `.` paper); a character the font lacks comes back as `?`.
pub(crate) fn glyph(c: char) -> &'static [&'static str; GLYPH_H] {
    let find = |c: char| GLYPHS.iter().find(|(g, _)| *g == c).map(|(_, rows)| rows);
    match find(c) {
        Some(rows) => rows,
        // The table holds FALLBACK (tested), so this indexing cannot fail.
        None => find(FALLBACK).unwrap_or(&GLYPHS[0].1),
    }
}

/// Width in pixels of `text` drawn at `scale` (no trailing space after the last glyph).
pub(crate) fn text_width(text: &str, scale: usize) -> usize {
    (text.chars().count() * ADVANCE).saturating_sub(1) * scale
}

/// A pixel buffer, row-major with `channels` interleaved samples per pixel.
pub(crate) struct Canvas<'a> {
    /// The samples, `width * height * channels` of them.
    pub pixels: &'a mut [u8],
    /// Width in pixels.
    pub width: usize,
    /// Samples per pixel (1 grey, 3 RGB).
    pub channels: usize,
}

impl Canvas<'_> {
    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.pixels.len() / (self.width * self.channels).max(1)
    }

    /// Paints pixel `(x, y)` with `ink` (its first `channels` values); outside the canvas, nothing.
    pub fn set(&mut self, x: usize, y: usize, ink: [u8; 3]) {
        if x < self.width && y < self.height() {
            let at = (y * self.width + x) * self.channels;
            let n = self.channels.min(3);
            self.pixels[at..at + n].copy_from_slice(&ink[..n]);
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)` (descenders reach down to
    /// `y + LINE_H * scale`), each font pixel a `scale`×`scale` square; what falls outside the
    /// canvas is clipped.
    pub fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, ink: [u8; 3]) {
        for (i, c) in text.chars().enumerate() {
            let left = x + i * ADVANCE * scale;
            let top = y + if DESCENDERS.contains(c) { DESCENT * scale } else { 0 };
            for (row, bits) in glyph(c).iter().enumerate() {
                for (col, bit) in bits.bytes().enumerate() {
                    if bit == b'#' {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(left + col * scale + dx, top + row * scale + dy, ink);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_glyph_is_5_by_7_and_the_labels_characters_are_all_there() {
        for (c, rows) in GLYPHS {
            assert!(rows.iter().all(|r| r.len() == GLYPH_W && r.bytes().all(|b| b == b'#' || b == b'.')), "{c:?}");
        }
        let wanted = ('0'..='9').chain('a'..='z').chain('A'..='Z').chain(" .-_:/=+?".chars());
        for c in wanted {
            assert!(GLYPHS.iter().any(|(g, _)| *g == c), "no glyph for {c:?}");
        }
        // No two characters look alike (0/O, 1/l/I, 5/S, 2/Z are told apart).
        for (i, (a, ra)) in GLYPHS.iter().enumerate() {
            for (b, rb) in &GLYPHS[i + 1..] {
                assert_ne!(ra, rb, "{a:?} and {b:?} share a glyph");
            }
        }
        assert_eq!(glyph('€'), glyph('?'));
    }

    #[test]
    fn text_renders_the_glyph_pattern_at_scale() {
        // "1-" at scale 2 on a 3-channel canvas: the 1's stem and base, the dash, nothing else.
        let (w, h) = (2 * ADVANCE * 2, GLYPH_H * 2);
        let mut pixels = vec![255u8; w * h * 3];
        let mut canvas = Canvas { pixels: &mut pixels, width: w, channels: 3 };
        canvas.text(0, 0, "1-", 2, [0, 10, 20]);
        let ink = |x: usize, y: usize| pixels[(y * w + x) * 3] == 0;
        let drawn: Vec<String> =
            (0..h).step_by(2).map(|y| (0..w).step_by(2).map(|x| if ink(x, y) { '#' } else { '.' }).collect()).collect();
        let expected = [
            "..#.........", //
            ".##.........",
            "..#.........",
            "..#....###..",
            "..#.........",
            "..#.........",
            ".###........",
        ];
        assert_eq!(drawn, expected);
        // Each font pixel is a full 2×2 block in the given colour: the 1's top is x 4..6, y 0..2.
        let at = |x: usize, y: usize| &pixels[(y * w + x) * 3..(y * w + x) * 3 + 3];
        assert_eq!([at(4, 0), at(5, 0), at(4, 1), at(5, 1)], [[0, 10, 20]; 4]);
        assert_eq!(text_width("1-", 2), (2 * ADVANCE - 1) * 2);
        // A descender hangs below the baseline: "np" ends two rows lower than "nn".
        let lowest = |text: &str| {
            let mut pixels = vec![255u8; 12 * LINE_H];
            Canvas { pixels: &mut pixels, width: 12, channels: 1 }.text(0, 0, text, 1, [0; 3]);
            (0..LINE_H).filter(|y| pixels[y * 12..(y + 1) * 12].contains(&0)).max()
        };
        assert_eq!((lowest("nn"), lowest("np")), (Some(GLYPH_H - 1), Some(LINE_H - 1)));
        // Text running off the canvas is clipped rather than panicking.
        let mut small = vec![255u8; 4 * 4];
        Canvas { pixels: &mut small, width: 4, channels: 1 }.text(2, 2, "W8", 3, [0; 3]);
        assert!(small.contains(&0));
    }
}
