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

pub mod qa;
mod vocab;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use qa::Fact;
pub use qa::{generate_qa, qa_split, qa_to_jsonl, QaExample, QaKind};

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

/// Sentences grouped into paragraphs, and what they state (for questions).
#[derive(Default)]
struct Story {
    paragraphs: Vec<Vec<String>>,
    facts: Vec<Fact>,
}

impl Story {
    /// Records a fact; draws no random numbers, so the text stays the same.
    fn note(&mut self, fact: Fact) {
        self.facts.push(fact);
    }

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

/// "a red ball", "an orange kite", with the object and the colour word.
fn thing(rng: &mut ChaCha8Rng) -> (String, &'static str, &'static str) {
    let color = *pick(rng, vocab::COLORS);
    let object = *pick(rng, vocab::OBJECTS);
    (
        format!("{} {color} {object}", article(color)),
        object,
        color,
    )
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
    let (owned, obj, color) = thing(rng);
    let place = pick(rng, vocab::PLACES);
    let (n, he, his, f) = (h.name, h.he(), h.his(), friend.name);

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
    s.note(Fact::Event(format!("the {obj} was gone")));
    s.note(Fact::Event(format!("{n} looked everywhere")));
    if chance(rng, 50) {
        s.say(format!("\"Where is my {obj}?\" {n} cried."));
        s.note(Fact::Event(format!("{n} cried")));
    }
    s.new_paragraph();
    let spot = pick(rng, vocab::HIDING_SPOTS);
    s.say(format!(
        "then {his} friend {f} came to help, and they found it {spot}."
    ));
    s.note(Fact::Event(format!("{f} came to help")));
    if chance(rng, 50) {
        s.say(format!("{n} hugged {f} and said, \"Thank you!\""));
        s.note(Fact::Event(format!("{n} hugged {f}")));
    } else {
        s.say(format!(
            "{n} was {} again.",
            pick(rng, vocab::GOOD_FEELINGS)
        ));
    }
    s.note(Fact::did(n, format!("lost the {obj}")));
    s.note(Fact::did(f, format!("was {n}'s friend")));
    s.note(Fact::did(f, format!("helped {n} find the {obj}")));
    s.note(Fact::thing(format!("did {n} lose"), obj));
    s.note(Fact::Colour {
        owner: n,
        object: obj,
        colour: color,
    });
    s.note(Fact::place(format!("did {n} go to play"), place.name));
    s.note(Fact::place(format!("did they find the {obj}"), spot));
}

fn bad_weather(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let place = pick(rng, vocab::PLACES);
    let (n, he) = (h.name, h.he());
    let helper = pick(rng, vocab::HELPERS);

    let time = pick(rng, vocab::TIMES);
    let activity = pick(rng, vocab::ACTIVITIES);
    s.say(format!(
        "{time}, {n} wanted to go to {} to {activity}.",
        place.name
    ));
    let weather = pick(rng, vocab::BAD_WEATHER);
    s.say(format!("but {weather}."));
    s.say(format!(
        "{n} had to stay inside, and {he} felt {}.",
        pick(rng, vocab::BAD_FEELINGS)
    ));
    s.note(Fact::Event((*weather).to_string()));
    s.note(Fact::Event(format!("{n} had to stay inside")));
    if chance(rng, 50) {
        s.say(format!("\"I never get to have fun,\" {he} said."));
    }
    s.new_paragraph();
    let indoor = pick(rng, vocab::INDOOR_ACTIVITIES);
    s.say(format!("{helper} smiled and said, \"Let's {indoor}!\""));
    s.note(Fact::Event(format!("{helper} smiled")));
    s.say(format!(
        "they had so much fun that {n} forgot all about the weather."
    ));
    if chance(rng, 50) {
        s.say(format!(
            "later, the sun came out, and {n} went to {} after all.",
            place.name
        ));
        s.note(Fact::Event("the sun came out".to_string()));
    }
    s.note(Fact::did(n, format!("wanted to go to {}", place.name)));
    s.note(Fact::did(helper, "smiled".to_string()));
    s.note(Fact::thing(
        format!("did {n} want to do at {}", place.name),
        activity,
    ));
    s.note(Fact::thing(format!("did {helper} say to do"), indoor));
    s.note(Fact::place(format!("did {n} want to go"), place.name));
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
    // The rescue is said after the optional reassurance, so its sentence and
    // the event it records wait until then.
    let (rescue, rescued) = match rng.random_range(0..3) {
        0 => {
            s.say(format!(
                "it was {} {a}, and it was stuck in a bush.",
                article(a)
            ));
            s.note(Fact::Event("it was stuck".to_string()));
            (
                format!("{n} gently pulled the branches apart and set it free."),
                None,
            )
        }
        1 => {
            s.say(format!(
                "it was {} {a}, and it was very hungry.",
                article(a)
            ));
            s.note(Fact::Event("it was very hungry".to_string()));
            (
                format!("{n} gave it {}, and it ate every bit.", animal.food),
                Some(format!("{n} gave it {}", animal.food)),
            )
        }
        _ => {
            s.say(format!(
                "it was {} {a}, and it was lost and could not find its home.",
                article(a)
            ));
            s.note(Fact::Event("it was lost".to_string()));
            (
                format!("{n} carried it all the way back to {}.", animal.home),
                Some(format!("{n} carried it")),
            )
        }
    };
    if chance(rng, 50) {
        s.say(format!("\"Don't be scared, little {a},\" {he} said."));
    }
    s.say(rescue);
    if let Some(event) = rescued {
        s.note(Fact::Event(event));
    }
    s.new_paragraph();
    s.say(format!(
        "the {a} {} happily and {} around {him}.",
        animal.sound, animal.moved
    ));
    s.note(Fact::Event(format!("the {a} {}", animal.sound)));
    let feeling = pick(rng, vocab::GOOD_FEELINGS);
    s.say(format!("{n} felt {feeling}."));
    s.note(Fact::Event(format!("{n} felt {feeling}")));
    if chance(rng, 30) {
        s.say("it is good to help others.".to_string());
    }
    s.note(Fact::did(n, format!("helped the {a}")));
    s.note(Fact::thing(format!("animal did {n} help"), a));
    s.note(Fact::place(format!("was {n} walking"), place.name));
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
    let feeling = pick(rng, vocab::BAD_FEELINGS);
    s.say(format!("{f} looked {feeling} and walked away."));
    s.note(Fact::Event(format!("{f} asked")));
    s.note(Fact::Event(format!("{n} held it tight")));
    s.note(Fact::Event(format!("{f} looked {feeling}")));
    s.new_paragraph();
    s.say(format!(
        "soon {n} felt lonely, because playing alone was not fun."
    ));
    s.note(Fact::Event(format!("{n} felt lonely")));
    s.say(format!(
        "{} ran to {f} and said, \"Let's play with it together!\"",
        h.he()
    ));
    if chance(rng, 60) {
        s.say("they took turns all afternoon and laughed a lot.".to_string());
        s.note(Fact::Event("they took turns".to_string()));
    }
    if chance(rng, 40) {
        s.say(pick(rng, vocab::MORALS).to_string());
    }
    s.note(Fact::did(n, format!("had a new {obj}")));
    s.note(Fact::did(f, format!("was {n}'s friend")));
    s.note(Fact::did(f, format!("asked to play with the {obj}")));
    s.note(Fact::thing(format!("did {f} want to play with"), obj));
    s.note(Fact::Colour {
        owner: n,
        object: obj,
        colour: color,
    });
}

fn try_again(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let goal = pick(rng, vocab::CHALLENGES);
    let helper = pick(rng, vocab::HELPERS);
    let (n, he) = (h.name, h.he());

    s.say(format!("{n} really wanted to learn to {goal}."));
    s.say(format!("{he} tried, but it was hard, and {he} fell down."));
    let sad = pick(rng, vocab::BAD_FEELINGS);
    s.say(format!("{n} felt {sad} and wanted to give up."));
    s.note(Fact::Event(format!("{n} felt {sad}")));
    s.new_paragraph();
    s.say(format!(
        "{helper} said, \"Don't give up. Try one more time!\""
    ));
    s.note(Fact::Event(format!("{helper} said")));
    if chance(rng, 50) {
        s.say(format!("so {n} tried again, and again, and again."));
        s.note(Fact::Event(format!("{n} tried again")));
    }
    s.say(format!(
        "at last, {he} could {goal} all by {}!",
        h.himself()
    ));
    let glad = pick(rng, vocab::GOOD_FEELINGS);
    s.say(format!("{n} felt so {glad}."));
    s.note(Fact::Event(format!("{n} felt so {glad}")));
    if chance(rng, 30) {
        s.say("if you keep trying, you can do it.".to_string());
    }
    s.note(Fact::did(n, format!("wanted to learn to {goal}")));
    s.note(Fact::did(helper, format!("told {n} not to give up")));
    s.note(Fact::thing(format!("did {n} want to learn to do"), goal));
}

fn animal_friend(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = pet(rng);
    let species = h.species.map_or("", |a| a.name);
    let home = h.species.map_or("a little house", |a| a.home);
    let other = other_animal(rng, species);
    let place = pick(rng, vocab::PLACES);
    let (n, he, o) = (h.name, h.he(), other.name);

    s.say(intro(rng, &h));
    s.say(format!("{n} lived in {home} {}.", at(place)));
    s.say(format!("{n} had no friends, and {he} felt lonely."));
    s.note(Fact::Event(format!("{n} had no friends")));
    s.new_paragraph();
    s.say(format!(
        "{}, {n} saw {} {o} playing {}.",
        pick(rng, vocab::TIMES),
        article(o),
        at(place)
    ));
    s.note(Fact::Event(format!("{n} saw {} {o}", article(o))));
    s.say(format!("{n} asked, \"Will you be my friend?\""));
    s.note(Fact::Event(format!("{n} asked")));
    s.say(format!("the {o} {} and said, \"Yes!\"", other.sound));
    s.note(Fact::Event(format!("the {o} {}", other.sound)));
    if chance(rng, 60) {
        s.say("from that day on, they played together every day.".to_string());
        s.note(Fact::Event("they played together".to_string()));
    }
    if chance(rng, 30) {
        s.say("friends make everything better.".to_string());
    }
    s.note(Fact::did(n, format!("asked the {o} to be a friend")));
    s.note(Fact::thing(format!("kind of animal was {n}"), species));
    s.note(Fact::thing(format!("animal did {n} see playing"), o));
    s.note(Fact::place(format!("did {n} see the {o}"), place.name));
}

fn picnic(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let helper = pick(rng, vocab::HELPERS);
    let place = pick(rng, vocab::PLACES);
    let animal = pick(rng, vocab::ANIMALS);
    let food = pick(rng, vocab::FOODS);
    let (n, he, a) = (h.name, h.he(), animal.name);

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
    s.note(Fact::Event(format!("they brought {food}")));
    s.new_paragraph();
    s.say(format!("then {} {a} came and ate the {food}!", article(a)));
    s.note(Fact::Event(format!("{} {a} came", article(a))));
    s.say(format!("{n} was surprised, but then {he} laughed."));
    s.note(Fact::Event(format!("{n} was surprised")));
    if chance(rng, 50) {
        s.say(format!("\"That {a} was very hungry,\" said {helper}."));
    }
    s.say("they shared the rest of the food and had a happy day.".to_string());
    s.note(Fact::Event("they shared the rest".to_string()));
    s.note(Fact::did(
        helper,
        format!("went to {} with {n}", place.name),
    ));
    s.note(Fact::did(n, "was surprised".to_string()));
    s.note(Fact::thing(format!("animal ate the {food}"), a));
    s.note(Fact::thing(
        "did they bring for the picnic".to_string(),
        food,
    ));
    s.note(Fact::place(format!("did {n} and {helper} go"), place.name));
}

fn best_friends(rng: &mut ChaCha8Rng, s: &mut Story) {
    let h = child(rng, "");
    let friend = child(rng, h.name);
    let place = pick(rng, vocab::PLACES);
    let (n, f) = (h.name, friend.name);

    s.say(format!("{n} and {f} were best friends."));
    let activity = pick(rng, vocab::ACTIVITIES);
    s.say(format!(
        "every day, they went to {} to {activity}.",
        place.name
    ));
    s.say(format!(
        "{}, and they had a lot of fun.",
        pick(rng, vocab::WEATHER)
    ));
    if chance(rng, 50) {
        s.say(format!("\"This is the best day ever!\" said {n}."));
    }
    s.note(Fact::did(f, format!("was {n}'s best friend")));
    s.note(Fact::did(n, format!("was {f}'s best friend")));
    s.note(Fact::thing(
        format!("did {n} and {f} do every day"),
        activity,
    ));
    s.note(Fact::place(
        format!("did {n} and {f} go every day"),
        place.name,
    ));
}

#[cfg(test)]
mod tests;
