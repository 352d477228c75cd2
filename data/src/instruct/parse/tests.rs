//! Tests of instruction-file parsing: the three layouts, Parquet, and
//! every bad-input line naming file and line.

use super::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/instruct/mixed.jsonl")
}

fn parse_err(line: &str) -> String {
    parse_jsonl_str(Path::new("d.jsonl"), &format!("\n{line}\n"))
        .unwrap_err()
        .to_string()
}

#[test]
fn fixture_has_all_three_layouts() {
    let ex = read_examples(&fixture()).unwrap();
    assert_eq!(ex.len(), 6);
    // prompt/response
    assert_eq!(
        ex[0].turns,
        vec![
            Turn::new("user", "What is the sun?"),
            Turn::new("assistant", "The sun is a star.")
        ]
    );
    assert_eq!(ex[0].origin.as_ref().unwrap().line, 1);
    // Alpaca with and without input
    assert_eq!(
        ex[2].turns[0].content,
        "Name the color of the sky.".to_string()
    );
    assert_eq!(ex[3].turns[0].content, "Add the numbers.\n\n2 and 3");
    assert_eq!(ex[3].turns[1], Turn::new("assistant", "5"));
    // chat, system kept; line numbers skip the blank line
    let roles: Vec<&str> = ex[4].turns.iter().map(|t| t.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(ex[5].turns.len(), 4);
    assert_eq!(ex[5].origin.as_ref().unwrap().line, 7);
}

#[test]
fn compressed_fixture_reads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let plain = std::fs::read(fixture()).unwrap();
    let gz = dir.path().join("m.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &plain).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let zst = dir.path().join("m.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(&plain[..], 3).unwrap()).unwrap();
    let want: Vec<Vec<Turn>> = read_examples(&fixture())
        .unwrap()
        .into_iter()
        .map(|e| e.turns)
        .collect();
    for p in [gz, zst] {
        let got: Vec<Vec<Turn>> = read_examples(&p)
            .unwrap()
            .into_iter()
            .map(|e| e.turns)
            .collect();
        assert_eq!(got, want, "{}", p.display());
    }
}

#[test]
fn errors_name_file_line_and_fix() {
    let e = parse_err("{not json");
    assert!(e.starts_with("d.jsonl:2: not valid JSON"), "{e}");
    let e = parse_err("[1, 2]");
    assert!(e.contains("d.jsonl:2") && e.contains("an array"), "{e}");
    let e = parse_err(r#"{"text": "hi"}"#);
    assert!(e.contains("d.jsonl:2: not an instruction example"), "{e}");
    assert!(e.contains("\"text\"") && e.contains("Alpaca"), "{e}");
    for line in [
        r#"{"prompt": "hi"}"#,
        r#"{"instruction": "hi", "input": ""}"#,
        r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
    ] {
        let e = parse_err(line);
        assert!(
            e.contains(
                "d.jsonl:2: the example has no response: add a \"response\" field or \
                 an assistant message"
            ),
            "{e}"
        );
    }
    let e = parse_err(r#"{"prompt": "hi", "response": "  "}"#);
    assert!(e.contains("d.jsonl:2: field \"response\" is empty"), "{e}");
    let e = parse_err(r#"{"messages": [{"role": "assistant", "content": ""}]}"#);
    assert!(e.contains("d.jsonl:2: messages[0].content is empty"), "{e}");
    let e = parse_err(r#"{"prompt": 3, "response": "x"}"#);
    assert!(
        e.contains("d.jsonl:2: field \"prompt\" is a number, not a string"),
        "{e}"
    );
    let e = parse_err(r#"{"instruction": "a", "input": ["b"], "output": "c"}"#);
    assert!(e.contains("field \"input\" is an array"), "{e}");
    let e = parse_err(r#"{"messages": [{"role": 1, "content": "x"}]}"#);
    assert!(e.contains("messages[0].role is a number"), "{e}");
    let e = parse_err(r#"{"messages": "hi"}"#);
    assert!(e.contains("d.jsonl:2: \"messages\" is a string"), "{e}");
    let e = parse_err(r#"{"messages": [{"role": "user"}]}"#);
    assert!(e.contains("messages[0] needs both"), "{e}");
    let e = parse_err(r#"{"output": "x"}"#);
    assert!(e.contains("Alpaca example has no \"instruction\""), "{e}");
}

#[test]
fn file_errors() {
    let e = read_examples(Path::new("/nonexistent/x.jsonl")).unwrap_err();
    assert!(matches!(e, InstructError::NotFound { .. }), "{e}");
    let e = read_examples(Path::new("x.csv")).unwrap_err();
    assert!(matches!(e, InstructError::UnknownFormat { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.jsonl");
    std::fs::write(&p, "\n\n").unwrap();
    let e = read_examples(&p).unwrap_err().to_string();
    assert!(e.contains("holds no instruction examples"), "{e}");
}

fn write_parquet(path: &Path, columns: Vec<(&str, Vec<Option<&str>>)>) {
    use std::sync::Arc;
    let cols: Vec<(&str, arrow_array::ArrayRef)> = columns
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                Arc::new(arrow_array::StringArray::from(v)) as arrow_array::ArrayRef,
            )
        })
        .collect();
    let batch = arrow_array::RecordBatch::try_from_iter(cols).unwrap();
    let file = File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn parquet_prompt_response_and_alpaca() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pr.parquet");
    write_parquet(
        &p,
        vec![
            ("id", vec![Some("a"), Some("b")]),
            ("prompt", vec![Some("Hi?"), Some("Why?")]),
            ("response", vec![Some("Hello."), Some("Because.")]),
        ],
    );
    let ex = read_examples(&p).unwrap();
    assert_eq!(
        ex[1].turns,
        vec![
            Turn::new("user", "Why?"),
            Turn::new("assistant", "Because.")
        ]
    );
    assert_eq!(ex[1].origin.as_ref().unwrap().line, 2);
    let p = dir.path().join("alpaca.parquet");
    write_parquet(
        &p,
        vec![
            ("instruction", vec![Some("Add."), Some("Say hi.")]),
            ("input", vec![Some("2 and 3"), None]),
            ("output", vec![Some("5"), Some("Hi!")]),
        ],
    );
    let ex = read_examples(&p).unwrap();
    assert_eq!(ex[0].turns[0].content, "Add.\n\n2 and 3");
    assert_eq!(ex[1].turns[0].content, "Say hi.");
    // A null response names the row and the fix.
    let p = dir.path().join("null.parquet");
    write_parquet(
        &p,
        vec![
            ("prompt", vec![Some("a"), Some("b")]),
            ("response", vec![Some("x"), None]),
        ],
    );
    let e = read_examples(&p).unwrap_err().to_string();
    assert!(
        e.contains("null.parquet:2: the example has no response"),
        "{e}"
    );
    let p = dir.path().join("text.parquet");
    write_parquet(&p, vec![("text", vec![Some("a")])]);
    let e = read_examples(&p).unwrap_err().to_string();
    assert!(
        e.contains("no prompt or instruction column (columns: text)"),
        "{e}"
    );
}
