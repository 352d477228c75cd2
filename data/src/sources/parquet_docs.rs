//! Parquet documents (the FineWeb layout: a text column, optional id column),
//! read in record batches of `PARQUET_BATCH_ROWS` rows with only the needed
//! columns projected.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{to_text, Document, SourceFile, SourceSpec};
use crate::error::DataError;

/// Rows per Parquet record batch: a few MB of text at most for web pages.
const PARQUET_BATCH_ROWS: usize = 1024;

pub(super) struct ParquetDocs {
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    path: PathBuf,
    text_col: usize,
    id_col: Option<usize>,
    /// Rows handed out so far (the row of the next document).
    row: u64,
    batch: Option<RecordBatch>,
    in_batch: usize,
    bytes_read: Arc<AtomicU64>,
    bytes_per_row: f64,
    failed: bool,
}

impl ParquetDocs {
    pub(super) fn open(
        raw: File,
        file: &SourceFile,
        spec: &SourceSpec,
        bytes_read: Arc<AtomicU64>,
    ) -> Result<ParquetDocs, DataError> {
        let path = file.path.clone();
        let corrupt = |reason: String| DataError::Corrupt {
            path: path.clone(),
            at: "the footer".into(),
            reason,
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(raw).map_err(|e| corrupt(e.to_string()))?;
        let schema = builder.schema().clone();
        let find = |name: &str| schema.fields().iter().position(|f| f.name() == name);
        let Some(text_idx) = find(&spec.text_field) else {
            return Err(DataError::MissingColumn {
                path,
                column: spec.text_field.clone(),
                available: schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let id_idx = spec.id_field.as_deref().and_then(find);
        let total_rows = builder.metadata().file_metadata().num_rows().max(1) as f64;
        // Read only the columns we use; a projection keeps the schema order.
        let mut roots = vec![text_idx];
        roots.extend(id_idx);
        roots.sort_unstable();
        let text_col = roots.iter().position(|&r| r == text_idx).unwrap_or(0);
        let id_col = id_idx.and_then(|i| roots.iter().position(|&r| r == i));
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(PARQUET_BATCH_ROWS)
            .build()
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(ParquetDocs {
            reader,
            path: file.path.clone(),
            text_col,
            id_col,
            row: 0,
            batch: None,
            in_batch: 0,
            bytes_read,
            bytes_per_row: file.size as f64 / total_rows,
            failed: false,
        })
    }

    fn cell(&self, batch: &RecordBatch, col: usize, i: usize) -> Result<(String, bool), DataError> {
        let array = batch.column(col);
        if array.is_null(i) {
            return Ok((String::new(), false));
        }
        if let Some(a) = array.as_string_opt::<i32>() {
            return Ok((a.value(i).to_string(), false));
        }
        if let Some(a) = array.as_string_opt::<i64>() {
            return Ok((a.value(i).to_string(), false));
        }
        if let Some(a) = array.as_string_view_opt() {
            return Ok((a.value(i).to_string(), false));
        }
        if let Some(a) = array.as_binary_opt::<i32>() {
            return Ok(to_text(a.value(i).to_vec()));
        }
        if let Some(a) = array.as_binary_opt::<i64>() {
            return Ok(to_text(a.value(i).to_vec()));
        }
        if let Some(a) = array.as_primitive_opt::<arrow_array::types::Int64Type>() {
            return Ok((a.value(i).to_string(), false));
        }
        Err(DataError::ColumnNotString {
            path: self.path.clone(),
            column: batch.schema().field(col).name().clone(),
            found: array.data_type().to_string(),
        })
    }
}

impl Iterator for ParquetDocs {
    type Item = Result<Document, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(batch) = &self.batch {
                if self.in_batch < batch.num_rows() {
                    let i = self.in_batch;
                    self.in_batch += 1;
                    self.row += 1;
                    let text = match self.cell(batch, self.text_col, i) {
                        Ok(t) => t,
                        Err(e) => {
                            self.failed = true;
                            return Some(Err(e));
                        }
                    };
                    let id = match self.id_col.map(|c| self.cell(batch, c, i)) {
                        Some(Ok((s, _))) => Some(s),
                        Some(Err(e)) => {
                            self.failed = true;
                            return Some(Err(e));
                        }
                        None => None,
                    };
                    return Some(Ok(Document {
                        text: text.0,
                        id,
                        metadata: None,
                        replaced_utf8: text.1,
                    }));
                }
            }
            match self.reader.next()? {
                Ok(batch) => {
                    self.bytes_read.fetch_add(
                        (batch.num_rows() as f64 * self.bytes_per_row) as u64,
                        Ordering::Relaxed,
                    );
                    self.batch = Some(batch);
                    self.in_batch = 0;
                }
                Err(e) => {
                    self.failed = true;
                    return Some(Err(DataError::Corrupt {
                        path: self.path.clone(),
                        at: format!("row {}", self.row),
                        reason: e.to_string(),
                    }));
                }
            }
        }
    }
}
