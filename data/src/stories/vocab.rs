//! Word lists for the story grammar.
//!
//! Each entry carries the few grammatical facts the templates need (gender,
//! the preposition a place takes, the sound an animal makes) so the grammar
//! never has to guess and the stories stay grammatical.

/// Gender picks the pronouns, which stay fixed within a story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gender {
    Girl,
    Boy,
}

impl Gender {
    pub fn subject(self) -> &'static str {
        match self {
            Gender::Girl => "she",
            Gender::Boy => "he",
        }
    }
    pub fn object(self) -> &'static str {
        match self {
            Gender::Girl => "her",
            Gender::Boy => "him",
        }
    }
    pub fn possessive(self) -> &'static str {
        match self {
            Gender::Girl => "her",
            Gender::Boy => "his",
        }
    }
    pub fn reflexive(self) -> &'static str {
        match self {
            Gender::Girl => "herself",
            Gender::Boy => "himself",
        }
    }
    pub fn child(self) -> &'static str {
        match self {
            Gender::Girl => "girl",
            Gender::Boy => "boy",
        }
    }
}

pub const GIRL_NAMES: &[&str] = &[
    "Lily", "Mia", "Emma", "Sara", "Anna", "Zoe", "Lucy", "Ella", "Amy", "Rosa", "Nina", "Kate",
    "Ruby", "Ivy", "Maya", "Tess", "Sophie", "Hannah", "Grace", "Chloe", "Alice", "Leah", "Jenny",
    "Molly",
];

pub const BOY_NAMES: &[&str] = &[
    "Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Jake", "Noah", "Owen", "Eli",
    "Luke", "Omar", "Ravi", "Hugo", "Oscar", "Henry", "Danny", "Peter", "Adam", "Kevin", "Billy",
    "Theo",
];

/// Names for animal heroes; the gender is drawn separately.
pub const PET_NAMES: &[&str] = &[
    "Spot", "Fluffy", "Pip", "Coco", "Sunny", "Dot", "Bubbles", "Whiskers", "Hoppy", "Benny",
    "Daisy", "Pepper", "Button", "Ziggy", "Rusty", "Snowy", "Biscuit", "Peanut",
];

pub struct Animal {
    pub name: &'static str,
    /// Past tense of the animal's sound, e.g. "barked".
    pub sound: &'static str,
    /// How it moves, past tense, e.g. "ran".
    pub moved: &'static str,
    /// What it likes to eat.
    pub food: &'static str,
    /// Where it lives, with article, e.g. "a little house".
    pub home: &'static str,
}

#[rustfmt::skip]
pub const ANIMALS: &[Animal] = &[
    Animal { name: "dog", sound: "barked", moved: "ran", food: "a bone", home: "a little house" },
    Animal { name: "cat", sound: "meowed", moved: "jumped", food: "some milk", home: "a soft basket" },
    Animal { name: "bird", sound: "chirped", moved: "flew", food: "some seeds", home: "a nest" },
    Animal { name: "rabbit", sound: "squeaked", moved: "hopped", food: "a carrot", home: "a hole in the ground" },
    Animal { name: "duck", sound: "quacked", moved: "waddled", food: "some bread", home: "a pond" },
    Animal { name: "frog", sound: "croaked", moved: "hopped", food: "a fly", home: "a pond" },
    Animal { name: "fox", sound: "yipped", moved: "ran", food: "some berries", home: "a den" },
    Animal { name: "bear", sound: "growled", moved: "walked", food: "some honey", home: "a cave" },
    Animal { name: "mouse", sound: "squeaked", moved: "ran", food: "some cheese", home: "a tiny hole" },
    Animal { name: "owl", sound: "hooted", moved: "flew", food: "a bug", home: "a tall tree" },
    Animal { name: "turtle", sound: "hummed", moved: "crawled", food: "a leaf", home: "a shell" },
    Animal { name: "horse", sound: "neighed", moved: "trotted", food: "an apple", home: "a barn" },
    Animal { name: "pig", sound: "oinked", moved: "trotted", food: "some corn", home: "a muddy pen" },
    Animal { name: "lamb", sound: "baaed", moved: "skipped", food: "some grass", home: "a green field" },
    Animal { name: "squirrel", sound: "chattered", moved: "climbed", food: "a nut", home: "a hole in a tree" },
    Animal { name: "puppy", sound: "yapped", moved: "ran", food: "a treat", home: "a warm bed" },
    Animal { name: "kitten", sound: "mewed", moved: "pounced", food: "a fish", home: "a box" },
    Animal { name: "goat", sound: "bleated", moved: "climbed", food: "some hay", home: "a little shed" },
];

pub struct Place {
    /// With article, e.g. "the park".
    pub name: &'static str,
    /// The preposition that goes with it: "in the park", "at the beach".
    pub prep: &'static str,
    /// Something found there, with article.
    pub feature: &'static str,
}

#[rustfmt::skip]
pub const PLACES: &[Place] = &[
    Place { name: "the park", prep: "in", feature: "a big slide" },
    Place { name: "the garden", prep: "in", feature: "a bed of red flowers" },
    Place { name: "the forest", prep: "in", feature: "a tall old tree" },
    Place { name: "the beach", prep: "at", feature: "a pile of shells" },
    Place { name: "the farm", prep: "on", feature: "a red barn" },
    Place { name: "the lake", prep: "by", feature: "a little boat" },
    Place { name: "the hill", prep: "on", feature: "a big rock" },
    Place { name: "the playground", prep: "at", feature: "a swing" },
    Place { name: "the river", prep: "by", feature: "a wooden bridge" },
    Place { name: "the meadow", prep: "in", feature: "a patch of daisies" },
    Place { name: "the zoo", prep: "at", feature: "a tall giraffe" },
    Place { name: "the backyard", prep: "in", feature: "a sandbox" },
    Place { name: "the woods", prep: "in", feature: "a sleepy log" },
    Place { name: "the pond", prep: "by", feature: "a lily pad" },
];

/// Things a child can own, lose, share or find; bare nouns (the grammar adds
/// colours and articles).
pub const OBJECTS: &[&str] = &[
    "ball",
    "kite",
    "hat",
    "teddy bear",
    "toy car",
    "book",
    "balloon",
    "drum",
    "doll",
    "boat",
    "truck",
    "scarf",
    "bucket",
    "robot",
    "whistle",
    "umbrella",
    "blanket",
    "crayon",
    "puzzle",
    "train",
    "shovel",
    "yo-yo",
    "flag",
    "bell",
];

pub const COLORS: &[&str] = &[
    "red", "blue", "green", "yellow", "pink", "purple", "orange", "shiny", "little", "big", "soft",
    "striped",
];

/// The [`COLORS`] that name a colour ("big" and "striped" do not), which a
/// "what colour" question may ask about.
pub const HUES: &[&str] = &["red", "blue", "green", "yellow", "pink", "purple", "orange"];

/// Where a lost thing turns up.
pub const HIDING_SPOTS: &[&str] = &[
    "under a big tree",
    "behind a bush",
    "next to the fence",
    "in a pile of leaves",
    "under the bed",
    "inside an old box",
    "on top of a rock",
    "near the gate",
    "in the tall grass",
    "under a bench",
];

pub const GOOD_FEELINGS: &[&str] = &[
    "happy", "glad", "excited", "proud", "cheerful", "joyful", "thankful",
];

pub const BAD_FEELINGS: &[&str] = &[
    "sad", "scared", "upset", "worried", "lonely", "grumpy", "angry",
];

/// Sentences that set the scene.
pub const WEATHER: &[&str] = &[
    "The sun was shining",
    "The sky was blue and clear",
    "It was a warm day",
    "A soft wind was blowing",
    "There were fluffy white clouds in the sky",
    "It was a cold and windy day",
    "The grass was wet with rain",
    "Snow covered the ground",
];

/// A storm or the like that stops outdoor play.
pub const BAD_WEATHER: &[&str] = &[
    "it started to rain",
    "dark clouds filled the sky",
    "a big storm came",
    "the wind blew very hard",
    "thunder boomed in the sky",
    "it began to snow hard",
];

/// Activities, as verb phrases.
pub const ACTIVITIES: &[&str] = &[
    "play tag",
    "build a sandcastle",
    "jump in puddles",
    "draw pictures",
    "sing songs",
    "read a book",
    "climb a tree",
    "ride a bike",
    "pick flowers",
    "look for bugs",
    "play hide and seek",
    "throw a ball",
    "make a tower of blocks",
    "dance in a circle",
    "run races",
    "splash in the water",
];

/// Indoor things to do when the weather is bad.
pub const INDOOR_ACTIVITIES: &[&str] = &[
    "bake cookies",
    "build a fort with pillows",
    "paint a picture",
    "play a board game",
    "read a story",
    "make a puppet show",
    "drink hot cocoa",
];

/// Hard things to learn.
pub const CHALLENGES: &[&str] = &[
    "ride a bike",
    "swim",
    "tie shoes",
    "climb the big hill",
    "jump rope",
    "whistle",
    "catch a ball",
    "skate",
];

/// Grown-ups and family who give advice.
pub const HELPERS: &[&str] = &[
    "Mom",
    "Dad",
    "Grandma",
    "Grandpa",
    "the teacher",
    "Nana",
    "Aunt May",
    "Uncle Joe",
];

pub const FOODS: &[&str] = &[
    "apples",
    "cookies",
    "sandwiches",
    "cake",
    "berries",
    "soup",
    "pancakes",
    "cheese",
    "bread",
    "muffins",
];

/// How a story opens, before "there was ...".
pub const INTROS: &[&str] = &[
    "Once upon a time",
    "Long ago",
    "In a small town",
    "In a little house by the woods",
    "Not long ago",
    "In a quiet village",
];

/// When the story's event happens.
pub const TIMES: &[&str] = &[
    "One day",
    "One morning",
    "One sunny afternoon",
    "One evening",
    "After breakfast",
    "On a Saturday",
    "Last summer",
];

pub const MORALS: &[&str] = &[
    "Sharing makes everyone happy.",
    "It is good to help others.",
    "Friends make everything better.",
    "If you keep trying, you can do it.",
    "Being kind is the best thing of all.",
    "It is okay to ask for help.",
];
