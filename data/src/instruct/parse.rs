//! Reading instruction examples: JSONL (plain, `.gz`, `.zst`) in three
//! layouts, detected per line, and Parquet with the same column names.
//!
//! - `{"prompt": ..., "response": ...}`
//! - Alpaca: `{"instruction": ..., "input": ... (optional, may be ""), "output": ...}`;
//!   the user turn is the instruction, plus `"\n\n"` and the input when the
//!   input is not empty (the Alpaca convention).
//! - chat: `{"messages": [{"role": ..., "content": ...}, ...]}`; every role is
//!   kept (system included); whether a role is known is the template's call.
//!
//! Other fields (ids, metadata) are ignored. Every example needs something to
//! learn: a response, an output or an assistant message.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::InstructError;
use crate::corpus::json_kind;
use crate::sources::{detect_format, Compression, SourceFormat};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `"system"`, `"user"`, `"assistant"`, or any role the template knows.
    pub role: String,
    pub content: String,
}

impl Turn {
    pub fn new(role: &str, content: &str) -> Turn {
        Turn {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// Where an example came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: PathBuf,
    /// 1-based line (JSONL) or row (Parquet).
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

/// One training example: its turns in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub turns: Vec<Turn>,
    /// `None` for examples built in code.
    pub origin: Option<Origin>,
}

impl Example {
    /// A user prompt and the assistant's response, built in code.
    pub fn prompt_response(prompt: &str, response: &str) -> Example {
        Example {
            turns: vec![Turn::new("user", prompt), Turn::new("assistant", response)],
            origin: None,
        }
    }
}

/// All examples of a file: `.jsonl`/`.json`/`.ndjson` (optionally `.gz` or
/// `.zst`) or `.parquet`. A file without examples is an error.
pub fn read_examples(path: &Path) -> Result<Vec<Example>, InstructError> {
    let examples = match detect_format(path) {
        Some((SourceFormat::Jsonl, compression)) => read_jsonl(path, compression)?,
        Some((SourceFormat::Parquet, _)) => read_parquet(path)?,
        _ => {
            return Err(InstructError::UnknownFormat {
                path: path.to_path_buf(),
            })
        }
    };
    if examples.is_empty() {
        return Err(InstructError::NoExamples {
            path: path.to_path_buf(),
        });
    }
    Ok(examples)
}

fn io_error(path: &Path, source: std::io::Error) -> InstructError {
    if source.kind() == std::io::ErrorKind::NotFound {
        InstructError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        InstructError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The same decoders as [`crate::sources`] (multi-member gzip, streaming
/// zstd), read line by line so memory holds one line plus the examples.
fn read_jsonl(path: &Path, compression: Compression) -> Result<Vec<Example>, InstructError> {
    let raw = File::open(path).map_err(|e| io_error(path, e))?;
    let decoded: Box<dyn Read> =
        match compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw).map_err(|e| {
                InstructError::Corrupt {
                    path: path.to_path_buf(),
                    line: 1,
                    reason: e.to_string(),
                }
            })?),
        };
    let mut reader = BufReader::with_capacity(1 << 16, decoded);
    let mut examples = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| InstructError::Corrupt {
                path: path.to_path_buf(),
                line: line + 1,
                reason: e.to_string(),
            })?;
        if n == 0 {
            break;
        }
        line += 1;
        if let Some(ex) = parse_line(&buf, path, line)? {
            examples.push(ex);
        }
    }
    Ok(examples)
}

/// Examples of JSONL text already in memory; `path` only labels errors.
pub fn parse_jsonl_str(path: &Path, text: &str) -> Result<Vec<Example>, InstructError> {
    let mut examples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(ex) = parse_line(line.as_bytes(), path, i + 1)? {
            examples.push(ex);
        }
    }
    Ok(examples)
}

/// One line; `None` for a blank line.
fn parse_line(bytes: &[u8], path: &Path, line: usize) -> Result<Option<Example>, InstructError> {
    // Editors on Windows like to start files with a byte-order mark.
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let at = At { path, line };
    let value: Value = serde_json::from_slice(bytes).map_err(|e| InstructError::BadJson {
        path: path.to_path_buf(),
        line,
        reason: e.to_string(),
    })?;
    let Value::Object(object) = value else {
        return Err(InstructError::BadJson {
            path: path.to_path_buf(),
            line,
            reason: format!("found {}, not an object", json_kind(&value)),
        });
    };
    let turns = if object.contains_key("messages") {
        chat_turns(&object, &at)?
    } else if object.contains_key("instruction") || object.contains_key("output") {
        alpaca_turns(&object, &at)?
    } else if object.contains_key("prompt") || object.contains_key("response") {
        prompt_response_turns(&object, &at)?
    } else {
        return Err(InstructError::UnknownLayout {
            path: path.to_path_buf(),
            line,
            fields: field_list(&object),
        });
    };
    Ok(Some(Example {
        turns,
        origin: Some(Origin {
            path: path.to_path_buf(),
            line,
        }),
    }))
}

/// Where a field is, for the errors of the layout parsers.
pub(super) struct At<'a> {
    pub(super) path: &'a Path,
    pub(super) line: usize,
}

impl At<'_> {
    fn missing(&self, layout: &'static str, field: &str) -> InstructError {
        InstructError::MissingField {
            path: self.path.to_path_buf(),
            line: self.line,
            layout,
            field: field.to_string(),
        }
    }

    fn no_response(&self) -> InstructError {
        InstructError::NoResponse {
            path: self.path.to_path_buf(),
            line: self.line,
        }
    }

    fn bad_messages(&self, reason: String) -> InstructError {
        InstructError::BadMessages {
            path: self.path.to_path_buf(),
            line: self.line,
            reason,
        }
    }

    /// `value` as non-empty text; `what` names it in the error.
    pub(super) fn text(&self, value: &Value, what: &str) -> Result<String, InstructError> {
        match value {
            Value::String(s) => self.non_empty(s, what),
            other => Err(InstructError::NotString {
                path: self.path.to_path_buf(),
                line: self.line,
                what: what.to_string(),
                found: json_kind(other),
            }),
        }
    }

    pub(super) fn non_empty(&self, s: &str, what: &str) -> Result<String, InstructError> {
        if s.trim().is_empty() {
            return Err(InstructError::EmptyContent {
                path: self.path.to_path_buf(),
                line: self.line,
                what: what.to_string(),
            });
        }
        Ok(s.to_string())
    }
}

fn field_list(object: &Map<String, Value>) -> String {
    if object.is_empty() {
        return "none".into();
    }
    object
        .keys()
        .map(|k| format!("\"{k}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn prompt_response_turns(
    object: &Map<String, Value>,
    at: &At<'_>,
) -> Result<Vec<Turn>, InstructError> {
    let prompt = object
        .get("prompt")
        .ok_or_else(|| at.missing("prompt/response", "prompt"))?;
    let response = object.get("response").ok_or_else(|| at.no_response())?;
    Ok(vec![
        Turn {
            role: "user".into(),
            content: at.text(prompt, "field \"prompt\"")?,
        },
        Turn {
            role: "assistant".into(),
            content: at.text(response, "field \"response\"")?,
        },
    ])
}

/// The Alpaca user turn: the instruction, then `"\n\n"` and the input when
/// there is one (Stanford Alpaca's prompt joins them the same way).
pub(super) fn alpaca_user(instruction: String, input: Option<&str>) -> String {
    match input {
        Some(input) if !input.is_empty() => format!("{instruction}\n\n{input}"),
        _ => instruction,
    }
}

fn alpaca_turns(object: &Map<String, Value>, at: &At<'_>) -> Result<Vec<Turn>, InstructError> {
    let instruction = object
        .get("instruction")
        .ok_or_else(|| at.missing("Alpaca", "instruction"))?;
    let instruction = at.text(instruction, "field \"instruction\"")?;
    // "input" is optional and often "" (or null in some exports).
    let input = match object.get("input") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(InstructError::NotString {
                path: at.path.to_path_buf(),
                line: at.line,
                what: "field \"input\"".into(),
                found: json_kind(other),
            })
        }
    };
    let output = object.get("output").ok_or_else(|| at.no_response())?;
    Ok(vec![
        Turn {
            role: "user".into(),
            content: alpaca_user(instruction, input),
        },
        Turn {
            role: "assistant".into(),
            content: at.text(output, "field \"output\"")?,
        },
    ])
}

fn chat_turns(object: &Map<String, Value>, at: &At<'_>) -> Result<Vec<Turn>, InstructError> {
    let Some(Value::Array(messages)) = object.get("messages") else {
        let found = object.get("messages").map(json_kind).unwrap_or("missing");
        return Err(at.bad_messages(format!(
            "\"messages\" is {found}: it must be an array of {{\"role\", \"content\"}} objects"
        )));
    };
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let Value::Object(m) = message else {
            return Err(at.bad_messages(format!(
                "messages[{i}] is {}: each message must be a {{\"role\", \"content\"}} object",
                json_kind(message)
            )));
        };
        let (Some(role), Some(content)) = (m.get("role"), m.get("content")) else {
            return Err(at.bad_messages(format!(
                "messages[{i}] needs both \"role\" and \"content\" (it has {})",
                field_list(m)
            )));
        };
        turns.push(Turn {
            role: at.text(role, &format!("messages[{i}].role"))?,
            content: at.text(content, &format!("messages[{i}].content"))?,
        });
    }
    if !turns.iter().any(|t| t.role == "assistant") {
        return Err(at.no_response());
    }
    Ok(turns)
}

/// Parquet with string columns `prompt`/`response` or Alpaca's
/// `instruction`/`input` (optional)/`output`; chat `messages` (a list of
/// structs) is left to JSONL. Errors name the row as the "line".
fn read_parquet(path: &Path) -> Result<Vec<Example>, InstructError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    let raw = File::open(path).map_err(|e| io_error(path, e))?;
    let corrupt = |line: usize, reason: String| InstructError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(raw).map_err(|e| corrupt(0, e.to_string()))?;
    let schema = builder.schema().clone();
    let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
    let bad = |column: &str, reason: String| InstructError::BadColumn {
        path: path.to_path_buf(),
        column: column.to_string(),
        reason,
    };
    let (user_col, input_col, answer_col) = if find("prompt").is_some() {
        ("prompt", None, "response")
    } else if find("instruction").is_some() {
        ("instruction", find("input").map(|_| "input"), "output")
    } else {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let column = if columns.contains(&"messages") {
            "messages"
        } else {
            "prompt"
        };
        return Err(bad(
            column,
            format!(
                "no prompt or instruction column (columns: {}); chat messages are read from \
                 JSONL only",
                columns.join(", ")
            ),
        ));
    };
    let Some(answer_idx) = find(answer_col) else {
        return Err(bad(
            answer_col,
            "missing, so the examples have no response".to_string(),
        ));
    };
    let mut roots: Vec<usize> = [Some(user_col), input_col]
        .into_iter()
        .flatten()
        .filter_map(find)
        .chain([answer_idx])
        .collect();
    roots.sort_unstable();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(1024)
        .build()
        .map_err(|e| corrupt(0, e.to_string()))?;
    let mut examples = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| corrupt(row + 1, e.to_string()))?;
        let column = |name: &str| -> Result<Option<&dyn arrow_array::Array>, InstructError> {
            match batch.column_by_name(name) {
                None => Ok(None),
                Some(a) if is_string(a.as_ref()) => Ok(Some(a.as_ref())),
                Some(a) => Err(bad(name, format!("holds {}, not strings", a.data_type()))),
            }
        };
        let user = column(user_col)?;
        let input = match input_col {
            Some(c) => column(c)?,
            None => None,
        };
        let answer = column(answer_col)?;
        for i in 0..batch.num_rows() {
            row += 1;
            let at = At { path, line: row };
            let text = |a: Option<&dyn arrow_array::Array>, name: &str| {
                a.and_then(|a| string_at(a, i))
                    .map(|s| at.non_empty(s, &format!("column \"{name}\"")))
            };
            let user_text =
                text(user, user_col).unwrap_or_else(|| Err(at.missing("Parquet", user_col)))?;
            let answer_text = text(answer, answer_col).unwrap_or_else(|| Err(at.no_response()))?;
            let user_text = if user_col == "instruction" {
                alpaca_user(user_text, input.and_then(|a| string_at(a, i)))
            } else {
                user_text
            };
            examples.push(Example {
                turns: vec![
                    Turn {
                        role: "user".into(),
                        content: user_text,
                    },
                    Turn {
                        role: "assistant".into(),
                        content: answer_text,
                    },
                ],
                origin: Some(Origin {
                    path: path.to_path_buf(),
                    line: row,
                }),
            });
        }
    }
    Ok(examples)
}

fn is_string(a: &dyn arrow_array::Array) -> bool {
    use arrow_array::cast::AsArray;
    a.as_string_opt::<i32>().is_some()
        || a.as_string_opt::<i64>().is_some()
        || a.as_string_view_opt().is_some()
}

/// Row `i` of a string column; `None` for a null.
fn string_at(a: &dyn arrow_array::Array, i: usize) -> Option<&str> {
    use arrow_array::cast::AsArray;
    if a.is_null(i) {
        return None;
    }
    if let Some(s) = a.as_string_opt::<i32>() {
        return Some(s.value(i));
    }
    if let Some(s) = a.as_string_opt::<i64>() {
        return Some(s.value(i));
    }
    a.as_string_view_opt().map(|s| s.value(i))
}

#[cfg(test)]
mod tests;
