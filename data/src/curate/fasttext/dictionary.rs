//! fastText's dictionary (`src/dictionary.cc`, 0.9.2): byte-level whitespace
//! tokenisation, words and labels with counts, hashed word n-grams and char
//! n-grams, and its `.bin` section. Ids and hashes must match fastText's
//! exactly, or a model trained by fastText looks up the wrong rows.

use std::collections::HashMap;

use super::binio::{Reader, Writer};
use super::stdalgo::sort;
use super::{Args, FastTextError};

/// The end-of-sentence token fastText reads for every newline.
pub const EOS: &[u8] = b"</s>";

/// fastText's `Dictionary::hash`: 32-bit FNV-1a, except each byte is
/// sign-extended first (`uint32_t(int8_t(c))`), which changes the hash of
/// every byte >= 0x80 (all non-ASCII UTF-8).
pub fn hash(bytes: &[u8]) -> u32 {
    let mut h: u32 = 2_166_136_261;
    for &b in bytes {
        h ^= b as i8 as i32 as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}

/// fastText's `readWord` separators: space, \n, \r, \t, \v, \f, NUL.
fn is_sep(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0b | 0x0c | 0)
}

/// fastText's token stream over raw bytes: words split on [`is_sep`], and a
/// newline that ends no word yields [`EOS`] (so "a b\n" is a, b, </s>).
pub struct Tokens<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let b = self.bytes;
        while self.pos < b.len() && is_sep(b[self.pos]) {
            if b[self.pos] == b'\n' {
                self.pos += 1;
                return Some(EOS);
            }
            self.pos += 1;
        }
        if self.pos >= b.len() {
            return None;
        }
        let start = self.pos;
        while self.pos < b.len() && !is_sep(b[self.pos]) {
            self.pos += 1;
        }
        // The separator after a word stays unread: a '\n' there is the next EOS.
        Some(&b[start..self.pos])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    Word = 0,
    Label = 1,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub word: Vec<u8>,
    pub count: i64,
    pub kind: EntryKind,
}

/// The dictionary plus the arguments its lookups depend on.
#[derive(Debug, Clone)]
pub struct Dictionary {
    pub entries: Vec<Entry>,
    index: HashMap<Vec<u8>, i32>,
    pub nwords: i32,
    pub nlabels: i32,
    pub ntokens: i64,
    pruneidx_size: i64,
    pruneidx: Vec<(i32, i32)>,
    prune_map: HashMap<i32, i32>,
    /// Per entry: its own id then its char n-gram bucket rows.
    subwords: Vec<Vec<i32>>,
    label: Vec<u8>,
    minn: i32,
    maxn: i32,
    bucket: i32,
    word_ngrams: i32,
}

impl Dictionary {
    fn empty(args: &Args) -> Self {
        Self {
            entries: Vec::new(),
            index: HashMap::new(),
            nwords: 0,
            nlabels: 0,
            ntokens: 0,
            pruneidx_size: -1,
            pruneidx: Vec::new(),
            prune_map: HashMap::new(),
            subwords: Vec::new(),
            label: args.label.as_bytes().to_vec(),
            minn: args.minn,
            maxn: args.maxn,
            bucket: args.bucket,
            word_ngrams: args.word_ngrams,
        }
    }

    fn kind_of(&self, token: &[u8]) -> EntryKind {
        if token.starts_with(&self.label) {
            EntryKind::Label
        } else {
            EntryKind::Word
        }
    }

    /// Counts every token of a training file (`readFromFile`), then keeps
    /// words seen `min_count` times and labels seen `min_count_label` times,
    /// ordered as fastText's `threshold` orders them: libstdc++'s unstable
    /// `std::sort` by (kind, count desc) over first-seen order, replicated so
    /// that words with equal counts get fastText's ids.
    pub fn build(bytes: &[u8], args: &Args) -> Self {
        let mut dict = Self::empty(args);
        for token in Tokens::new(bytes) {
            dict.ntokens += 1;
            if let Some(&id) = dict.index.get(token) {
                dict.entries[id as usize].count += 1;
            } else {
                dict.index.insert(token.to_vec(), dict.entries.len() as i32);
                let kind = dict.kind_of(token);
                dict.entries.push(Entry {
                    word: token.to_vec(),
                    count: 1,
                    kind,
                });
            }
        }
        let mut order: Vec<usize> = (0..dict.entries.len()).collect();
        let entries = &dict.entries;
        sort(&mut order, |&a, &b| {
            let (a, b) = (&entries[a], &entries[b]);
            if a.kind != b.kind {
                a.kind < b.kind
            } else {
                a.count > b.count
            }
        });
        let mut taken: Vec<Option<Entry>> = dict.entries.drain(..).map(Some).collect();
        dict.entries = order.into_iter().filter_map(|i| taken[i].take()).collect();
        dict.entries.retain(|e| match e.kind {
            EntryKind::Word => e.count >= i64::from(args.min_count),
            EntryKind::Label => e.count >= i64::from(args.min_count_label),
        });
        dict.reindex();
        dict
    }

    fn reindex(&mut self) {
        self.index.clear();
        self.nwords = 0;
        self.nlabels = 0;
        for (i, e) in self.entries.iter().enumerate() {
            self.index.insert(e.word.clone(), i as i32);
            match e.kind {
                EntryKind::Word => self.nwords += 1,
                EntryKind::Label => self.nlabels += 1,
            }
        }
        self.prune_map = self.pruneidx.iter().copied().collect();
        self.subwords = (0..self.entries.len())
            .map(|i| {
                let mut sub = vec![i as i32];
                let word = &self.entries[i].word;
                if word.as_slice() != EOS {
                    self.char_ngrams(&bow_eow(word), &mut sub);
                }
                sub
            })
            .collect();
    }

    pub fn id(&self, word: &[u8]) -> Option<i32> {
        self.index.get(word).copied()
    }

    pub fn label(&self, i: usize) -> &[u8] {
        &self.entries[self.nwords as usize + i].word
    }

    /// `pushHash`: a bucket becomes input row nwords + bucket (after the
    /// quantizer's pruning map, when the model has one).
    fn push_hash(&self, out: &mut Vec<i32>, id: i32) {
        if self.pruneidx_size == 0 || id < 0 {
            return;
        }
        let id = if self.pruneidx_size > 0 {
            match self.prune_map.get(&id) {
                Some(&v) => v,
                None => return,
            }
        } else {
            id
        };
        out.push(self.nwords + id);
    }

    /// `computeSubwords`: char n-grams of `<word>`, minn..=maxn UTF-8
    /// characters, except the lone "<" and ">".
    fn char_ngrams(&self, word: &[u8], out: &mut Vec<i32>) {
        if self.maxn <= 0 || self.bucket <= 0 {
            return;
        }
        let cont = |b: u8| b & 0xC0 == 0x80;
        for i in 0..word.len() {
            if cont(word[i]) {
                continue;
            }
            let (mut j, mut n) = (i, 1);
            while j < word.len() && n <= self.maxn {
                j += 1;
                while j < word.len() && cont(word[j]) {
                    j += 1;
                }
                if n >= self.minn && !(n == 1 && (i == 0 || j == word.len())) {
                    let h = hash(&word[i..j]) % self.bucket as u32;
                    self.push_hash(out, h as i32);
                }
                n += 1;
            }
        }
    }

    /// `getLine` over one line's tokens (up to and including its EOS):
    /// input rows (words or their subwords, then word n-grams) and label
    /// indices. Returns the number of tokens read.
    pub fn line<'a>(
        &self,
        tokens: &mut impl Iterator<Item = &'a [u8]>,
        words: &mut Vec<i32>,
        labels: &mut Vec<i32>,
    ) -> i64 {
        words.clear();
        labels.clear();
        let mut hashes: Vec<i32> = Vec::new();
        let mut ntokens = 0;
        for token in tokens.by_ref() {
            let h = hash(token);
            let wid = self.id(token);
            let kind = match wid {
                Some(id) => self.entries[id as usize].kind,
                None => self.kind_of(token),
            };
            ntokens += 1;
            match (kind, wid) {
                (EntryKind::Word, Some(id)) => {
                    if self.maxn <= 0 {
                        words.push(id);
                    } else {
                        words.extend_from_slice(&self.subwords[id as usize]);
                    }
                    hashes.push(h as i32);
                }
                (EntryKind::Word, None) => {
                    // Out of vocabulary: only its char n-grams (and its hash
                    // in the word n-grams) represent it.
                    if token != EOS {
                        self.char_ngrams(&bow_eow(token), words);
                    }
                    hashes.push(h as i32);
                }
                (EntryKind::Label, Some(id)) => labels.push(id - self.nwords),
                (EntryKind::Label, None) => {}
            }
            if token == EOS {
                break;
            }
        }
        self.word_ngrams(&hashes, words);
        ntokens
    }

    /// `addWordNgrams`: the int32 hashes are sign-extended into a uint64
    /// accumulator, as C++ does when it widens them.
    fn word_ngrams(&self, hashes: &[i32], out: &mut Vec<i32>) {
        if self.bucket <= 0 {
            return;
        }
        let n = self.word_ngrams.max(1) as usize;
        for i in 0..hashes.len() {
            let mut h = hashes[i] as i64 as u64;
            for &next in hashes.iter().take(i + n).skip(i + 1) {
                h = h.wrapping_mul(116_049_371).wrapping_add(next as i64 as u64);
                self.push_hash(out, (h % self.bucket as u64) as i32);
            }
        }
    }

    /// `Dictionary::save`.
    pub(crate) fn save(&self, w: &mut Writer) {
        w.i32(self.entries.len() as i32);
        w.i32(self.nwords);
        w.i32(self.nlabels);
        w.i64(self.ntokens);
        w.i64(self.pruneidx_size);
        for e in &self.entries {
            w.cstr(&e.word);
            w.i64(e.count);
            w.u8(e.kind as u8);
        }
        for &(a, b) in &self.pruneidx {
            w.i32(a);
            w.i32(b);
        }
    }

    /// `Dictionary::load`; `args` are the model's (n-gram settings).
    pub(crate) fn load(r: &mut Reader, args: &Args) -> Result<Self, FastTextError> {
        let mut dict = Self::empty(args);
        let at = r.offset();
        let size = r.i32("dictionary size")?;
        dict.nwords = r.i32("dictionary nwords")?;
        dict.nlabels = r.i32("dictionary nlabels")?;
        dict.ntokens = r.i64("dictionary ntokens")?;
        dict.pruneidx_size = r.i64("dictionary pruneidx_size")?;
        if size < 0 || dict.nwords < 0 || dict.nlabels < 0 || dict.nwords + dict.nlabels != size {
            let detail = format!(
                "size {size} != nwords {} + nlabels {}",
                dict.nwords, dict.nlabels
            );
            return Err(r.corrupt(at, "dictionary header", detail));
        }
        for i in 0..size {
            let at = r.offset();
            let word = r.cstr("dictionary entry")?.to_vec();
            let count = r.i64("dictionary entry count")?;
            let kind = match r.u8("dictionary entry type")? {
                0 if i < dict.nwords => EntryKind::Word,
                1 if i >= dict.nwords => EntryKind::Label,
                t => {
                    let detail = format!("entry {i} has type {t} (words first, then labels)");
                    return Err(r.corrupt(at, "dictionary entry", detail));
                }
            };
            dict.entries.push(Entry { word, count, kind });
        }
        for _ in 0..dict.pruneidx_size.max(0) {
            let a = r.i32("dictionary pruneidx")?;
            let b = r.i32("dictionary pruneidx")?;
            dict.pruneidx.push((a, b));
        }
        dict.reindex();
        Ok(dict)
    }
}

fn bow_eow(word: &[u8]) -> Vec<u8> {
    let mut w = Vec::with_capacity(word.len() + 2);
    w.push(b'<');
    w.extend_from_slice(word);
    w.push(b'>');
    w
}
