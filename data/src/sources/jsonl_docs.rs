//! JSONL documents (`{"text": ..., "id": ..., "metadata": ...}` per line, the
//! dolma/datatrove layout), one line at a time.

use super::{to_text, Document, LineReader};
use crate::error::DataError;

pub(super) struct JsonlDocs {
    pub(super) lines: LineReader,
    pub(super) text_field: String,
    pub(super) id_field: Option<String>,
    pub(super) metadata_field: Option<String>,
}

impl JsonlDocs {
    fn parse(&self, line: Vec<u8>) -> Result<Option<Document>, DataError> {
        let path = &self.lines.path;
        let line_no = self.lines.line;
        let (text, replaced) = to_text(line);
        if text.trim().is_empty() {
            return Ok(None);
        }
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| DataError::BadJsonLine {
                path: path.clone(),
                line: line_no,
                reason: e.to_string(),
            })?;
        let serde_json::Value::Object(mut object) = value else {
            return Err(DataError::BadJsonLine {
                path: path.clone(),
                line: line_no,
                reason: "not an object".into(),
            });
        };
        let text = match object.remove(&self.text_field) {
            Some(serde_json::Value::String(s)) => s,
            Some(other) => {
                return Err(DataError::FieldNotString {
                    path: path.clone(),
                    line: line_no,
                    field: self.text_field.clone(),
                    found: crate::corpus::json_kind(&other),
                })
            }
            None => {
                return Err(DataError::MissingField {
                    path: path.clone(),
                    line: line_no,
                    field: self.text_field.clone(),
                })
            }
        };
        let id = self
            .id_field
            .as_ref()
            .and_then(|f| object.remove(f))
            .map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
        let metadata = self.metadata_field.as_ref().and_then(|f| object.remove(f));
        Ok(Some(Document {
            text,
            id,
            metadata,
            replaced_utf8: replaced,
        }))
    }
}

impl Iterator for JsonlDocs {
    type Item = Result<Document, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::new();
        loop {
            match self.lines.next_line(&mut line) {
                Err(e) => return Some(Err(e)),
                Ok(false) => return None,
                Ok(true) => match self.parse(std::mem::take(&mut line)) {
                    Ok(Some(doc)) => return Some(Ok(doc)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(e)),
                },
            }
        }
    }
}
