//! datatrove's character sets (`datatrove/utils/text.py`): `PUNCTUATION_SET`
//! decides which words are symbols (Gopher) and `TERMINAL_PUNCTUATION` which
//! lines end a sentence (FineWeb). Generated from datatrove 0.10.1.

#[rustfmt::skip]
const PUNCTUATION: &[char] = &['\u{21}', '\u{2f}', '\u{2014}', '\u{201d}', '\u{3a}', '\u{ff05}', '\u{ff11}', '\u{3008}', '\u{26}', '\u{28}', '\u{3001}', '\u{2501}', '\u{5c}', '\u{3010}', '\u{23}', '\u{25}', '\u{300c}', '\u{300d}', '\u{ff0c}', '\u{3011}', '\u{ff1b}', '\u{2b}', '\u{5e}', '\u{5d}', '\u{7e}', '\u{201c}', '\u{300a}', '\u{201e}', '\u{27}', '\u{3b}', '\u{2019}', '\u{7b}', '\u{7c}', '\u{2236}', '\u{b4}', '\u{5b}', '\u{3d}', '\u{2d}', '\u{60}', '\u{2a}', '\u{ff0e}', '\u{ff08}', '\u{2013}', '\u{ff1f}', '\u{ff01}', '\u{ff1a}', '\u{24}', '\u{ff5e}', '\u{ab}', '\u{3009}', '\u{2c}', '\u{3e}', '\u{3c}', '\u{300b}', '\u{29}', '\u{3f}', '\u{ff09}', '\u{3002}', '\u{2026}', '\u{40}', '\u{5f}', '\u{2e}', '\u{22}', '\u{7d}', '\u{25ba}', '\u{bb}'];
#[rustfmt::skip]
const TERMINAL_PUNCTUATION: &[char] = &['\u{21}', '\u{2e}', '\u{3f}', '\u{589}', '\u{61d}', '\u{61e}', '\u{61f}', '\u{6d4}', '\u{700}', '\u{701}', '\u{702}', '\u{7f9}', '\u{837}', '\u{839}', '\u{83d}', '\u{83e}', '\u{964}', '\u{965}', '\u{104a}', '\u{104b}', '\u{1362}', '\u{1367}', '\u{1368}', '\u{166e}', '\u{1735}', '\u{1736}', '\u{17d4}', '\u{17d5}', '\u{17d6}', '\u{17d9}', '\u{17da}', '\u{1803}', '\u{1809}', '\u{1944}', '\u{1945}', '\u{1aa8}', '\u{1aa9}', '\u{1aaa}', '\u{1aab}', '\u{1b5a}', '\u{1b5b}', '\u{1b5e}', '\u{1b5f}', '\u{1b7d}', '\u{1b7e}', '\u{1c3b}', '\u{1c3c}', '\u{1c7e}', '\u{1c7f}', '\u{203c}', '\u{203d}', '\u{2047}', '\u{2048}', '\u{2049}', '\u{2e2e}', '\u{2e3c}', '\u{2e53}', '\u{2e54}', '\u{3002}', '\u{a4ff}', '\u{a60e}', '\u{a60f}', '\u{a6f3}', '\u{a6f7}', '\u{a876}', '\u{a877}', '\u{a8ce}', '\u{a8cf}', '\u{a92f}', '\u{a9c8}', '\u{a9c9}', '\u{aa5d}', '\u{aa5e}', '\u{aa5f}', '\u{aaf0}', '\u{aaf1}', '\u{abeb}', '\u{fe52}', '\u{fe56}', '\u{fe57}', '\u{ff01}', '\u{ff0e}', '\u{ff1f}', '\u{ff61}', '\u{10a56}', '\u{10a57}', '\u{10f55}', '\u{10f56}', '\u{10f57}', '\u{10f58}', '\u{10f59}', '\u{10f86}', '\u{10f87}', '\u{10f88}', '\u{10f89}', '\u{11047}', '\u{11048}', '\u{110be}', '\u{110bf}', '\u{110c0}', '\u{110c1}', '\u{11141}', '\u{11142}', '\u{11143}', '\u{111c5}', '\u{111c6}', '\u{111cd}', '\u{111de}', '\u{111df}', '\u{11238}', '\u{11239}', '\u{1123b}', '\u{1123c}', '\u{112a9}', '\u{1144b}', '\u{1144c}', '\u{115c2}', '\u{115c3}', '\u{115c9}', '\u{115ca}', '\u{115cb}', '\u{115cc}', '\u{115cd}', '\u{115ce}', '\u{115cf}', '\u{115d0}', '\u{115d1}', '\u{115d2}', '\u{115d3}', '\u{115d4}', '\u{115d5}', '\u{115d6}', '\u{115d7}', '\u{11641}', '\u{11642}', '\u{1173c}', '\u{1173d}', '\u{1173e}', '\u{11944}', '\u{11946}', '\u{11a42}', '\u{11a43}', '\u{11a9b}', '\u{11a9c}', '\u{11c41}', '\u{11c42}', '\u{11ef7}', '\u{11ef8}', '\u{11f43}', '\u{11f44}', '\u{16a6e}', '\u{16a6f}', '\u{16af5}', '\u{16b37}', '\u{16b38}', '\u{16b44}', '\u{16e98}', '\u{1bc9f}', '\u{1da88}'];

/// `c in PUNCTUATION_SET`: the listed characters, the terminal punctuation,
/// and the control characters 0-8, 11-31 and 127-159 (tab and newline are not).
pub(crate) fn is_punctuation(c: char) -> bool {
    let u = c as u32;
    u <= 8
        || (11..=31).contains(&u)
        || (127..=159).contains(&u)
        || PUNCTUATION.contains(&c)
        || is_terminal(c)
}

/// `c in TERMINAL_PUNCTUATION`.
pub(crate) fn is_terminal(c: char) -> bool {
    TERMINAL_PUNCTUATION.binary_search(&c).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        assert!(
            TERMINAL_PUNCTUATION.windows(2).all(|w| w[0] < w[1]),
            "sorted for binary_search"
        );
        assert!(is_terminal('.') && is_terminal('。') && !is_terminal(','));
        assert!(is_punctuation(',') && is_punctuation('\u{1}') && !is_punctuation('\n'));
        assert!(!is_punctuation('a'));
    }
}
