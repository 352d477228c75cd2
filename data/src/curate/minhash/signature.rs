//! Shingles and MinHash signatures, datatrove's `MinhashDedupSignature`:
//! simplify the text, split it into words with datatrove's English word
//! tokenizer (spaCy's blank `en` tokenizer, ported in
//! [`crate::curate::filters::words`]; it splits "cannot" -> "can" "not",
//! "gonna" -> "gon" "na", "€0" -> "€" "0", "0km" -> "0" "km"), hash every
//! `n_grams`-word window (words joined by one space) with xxh64, then for each of
//! `num_buckets * hashes_per_bucket` permutations `h(x) = (a*x + b) mod p`
//! (p = 2^61 - 1, `a*x + b` wrapping in u64 as numpy's uint64 does) keep the
//! minimum over the document's shingles.

use xxhash_rust::xxh3::xxh3_64;
use xxhash_rust::xxh64::xxh64;

use super::mt19937::RandomState;
use super::normalize::simplify_text;
use super::{MinhashConfig, MinhashError};
use crate::curate::filters::words::{is_py_space, is_special, split_into_words};

const MERSENNE_PRIME: u64 = (1 << 61) - 1;

/// datatrove's `word_tokenizer.word_tokenize(simplify_text(text))`: exactly
/// [`split_into_words`], which tokenises each whitespace-free chunk on its
/// own. Most chunks of simplified text are plain `a-z` words, which spaCy
/// keeps whole unless they are a tokenizer exception ("cannot", "gonna"):
/// those skip the affix and infix rules, several times faster.
fn words_of_simplified(simple: &str) -> Vec<&str> {
    let mut words = Vec::new();
    for chunk in simple.split(is_py_space).filter(|c| !c.is_empty()) {
        if chunk.bytes().all(|b| b.is_ascii_lowercase()) && !is_special(chunk) {
            words.push(chunk);
        } else {
            words.extend(split_into_words(chunk));
        }
    }
    words
}

/// One document's sketch: what the index keeps of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocSketch {
    /// xxh3 of the simplified text: equal for exact duplicates after
    /// normalisation.
    pub exact: u64,
    /// One key per band: xxh3 of the band's `hashes_per_bucket` minimums.
    /// Empty when the document has fewer than `n_grams` words (datatrove
    /// writes no signature for it, so only exact dedup can catch it).
    pub band_keys: Vec<u64>,
}

/// Permutation parameters and config; cheap to share across threads.
#[derive(Debug, Clone)]
pub struct MinHasher {
    config: MinhashConfig,
    /// `[num_hashes]` each, drawn like datatrove (numpy RandomState(seed)).
    a: Vec<u64>,
    b: Vec<u64>,
}

impl MinHasher {
    pub fn new(config: MinhashConfig) -> Result<Self, MinhashError> {
        config.validate()?;
        let n = config.num_hashes();
        let mut rs = RandomState::new(config.seed);
        let a = (0..n).map(|_| rs.randint_u64(1, MERSENNE_PRIME)).collect();
        let b = (0..n).map(|_| rs.randint_u64(0, MERSENNE_PRIME)).collect();
        Ok(Self { config, a, b })
    }

    pub fn config(&self) -> &MinhashConfig {
        &self.config
    }

    /// The (a, b) permutation parameters, `[num_hashes]` each.
    pub fn parameters(&self) -> (&[u64], &[u64]) {
        (&self.a, &self.b)
    }

    /// Shingle hashes of already simplified text, in text order (repeats
    /// kept, as datatrove's array; the minimum does not care).
    fn shingles_of_simplified(&self, simple: &str) -> Vec<u64> {
        let words = words_of_simplified(simple);
        let n = self.config.n_grams;
        if words.len() < n {
            return Vec::new();
        }
        let mut buf = String::new();
        words
            .windows(n)
            .map(|w| {
                buf.clear();
                for (i, word) in w.iter().enumerate() {
                    if i > 0 {
                        buf.push(' ');
                    }
                    buf.push_str(word);
                }
                xxh64(buf.as_bytes(), 0)
            })
            .collect()
    }

    /// Shingle hashes of raw text: what the signature is a sketch of. The
    /// Jaccard similarity of two documents is that of these sets.
    pub fn shingles(&self, text: &str) -> Vec<u64> {
        self.shingles_of_simplified(&simplify_text(text))
    }

    /// The full signature, `[num_buckets * hashes_per_bucket]` minimums,
    /// band-major as datatrove splits it; `None` without shingles.
    pub fn signature(&self, text: &str) -> Option<Vec<u64>> {
        self.signature_of_shingles(&self.shingles(text))
    }

    fn signature_of_shingles(&self, shingles: &[u64]) -> Option<Vec<u64>> {
        if shingles.is_empty() {
            return None;
        }
        let mut mins = vec![u64::MAX; self.a.len()];
        // Shingle-outer so each shingle is loaded once and the inner loop
        // over permutations vectorises.
        for &x in shingles {
            for ((m, &a), &b) in mins.iter_mut().zip(&self.a).zip(&self.b) {
                let h = x.wrapping_mul(a).wrapping_add(b) % MERSENNE_PRIME;
                *m = (*m).min(h);
            }
        }
        Some(mins)
    }

    /// Everything the index needs of one document.
    pub fn sketch(&self, text: &str) -> DocSketch {
        let simple = simplify_text(text);
        let exact = xxh3_64(simple.as_bytes());
        let rows = self.config.hashes_per_bucket;
        let band_keys = self
            .signature_of_shingles(&self.shingles_of_simplified(&simple))
            .map(|sig| {
                sig.chunks(rows)
                    .map(|band| {
                        let mut bytes = Vec::with_capacity(rows * 8);
                        for v in band {
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                        xxh3_64(&bytes)
                    })
                    .collect()
            })
            .unwrap_or_default();
        DocSketch { exact, band_keys }
    }
}

#[cfg(test)]
mod tests {
    use super::{split_into_words, words_of_simplified, MinHasher, MinhashConfig};

    #[test]
    fn parameters_match_numpy_random_state_1() {
        // numpy 2.4: g = RandomState(1); a = g.randint(1, 2**61-1, dtype=uint64,
        // size=112); b = g.randint(0, 2**61-1, dtype=uint64, size=112).
        let h = MinHasher::new(MinhashConfig::default()).expect("default config is valid");
        let (a, b) = h.parameters();
        assert_eq!(
            &a[..3],
            &[775169054918279404, 1758426461858698313, 2109959069025162]
        );
        assert_eq!(a[111], 223865076026037746);
        assert_eq!(
            &b[..3],
            &[
                1062448801025099917,
                1324811268927594100,
                1217488311597731462
            ]
        );
        assert_eq!(b[111], 1097409548522419201);
    }

    #[test]
    fn words_are_split_into_words_of_the_whole_text() {
        let texts = [
            "i don t think we can t go they re gonna say it cannot be dont worry",
            "im sure youre right wont you come lemme know e g by 0pm i e soon 0",
            "prices €0 or £0 0km away 0 sure hi😀there and 0kg hashtag user",
            "emoticons 0 xd o o and 😀😀 survive let s see gotta wanna gimme ain t",
            "  tabs\tand\u{1c}separators\u{a0}nbsp  ",
            "cannot gonna dont im youre wont lemme gimme aint cant ive id ill its hes shes",
            "",
        ];
        for t in texts {
            assert_eq!(words_of_simplified(t), split_into_words(t), "{t:?}");
        }
    }

    #[test]
    fn short_documents_have_no_signature() {
        let h = MinHasher::new(MinhashConfig::default()).expect("default config is valid");
        assert!(h.signature("one two three four").is_none());
        assert_eq!(h.shingles("one two three four five").len(), 1);
        assert!(h.sketch("").band_keys.is_empty());
    }
}
