//! Question/answer pairs about the built-in stories, for instruction tuning.
//!
//! The story functions record [`Fact`]s as they write (drawing no random
//! numbers, so the corpus is byte-identical with or without them); this module
//! turns the facts into questions of five kinds and checks that each answer is
//! short and determined by the story text alone. Which questions a story gets
//! is drawn from a separate RNG keyed by (seed, story index), so asking more
//! or fewer questions never changes a story.

use std::collections::HashSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{build_story, capitalize, vocab};

/// Longest answer, in words, except for "which came first" answers, which are
/// whole event phrases ("the wind blew very hard").
const MAX_ANSWER_WORDS: usize = 4;
const MAX_EVENT_WORDS: usize = 5;

/// A fact a story states, recorded while the story is built.
pub(super) enum Fact {
    /// `who` `did` something, past tense: ("Tom", "lost the ball") asks
    /// "Who lost the ball?".
    Did { who: &'static str, did: String },
    /// A thing named by a bare noun or verb phrase: ("did Tom lose", "ball")
    /// asks "What did Tom lose?".
    Thing { asked: String, what: &'static str },
    /// `owner`'s `object` is described by `colour`, which may not be a hue.
    Colour {
        owner: &'static str,
        object: &'static str,
        colour: &'static str,
    },
    /// ("did Tom go to play", "the park") asks "Where did Tom go to play?".
    Place { asked: String, place: &'static str },
    /// Something that happened, quoted verbatim from the story (lower case).
    Event(String),
}

impl Fact {
    pub(super) fn did(who: &'static str, did: String) -> Fact {
        Fact::Did { who, did }
    }
    pub(super) fn thing(asked: String, what: &'static str) -> Fact {
        Fact::Thing { asked, what }
    }
    pub(super) fn place(asked: String, place: &'static str) -> Fact {
        Fact::Place { asked, place }
    }
}

/// The kinds of question, in the order [`generate_qa`] lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QaKind {
    /// "Who lost the ball?" -> "Tom".
    Who,
    /// "What did Tom lose?" -> "ball"; animals, foods, activities too.
    What,
    /// "What colour was Tom's kite?" -> "red".
    Colour,
    /// "Where did Lily go to play?" -> "the park".
    Where,
    /// "What happened first, X or Y?" -> X or Y, verbatim.
    First,
}

impl QaKind {
    pub const ALL: [QaKind; 5] = [
        QaKind::Who,
        QaKind::What,
        QaKind::Colour,
        QaKind::Where,
        QaKind::First,
    ];
}

/// One question about one story, with its exact answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QaExample {
    pub story: String,
    pub question: String,
    pub answer: String,
}

impl QaExample {
    /// The kind of question, read off its opening words (every generated
    /// question opens with its kind's words, so this never guesses).
    pub fn kind(&self) -> QaKind {
        let q = self.question.as_str();
        if q.starts_with("Who ") {
            QaKind::Who
        } else if q.starts_with("What colour ") {
            QaKind::Colour
        } else if q.starts_with("What happened first") {
            QaKind::First
        } else if q.starts_with("Where ") {
            QaKind::Where
        } else {
            QaKind::What
        }
    }
}

/// Up to `per_story` questions, each of a different kind, about each of the
/// stories `generate_corpus(seed, n_stories)` returns, in story order.
pub fn generate_qa(seed: u64, n_stories: usize, per_story: usize) -> Vec<QaExample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for index in 0..n_stories {
        let story = build_story(&mut rng);
        out.extend(ask(story.render(), &story.facts, seed, index, per_story));
    }
    out
}

/// Training questions about the first `n_train_stories` stories of `seed`
/// (exactly `generate_qa(seed, n_train_stories, per_story)`), and evaluation
/// questions about the next `n_eval_stories`, less any story whose text also
/// occurs among the training stories (the grammar can repeat a story), so no
/// evaluation story was seen in training. The evaluation side may therefore
/// cover slightly fewer than `n_eval_stories` stories.
pub fn qa_split(
    seed: u64,
    n_train_stories: usize,
    n_eval_stories: usize,
    per_story: usize,
) -> (Vec<QaExample>, Vec<QaExample>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for index in 0..n_train_stories + n_eval_stories {
        let story = build_story(&mut rng);
        let text = story.render();
        if index < n_train_stories {
            seen.insert(text.clone());
            train.extend(ask(text, &story.facts, seed, index, per_story));
        } else if !seen.contains(&text) {
            eval.extend(ask(text, &story.facts, seed, index, per_story));
        }
    }
    (train, eval)
}

/// One JSON line per example, `{"prompt": story + "\n" + question,
/// "response": answer}`, the format the instruction-data loader reads.
pub fn qa_to_jsonl(examples: &[QaExample]) -> String {
    use serde_json::Value;
    let mut out = String::new();
    for e in examples {
        // `Value`'s Display is serde_json's escaping and cannot fail.
        let prompt = Value::String(format!("{}\n{}", e.story, e.question));
        let response = Value::String(e.answer.clone());
        out.push_str(&format!(
            "{{\"prompt\":{prompt},\"response\":{response}}}\n"
        ));
    }
    out
}

/// The questions' own RNG: keyed by seed and story index and never by the
/// story RNG's state, so the stories do not depend on the questions.
fn qa_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(index as u64).to_le_bytes());
    key[16..].copy_from_slice(b"kiln-stories-qa!");
    ChaCha8Rng::from_seed(key)
}

/// Picks up to `per_story` kinds at random, then one question of each.
fn ask(text: String, facts: &[Fact], seed: u64, index: usize, per_story: usize) -> Vec<QaExample> {
    let mut rng = qa_rng(seed, index);
    let candidates = candidates(&text, facts);
    let events = events(&text, facts);
    let mut kinds: Vec<QaKind> = QaKind::ALL
        .into_iter()
        .filter(|&k| match k {
            QaKind::First => events.len() >= 2,
            _ => candidates.iter().any(|(kind, _, _)| *kind == k),
        })
        .collect();
    kinds.shuffle(&mut rng);
    kinds.truncate(per_story);
    kinds.sort();
    kinds
        .into_iter()
        .map(|kind| {
            let (question, answer) = if kind == QaKind::First {
                which_first(&events, &mut rng)
            } else {
                let of_kind: Vec<_> = candidates.iter().filter(|c| c.0 == kind).collect();
                let (_, q, a) = of_kind[rng.random_range(0..of_kind.len())];
                (q.clone(), a.clone())
            };
            QaExample {
                story: text.clone(),
                question,
                answer,
            }
        })
        .collect()
}

/// Every question but "which came first" the facts support.
fn candidates(text: &str, facts: &[Fact]) -> Vec<(QaKind, String, String)> {
    let mut out = Vec::new();
    for fact in facts {
        let (kind, question, answer) = match fact {
            Fact::Did { who, did } => (QaKind::Who, format!("Who {did}?"), who.to_string()),
            Fact::Thing { asked, what } => {
                (QaKind::What, format!("What {asked}?"), what.to_string())
            }
            Fact::Colour {
                owner,
                object,
                colour,
            } => {
                // "What colour was the big ball?" has no answer.
                if !vocab::HUES.contains(colour) {
                    continue;
                }
                let q = format!("What colour was {owner}'s {object}?");
                (QaKind::Colour, q, colour.to_string())
            }
            Fact::Place { asked, place } => {
                (QaKind::Where, format!("Where {asked}?"), place.to_string())
            }
            Fact::Event(_) => continue,
        };
        if words(&answer) <= MAX_ANSWER_WORDS && appears(text, &answer) {
            out.push((kind, question, answer));
        }
    }
    out
}

/// The recorded events that can be asked about, in story order: each quoted
/// exactly once (so its place in the story is unambiguous), short, and not
/// part of another event.
fn events(text: &str, facts: &[Fact]) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let phrases: Vec<&String> = facts
        .iter()
        .filter_map(|f| match f {
            Fact::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    let mut placed: Vec<(usize, String)> = phrases
        .iter()
        .filter(|e| words(e) <= MAX_EVENT_WORDS)
        .filter(|e| {
            !phrases
                .iter()
                .any(|other| other != *e && other.contains(e.as_str()))
        })
        .filter_map(|e| {
            let needle = e.to_ascii_lowercase();
            match lower.match_indices(&needle).collect::<Vec<_>>()[..] {
                [(at, _)] => Some((at, (*e).clone())),
                _ => None,
            }
        })
        .collect();
    placed.sort();
    placed.into_iter().map(|(_, e)| e).collect()
}

/// "What happened first, X or Y?" about two of `events` (in story order),
/// listed in random order so the first-named is not always the answer.
fn which_first(events: &[String], rng: &mut ChaCha8Rng) -> (String, String) {
    let i = rng.random_range(0..events.len());
    let mut j = rng.random_range(0..events.len() - 1);
    if j >= i {
        j += 1;
    }
    let answer = events[i.min(j)].clone();
    let question = format!("What happened first, {} or {}?", events[i], events[j]);
    (question, answer)
}

fn words(s: &str) -> usize {
    s.split_whitespace().count()
}

/// Whether `answer` is in `text` as written, or capitalised where it opens a
/// sentence ("the teacher" in "The teacher smiled").
fn appears(text: &str, answer: &str) -> bool {
    text.contains(answer) || text.contains(&capitalize(answer))
}

#[cfg(test)]
mod tests;
