//! Chat templates: how each role's turn is written around its content, and
//! which roles are trained; plus the `[data.instruct]` config section.
//!
//! A turn renders as `prefix + content + suffix` of its role. Presets:
//! - `"plain"` (default): an `Ask` line then the question, an `Answer` line
//!   then the answer, each turn ending in a newline; system text as a bare
//!   line. It uses only common letters and newlines: the built-in stories
//!   have no `Q`, `U`, `:` or `<`, and `-` only in "yo-yo", so "Question: " would
//!   not encode with a char tokenizer trained on them (a test checks the
//!   preset against a small `generate_corpus`).
//! - `"chatml"`: `<|im_start|>role\n ... <|im_end|>\n`. Kiln's BPE has no
//!   special tokens for these markers, so they are ordinary (byte-level)
//!   text; a char tokenizer only encodes them if its corpus has `<`, `|`, `>`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::InstructError;
use super::parse::{Example, Turn};

/// How one role's turns are written: `prefix + content + suffix`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFormat {
    #[serde(default)]
    pub prefix: String,
    #[serde(default)]
    pub suffix: String,
}

impl RoleFormat {
    pub fn new(prefix: &str, suffix: &str) -> RoleFormat {
        RoleFormat {
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
        }
    }
}

/// What to do with an example longer than a row (`seq_len + 1` tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overflow {
    /// Keep its first `seq_len + 1` tokens.
    Truncate,
    /// Leave it out (counted in the report).
    #[default]
    Drop,
}

/// How examples are laid out in rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One example per row, right-padded.
    #[default]
    Pad,
    /// Several examples per row: rejected by [`InstructConfig::validate`]
    /// until the model can keep examples from attending to each other.
    Pack,
}

/// The `[data.instruct]` section of a run config.
///
/// ```toml
/// [data.instruct]
/// template = "plain"            # or "chatml"; absent with roles: only those roles
/// train_roles = ["assistant"]
/// overflow = "drop"             # or "truncate"
/// layout = "pad"
/// [data.instruct.roles.tool]    # adds to (or overrides) the preset
/// prefix = "Tool: "
/// suffix = "\n"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructConfig {
    /// A preset name. Absent: `"plain"` when `roles` is empty, otherwise the
    /// template is exactly `roles`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Explicit role formats, laid over the preset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleFormat>,
    /// Roles whose content and suffix take loss.
    #[serde(default = "default_train_roles")]
    pub train_roles: Vec<String>,
    #[serde(default)]
    pub overflow: Overflow,
    #[serde(default)]
    pub layout: Layout,
}

fn default_train_roles() -> Vec<String> {
    vec!["assistant".to_string()]
}

impl Default for InstructConfig {
    fn default() -> Self {
        InstructConfig {
            template: None,
            roles: BTreeMap::new(),
            train_roles: default_train_roles(),
            overflow: Overflow::default(),
            layout: Layout::default(),
        }
    }
}

impl InstructConfig {
    /// Checks the section; errors name the field and the fix.
    pub fn validate(&self) -> Result<(), InstructError> {
        self.template().map(|_| ())
    }

    /// The resolved template (preset, then explicit roles over it).
    pub fn template(&self) -> Result<ChatTemplate, InstructError> {
        if self.layout == Layout::Pack {
            return Err(InstructError::PackUnsupported);
        }
        let mut roles = match (&self.template, self.roles.is_empty()) {
            (Some(name), _) => preset_roles(name)?,
            (None, true) => preset_roles("plain")?,
            (None, false) => BTreeMap::new(),
        };
        roles.extend(self.roles.clone());
        ChatTemplate::new(roles, self.train_roles.iter().cloned().collect())
    }
}

fn preset_roles(name: &str) -> Result<BTreeMap<String, RoleFormat>, InstructError> {
    let roles: Vec<(&str, RoleFormat)> = match name {
        "plain" => vec![
            ("system", RoleFormat::new("", "\n")),
            ("user", RoleFormat::new("Ask\n", "\n")),
            ("assistant", RoleFormat::new("Answer\n", "\n")),
        ],
        "chatml" => ["system", "user", "assistant"]
            .into_iter()
            .map(|r| {
                (
                    r,
                    RoleFormat::new(&format!("<|im_start|>{r}\n"), "<|im_end|>\n"),
                )
            })
            .collect(),
        _ => {
            return Err(InstructError::UnknownPreset {
                name: name.to_string(),
            })
        }
    };
    Ok(roles.into_iter().map(|(r, f)| (r.to_string(), f)).collect())
}

/// One rendered piece of an example and whether its tokens take loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Piece<'a> {
    pub(super) text: &'a str,
    pub(super) trained: bool,
}

/// Per-role formats plus the set of trained roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    roles: BTreeMap<String, RoleFormat>,
    train_roles: BTreeSet<String>,
}

impl ChatTemplate {
    /// A template from its parts: at least one trained role, each with a format.
    pub fn new(
        roles: BTreeMap<String, RoleFormat>,
        train_roles: BTreeSet<String>,
    ) -> Result<ChatTemplate, InstructError> {
        if train_roles.is_empty() {
            return Err(InstructError::BadConfig {
                field: "data.instruct.train_roles",
                message: "is empty, so nothing would be trained: use [\"assistant\"]".into(),
            });
        }
        let template = ChatTemplate { roles, train_roles };
        for role in &template.train_roles {
            if !template.roles.contains_key(role) {
                return Err(InstructError::BadConfig {
                    field: "data.instruct.train_roles",
                    message: format!(
                        "\"{role}\" is not in the template (it has {}): add \
                         [data.instruct.roles.{role}] or fix the name",
                        template.known_roles()
                    ),
                });
            }
        }
        Ok(template)
    }

    /// A preset (`"plain"`, `"chatml"`) training only `"assistant"`.
    pub fn preset(name: &str) -> Result<ChatTemplate, InstructError> {
        ChatTemplate::new(
            preset_roles(name)?,
            BTreeSet::from(["assistant".to_string()]),
        )
    }

    /// The format of `role`; an unknown role is an error naming the fix.
    pub fn role(&self, role: &str) -> Result<&RoleFormat, InstructError> {
        self.roles
            .get(role)
            .ok_or_else(|| InstructError::UnknownRole {
                role: role.to_string(),
                known: self.known_roles(),
            })
    }

    pub fn is_trained(&self, role: &str) -> bool {
        self.train_roles.contains(role)
    }

    fn known_roles(&self) -> String {
        if self.roles.is_empty() {
            return "no roles".into();
        }
        let names: Vec<String> = self.roles.keys().map(|r| format!("\"{r}\"")).collect();
        format!("roles {}", names.join(", "))
    }

    /// The example as `(prefix, content, suffix)` pieces per turn; content and
    /// suffix of a trained role are trained (the suffix is how the model
    /// learns to end its turn), prefixes never are. Empty pieces are left out.
    pub(super) fn pieces<'a>(
        &'a self,
        example: &'a Example,
    ) -> Result<Vec<Piece<'a>>, InstructError> {
        let mut pieces = Vec::with_capacity(example.turns.len() * 3);
        for turn in &example.turns {
            let format = self.role(&turn.role)?;
            let trained = self.is_trained(&turn.role);
            for (text, trained) in [
                (format.prefix.as_str(), false),
                (turn.content.as_str(), trained),
                (format.suffix.as_str(), trained),
            ] {
                if !text.is_empty() {
                    pieces.push(Piece { text, trained });
                }
            }
        }
        Ok(pieces)
    }

    /// The example as one string (for inspection; encoding uses the pieces).
    pub fn render(&self, example: &Example) -> Result<String, InstructError> {
        Ok(self.pieces(example)?.iter().map(|p| p.text).collect())
    }

    /// `turns` rendered, then the assistant's prefix: the text a model
    /// continues to answer at generation time.
    pub fn generation_prompt(&self, turns: &[Turn]) -> Result<String, InstructError> {
        let example = Example {
            turns: turns.to_vec(),
            origin: None,
        };
        let mut text = self.render(&example)?;
        text.push_str(&self.role("assistant")?.prefix);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> Result<InstructConfig, toml::de::Error> {
        toml::from_str(toml_text)
    }

    #[test]
    fn defaults_are_plain_assistant_drop_pad() {
        let c = section("").unwrap();
        assert_eq!(c, InstructConfig::default());
        assert_eq!(c.overflow, Overflow::Drop);
        assert_eq!(c.layout, Layout::Pad);
        assert_eq!(
            c.template().unwrap(),
            ChatTemplate::preset("plain").unwrap()
        );
    }

    #[test]
    fn plain_renders_question_answer() {
        let t = ChatTemplate::preset("plain").unwrap();
        let ex = Example {
            turns: vec![
                Turn::new("system", "Be kind."),
                Turn::new("user", "Who is Tom?"),
                Turn::new("assistant", "Tom is a boy."),
            ],
            origin: None,
        };
        assert_eq!(
            t.render(&ex).unwrap(),
            "Be kind.\nAsk\nWho is Tom?\nAnswer\nTom is a boy.\n"
        );
        assert_eq!(
            t.generation_prompt(&ex.turns[..2]).unwrap(),
            "Be kind.\nAsk\nWho is Tom?\nAnswer\n"
        );
        let trained: String = t
            .pieces(&ex)
            .unwrap()
            .iter()
            .filter(|p| p.trained)
            .map(|p| p.text)
            .collect();
        assert_eq!(trained, "Tom is a boy.\n");
    }

    #[test]
    fn chatml_renders_markers() {
        let t = ChatTemplate::preset("chatml").unwrap();
        let ex = Example::prompt_response("Hi", "Hello");
        assert_eq!(
            t.render(&ex).unwrap(),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        );
    }

    #[test]
    fn explicit_roles_and_overrides() {
        let c = section(
            "template = \"plain\"\ntrain_roles = [\"assistant\", \"tool\"]\n\
             [roles.tool]\nprefix = \"Tool: \"\nsuffix = \"\\n\"\n\
             [roles.user]\nprefix = \"Q \"\n",
        )
        .unwrap();
        let t = c.template().unwrap();
        assert_eq!(t.role("tool").unwrap(), &RoleFormat::new("Tool: ", "\n"));
        assert_eq!(t.role("user").unwrap(), &RoleFormat::new("Q ", ""));
        assert!(t.is_trained("tool") && !t.is_trained("user"));
        // Roles alone: exactly those roles, no preset underneath.
        let c = section("[roles.assistant]\nprefix = \"A: \"\n").unwrap();
        let e = c.template().unwrap().role("user").unwrap_err().to_string();
        assert!(
            e.contains("chat role \"user\" is not in the template"),
            "{e}"
        );
    }

    #[test]
    fn unknown_role_names_role_and_fix() {
        let t = ChatTemplate::preset("plain").unwrap();
        let ex = Example {
            turns: vec![Turn::new("tool", "x"), Turn::new("assistant", "y")],
            origin: None,
        };
        let e = t.render(&ex).unwrap_err().to_string();
        assert!(
            e.contains("chat role \"tool\" is not in the template")
                && e.contains("\"assistant\", \"system\", \"user\"")
                && e.contains("add [data.instruct.roles.tool]"),
            "{e}"
        );
    }

    #[test]
    fn config_errors() {
        let e = section("layout = \"pack\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("attend to each other"), "{e}");
        let e = section("template = \"llama\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("\"llama\" is not a preset"), "{e}");
        let e = section("train_roles = []").unwrap().validate().unwrap_err();
        assert!(e.to_string().contains("data.instruct.train_roles"), "{e}");
        let e = section("train_roles = [\"bot\"]")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            e.to_string().contains("\"bot\" is not in the template"),
            "{e}"
        );
        assert!(section("overflow = \"wrap\"").is_err());
        assert!(section("layout = \"ragged\"").is_err());
        assert!(section("templat = \"plain\"").is_err());
        assert!(section("[roles.user]\nprefx = \"Q\"\n").is_err());
    }

    #[test]
    fn plain_preset_uses_only_story_characters() {
        // The point of "plain": a char tokenizer trained on the built-in
        // stories can encode it.
        let corpus = crate::generate_corpus(0, 10);
        let chars: BTreeSet<char> = corpus.iter().flat_map(|d| d.chars()).collect();
        let t = ChatTemplate::preset("plain").unwrap();
        for f in t.roles.values() {
            for c in f.prefix.chars().chain(f.suffix.chars()) {
                assert!(chars.contains(&c), "{c:?} is not in the stories: {chars:?}");
            }
        }
    }
}
