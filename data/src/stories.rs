//! The built-in corpus: simple English stories from a small grammar.
//!
//! In the spirit of TinyStories (Eldan & Li, 2023): short stories with a
//! beginning, a problem and a resolution, a small vocabulary and consistent
//! characters, so that even a tiny model visibly learns grammar, names that
//! stay fixed within a story, and simple cause and effect. Generation is
//! deterministic from the seed and needs no download, so `kiln train` works
//! out of the box and tests can train on real-looking text.
//!
//! Output is plain ASCII; sentences end with punctuation; the paragraphs of a
//! story are separated by a single newline.

mod vocab;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use vocab::{Animal, Gender, Place};

/// `n_docs` stories from `seed`; the same seed always gives the same corpus.
pub fn generate_corpus(seed: u64, n_docs: usize) -> Vec<String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n_docs).map(|_| generate_story(&mut rng)).collect()
}

/// One story drawn from `rng`.
pub fn generate_story(rng: &mut ChaCha8Rng) -> String {
    build_story(rng).render()
}

fn build_story(rng: &mut ChaCha8Rng) -> Story {
    let mut story = Story::default();
    match rng.random_range(0..8) {
        0 => lost_object(rng, &mut story),
        1 => bad_weather(rng, &mut story),
        2 => help_animal(rng, &mut story),
        3 => sharing(rng, &mut story),
        4 => try_again(rng, &mut story),
        5 => animal_friend(rng, &mut story),
        6 => picnic(rng, &mut story),
        _ => best_friends(rng, &mut story),
    }
    story
}

/// Sentences grouped into paragraphs.
#[derive(Default)]
struct Story {
    paragraphs: Vec<Vec<String>>,
}

impl Story {
    /// Adds a sentence (which carries its own end punctuation), capitalised.
    fn say(&mut self, sentence: String) {
        if self.paragraphs.is_empty() {
            self.paragraphs.push(Vec::new());
        }
        if let Some(p) = self.paragraphs.last_mut() {
            p.push(capitalize(&sentence));
        }
    }

    fn new_paragraph(&mut self) {
        if self.paragraphs.last().is_some_and(|p| !p.is_empty()) {
            self.paragraphs.push(Vec::new());
        }
    }

    #[cfg(test)]
    fn sentence_count(&self) -> usize {
        self.paragraphs.iter().map(Vec::len).sum()
    }

    fn render(&self) -> String {
        let paragraphs: Vec<String> = self
            .paragraphs
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| p.join(" "))
            .collect();
        paragraphs.join("\n")
    }
}

/// The character a story is about; pronouns come from `gender` throughout.
struct Hero {
    name: &'static str,
    gender: Gender,
    species: Option<&'static Animal>,
}

impl Hero {
    fn he(&self) -> &'static str {
        self.gender.subject()
    }
    fn him(&self) -> &'static str {
        self.gender.object()
    }
    fn his(&self) -> &'static str {
        self.gender.possessive()
    }
    fn himself(&self) -> &'static str {
        self.gender.reflexive()
    }
    /// "girl", "boy" or the animal.
    fn what(&self) -> &'static str {
        match self.species {
            Some(a) => a.name,
            None => self.gender.child(),
        }
    }
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn chance(rng: &mut ChaCha8Rng, percent: u32) -> bool {
    rng.random_range(0..100) < percent
}

fn child(rng: &mut ChaCha8Rng, not: &str) -> Hero {
    loop {
        let gender = if chance(rng, 50) {
            Gender::Girl
        } else {
            Gender::Boy
        };
        let names = match gender {
            Gender::Girl => vocab::GIRL_NAMES,
            Gender::Boy => vocab::BOY_NAMES,
        };
        let name = *pick(rng, names);
        if name != not {
            return Hero {
                name,
                gender,
                species: None,
            };
        }
    }
}

fn pet(rng: &mut ChaCha8Rng) -> Hero {
    let gender = if chance(rng, 50) {
        Gender::Girl
    } else {
        Gender::Boy
    };
    let name = *pick(rng, vocab::PET_NAMES);
    Hero {
        name,
        gender,
        species: Some(pick(rng, vocab::ANIMALS)),
    }
}

fn other_animal(rng: &mut ChaCha8Rng, not: &str) -> &'static Animal {
    loop {
        let a = pick(rng, vocab::ANIMALS);
        if a.name != not {
            return a;
        }
    }
}

/// "a" or "an" for the word that follows.
fn article(word: &str) -> &'static str {
    match word.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => "an",
        _ => "a",
    }
}

/// "a red ball", "an orange kite".
fn thing(rng: &mut ChaCha8Rng) -> (String, &'static str) {
    let color = pick(rng, vocab::COLORS);
    let object = *pick(rng, vocab::OBJECTS);
    (format!("{} {color} {object}", article(color)), object)
}

fn at(place: &Place) -> String {
    format!("{} {}", place.prep, place.name)
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn intro(rng: &mut ChaCha8Rng, hero: &Hero) -> String {
    let n = hero.name;
    let w = hero.what();
    match rng.random_range(0..3) {
        0 => format!(
            "{}, there was a little {w} named {n}.",
            pick(rng, vocab::INTROS)
        ),
        1 => format!("There once was a little {w} named {n}."),
        _ => format!("{n} was a little {w} who loved to play outside."),
    }
}

fn lost_object(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let friend = child(rng, h.name);
    let (owned, obj) = thing(rng);
    let place = pick(rng, vocab::PLACES);
    let (n, he, his) = (h.name, h.he(), h.his());

    s.say(intro(rng, &h));
    s.say(format!("{he} had {owned} and took it everywhere."));
    let time = pick(rng, vocab::TIMES);
    s.say(format!(
        "{time}, {n} went to {} to play with {his} {obj}.",
        place.name
    ));
    s.new_paragraph();
    s.say(format!("when it was time to go home, the {obj} was gone!"));
    s.say(format!(
        "{n} looked everywhere, but {he} could not find it, and {he} felt {}.",
        pick(rng, vocab::BAD_FEELINGS)
    ));
    if chance(rng, 50) {
        s.say(format!("\"Where is my {obj}?\" {n} cried."));
    }
    s.new_paragraph();
    s.say(format!(
        "then {his} friend {} came to help, and they found it {}.",
        friend.name,
        pick(rng, vocab::HIDING_SPOTS)
    ));
    if chance(rng, 50) {
        s.say(format!(
            "{n} hugged {} and said, \"Thank you!\"",
            friend.name
        ));
    } else {
        s.say(format!(
            "{n} was {} again.",
            pick(rng, vocab::GOOD_FEELINGS)
        ));
    }
}

fn bad_weather(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let place = pick(rng, vocab::PLACES);
    let (n, he) = (h.name, h.he());
    let helper = pick(rng, vocab::HELPERS);

    s.say(format!(
        "{}, {n} wanted to go to {} to {}.",
        pick(rng, vocab::TIMES),
        place.name,
        pick(rng, vocab::ACTIVITIES)
    ));
    s.say(format!("but {}.", pick(rng, vocab::BAD_WEATHER)));
    s.say(format!(
        "{n} had to stay inside, and {he} felt {}.",
        pick(rng, vocab::BAD_FEELINGS)
    ));
    if chance(rng, 50) {
        s.say(format!("\"I never get to have fun,\" {he} said."));
    }
    s.new_paragraph();
    s.say(format!(
        "{helper} smiled and said, \"Let's {}!\"",
        pick(rng, vocab::INDOOR_ACTIVITIES)
    ));
    s.say(format!(
        "they had so much fun that {n} forgot all about the weather."
    ));
    if chance(rng, 50) {
        s.say(format!(
            "later, the sun came out, and {n} went to {} after all.",
            place.name
        ));
    }
}

fn help_animal(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let animal = pick(rng, vocab::ANIMALS);
    let place = pick(rng, vocab::PLACES);
    let (n, he, him) = (h.name, h.he(), h.him());
    let a = animal.name;

    s.say(format!(
        "{n} was a kind little {} who loved animals.",
        h.what()
    ));
    s.say(format!(
        "{}, {he} was walking {} when {he} heard a small sound.",
        pick(rng, vocab::TIMES),
        at(place)
    ));
    s.new_paragraph();
    let rescue = match rng.random_range(0..3) {
        0 => {
            s.say(format!(
                "it was {} {a}, and it was stuck in a bush.",
                article(a)
            ));
            format!("{n} gently pulled the branches apart and set it free.")
        }
        1 => {
            s.say(format!(
                "it was {} {a}, and it was very hungry.",
                article(a)
            ));
            format!("{n} gave it {}, and it ate every bit.", animal.food)
        }
        _ => {
            s.say(format!(
                "it was {} {a}, and it was lost and could not find its home.",
                article(a)
            ));
            format!("{n} carried it all the way back to {}.", animal.home)
        }
    };
    if chance(rng, 50) {
        s.say(format!("\"Don't be scared, little {a},\" {he} said."));
    }
    s.say(rescue);
    s.new_paragraph();
    s.say(format!(
        "the {a} {} happily and {} around {him}.",
        animal.sound, animal.moved
    ));
    s.say(format!("{n} felt {}.", pick(rng, vocab::GOOD_FEELINGS)));
    if chance(rng, 30) {
        s.say("it is good to help others.".to_string());
    }
}

fn sharing(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let friend = child(rng, h.name);
    let color = pick(rng, vocab::COLORS);
    let obj = pick(rng, vocab::OBJECTS);
    let (n, f) = (h.name, friend.name);

    s.say(format!(
        "{}, there was a {} named {n} who had a new {color} {obj}.",
        pick(rng, vocab::INTROS),
        h.what()
    ));
    s.say(format!(
        "{n}'s friend {f} asked, \"Can I play with your {obj}?\""
    ));
    s.say(format!("{n} held it tight and said, \"No, it is mine!\""));
    s.say(format!(
        "{f} looked {} and walked away.",
        pick(rng, vocab::BAD_FEELINGS)
    ));
    s.new_paragraph();
    s.say(format!(
        "soon {n} felt lonely, because playing alone was not fun."
    ));
    s.say(format!(
        "{} ran to {f} and said, \"Let's play with it together!\"",
        h.he()
    ));
    if chance(rng, 60) {
        s.say("they took turns all afternoon and laughed a lot.".to_string());
    }
    if chance(rng, 40) {
        s.say(pick(rng, vocab::MORALS).to_string());
    }
}

fn try_again(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let goal = pick(rng, vocab::CHALLENGES);
    let helper = pick(rng, vocab::HELPERS);
    let (n, he) = (h.name, h.he());

    s.say(format!("{n} really wanted to learn to {goal}."));
    s.say(format!("{he} tried, but it was hard, and {he} fell down."));
    s.say(format!(
        "{n} felt {} and wanted to give up.",
        pick(rng, vocab::BAD_FEELINGS)
    ));
    s.new_paragraph();
    s.say(format!(
        "{helper} said, \"Don't give up. Try one more time!\""
    ));
    if chance(rng, 50) {
        s.say(format!("so {n} tried again, and again, and again."));
    }
    s.say(format!(
        "at last, {he} could {goal} all by {}!",
        h.himself()
    ));
    s.say(format!("{n} felt so {}.", pick(rng, vocab::GOOD_FEELINGS)));
    if chance(rng, 30) {
        s.say("if you keep trying, you can do it.".to_string());
    }
}

fn animal_friend(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = pet(rng);
    let species = h.species.map_or("", |a| a.name);
    let home = h.species.map_or("a little house", |a| a.home);
    let other = other_animal(rng, species);
    let place = pick(rng, vocab::PLACES);
    let (n, he) = (h.name, h.he());

    s.say(intro(rng, &h));
    s.say(format!("{n} lived in {home} {}.", at(place)));
    s.say(format!("{n} had no friends, and {he} felt lonely."));
    s.new_paragraph();
    s.say(format!(
        "{}, {n} saw {} {} playing {}.",
        pick(rng, vocab::TIMES),
        article(other.name),
        other.name,
        at(place)
    ));
    s.say(format!("{n} asked, \"Will you be my friend?\""));
    s.say(format!(
        "the {} {} and said, \"Yes!\"",
        other.name, other.sound
    ));
    if chance(rng, 60) {
        s.say("from that day on, they played together every day.".to_string());
    }
    if chance(rng, 30) {
        s.say("friends make everything better.".to_string());
    }
}

fn picnic(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let helper = pick(rng, vocab::HELPERS);
    let place = pick(rng, vocab::PLACES);
    let animal = pick(rng, vocab::ANIMALS);
    let food = pick(rng, vocab::FOODS);
    let (n, he) = (h.name, h.he());

    s.say(format!(
        "{}, {n} and {helper} went to {}.",
        pick(rng, vocab::TIMES),
        place.name
    ));
    s.say(format!("{}.", pick(rng, vocab::WEATHER)));
    s.say(format!(
        "they brought {food} for a picnic and sat near {}.",
        place.feature
    ));
    s.new_paragraph();
    s.say(format!(
        "then {} {} came and ate the {food}!",
        article(animal.name),
        animal.name
    ));
    s.say(format!("{n} was surprised, but then {he} laughed."));
    if chance(rng, 50) {
        s.say(format!(
            "\"That {} was very hungry,\" said {helper}.",
            animal.name
        ));
    }
    s.say("they shared the rest of the food and had a happy day.".to_string());
}

fn best_friends(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let friend = child(rng, h.name);
    let place = pick(rng, vocab::PLACES);

    s.say(format!("{} and {} were best friends.", h.name, friend.name));
    s.say(format!(
        "every day, they went to {} to {}.",
        place.name,
        pick(rng, vocab::ACTIVITIES)
    ));
    s.say(format!(
        "{}, and they had a lot of fun.",
        pick(rng, vocab::WEATHER)
    ));
    if chance(rng, 50) {
        s.say(format!("\"This is the best day ever!\" said {}.", h.name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Instant;

    #[test]
    fn same_seed_same_corpus_other_seed_other_corpus() {
        assert_eq!(generate_corpus(42, 50), generate_corpus(42, 50));
        assert_ne!(generate_corpus(42, 50), generate_corpus(43, 50));
    }

    #[test]
    fn stories_are_varied() {
        let stories = generate_corpus(0, 500);
        let words: HashSet<&str> = stories
            .iter()
            .flat_map(|s| s.split(|c: char| !c.is_ascii_alphabetic()))
            .filter(|w| !w.is_empty())
            .collect();
        assert!(words.len() >= 200, "only {} distinct words", words.len());
        let first: HashSet<&String> = stories[..100].iter().collect();
        assert_eq!(
            first.len(),
            100,
            "two of the first 100 stories are identical"
        );
    }

    #[test]
    fn stories_are_well_formed() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..2000 {
            let story = build_story(&mut rng);
            assert!(
                (3..=8).contains(&story.sentence_count()),
                "{} sentences",
                story.sentence_count()
            );
            let text = story.render();
            assert!(text.is_ascii(), "{text}");
            assert!(!text.contains("\n\n") && !text.ends_with('\n'), "{text:?}");
            for paragraph in text.lines() {
                let first = paragraph.chars().next().unwrap();
                assert!(first.is_ascii_uppercase() || first == '"', "{paragraph}");
                let last = paragraph.chars().last().unwrap();
                assert!(matches!(last, '.' | '!' | '?' | '"'), "{paragraph}");
            }
            assert_eq!(text.matches('"').count() % 2, 0, "{text}");
        }
    }

    #[test]
    fn pronouns_follow_the_hero() {
        // Every pronoun in `try_again` refers to its hero (the helper never
        // gets one), so a girl hero means "she" and never "he", and back.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..500 {
            let mut s = Story::default();
            try_again(&mut rng, &mut s);
            let text = s.render();
            let hero = text.split_whitespace().next().unwrap();
            let is_girl = vocab::GIRL_NAMES.contains(&hero);
            let has = |pronoun: &str| {
                text.split(|c: char| !c.is_ascii_alphabetic())
                    .any(|w| w.eq_ignore_ascii_case(pronoun))
            };
            assert_eq!((has("she"), has("he")), (is_girl, !is_girl), "{text}");
        }
    }

    #[test]
    fn a_megabyte_is_fast() {
        let start = Instant::now();
        let corpus = generate_corpus(1, 4000);
        let bytes: usize = corpus.iter().map(|s| s.len()).sum();
        let secs = start.elapsed().as_secs_f64();
        println!("generated {bytes} bytes of stories in {secs:.3} s");
        assert!(bytes > 1_000_000, "{bytes} bytes");
        assert!(secs < 1.0, "{secs} s");
    }
}
