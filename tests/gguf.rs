//! `kiln quantize` GGUF files read back by an independent minimal GGUF v3
//! reader: header, metadata, llama.cpp tensor names and shapes, aligned
//! offsets, and q4_0 tensors whose dequantised values are exactly what the
//! QAT forward computes with (the fake quantiser on the same weights).
//! (`tests/reference/check_gguf_llamacpp.py` runs the files in llama.cpp.)

use std::collections::BTreeMap;
use std::path::Path;

use kiln_models::quant::{fake_quant_rows, WeightFormat};

use crate::common::{fails_with, kiln, run, stderr, train_tiny};

#[derive(Debug)]
struct Tensor {
    dims: Vec<u64>,
    kind: u32,
    offset: u64,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8"))
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).expect("utf8")
    }
    /// A value as text (arrays: their length).
    fn value(&mut self, t: u32) -> String {
        match t {
            4 => self.u32().to_string(),
            5 => (self.u32() as i32).to_string(),
            6 => f32::from_bits(self.u32()).to_string(),
            7 => (self.take(1)[0] != 0).to_string(),
            8 => self.string(),
            9 => {
                let (et, n) = (self.u32(), self.u64());
                for _ in 0..n {
                    self.value(et);
                }
                format!("[{n}]")
            }
            _ => panic!("unexpected GGUF value type {t}"),
        }
    }
}

fn read_gguf(
    path: &Path,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, Tensor>,
    Vec<u8>,
    usize,
) {
    let bytes = std::fs::read(path).expect("gguf");
    let mut r = Reader { b: &bytes, at: 0 };
    assert_eq!(r.take(4), b"GGUF");
    assert_eq!(r.u32(), 3, "version");
    let (n_t, n_kv) = (r.u64(), r.u64());
    let mut meta = BTreeMap::new();
    for _ in 0..n_kv {
        let k = r.string();
        let t = r.u32();
        meta.insert(k, r.value(t));
    }
    let mut tensors = BTreeMap::new();
    for _ in 0..n_t {
        let name = r.string();
        let nd = r.u32();
        let dims = (0..nd).map(|_| r.u64()).collect();
        let kind = r.u32();
        let offset = r.u64();
        assert_eq!(offset % 32, 0, "{name}: offset not aligned");
        tensors.insert(name, Tensor { dims, kind, offset });
    }
    let data_start = r.at.next_multiple_of(32);
    (meta, tensors, bytes, data_start)
}

fn dequant_q4_0(block: &[u8]) -> [f32; 32] {
    let d = burn::tensor::f16::from_le_bytes([block[0], block[1]]).to_f32();
    let mut out = [0f32; 32];
    for j in 0..16 {
        let b = block[2 + j];
        out[j] = ((b & 0xF) as f32 - 8.0) * d;
        out[j + 16] = ((b >> 4) as f32 - 8.0) * d;
    }
    out
}

#[test]
fn gguf_has_llama_cpp_names_and_the_qat_arithmetic() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let run_dir = train_tiny(tmp, 4);
    let out = tmp.join("m.gguf");
    let o = run(kiln()
        .arg("quantize")
        .arg(&run_dir)
        .args(["--format", "q4_0", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let (meta, tensors, bytes, start) = read_gguf(&out);
    assert_eq!(meta["general.architecture"], "llama");
    assert_eq!(meta["general.file_type"], "2");
    assert_eq!(meta["llama.block_count"], "2");
    assert_eq!(meta["llama.embedding_length"], "32");
    assert_eq!(meta["llama.attention.head_count_kv"], "2");
    assert_eq!(meta["tokenizer.ggml.model"], "gpt2");
    let n_vocab: usize = meta["llama.vocab_size"].parse().expect("vocab");
    assert_eq!(meta["tokenizer.ggml.tokens"], format!("[{n_vocab}]"));
    // TINY: dim 32, 2 layers, 4 heads (2 kv), ffn 64, tied embeddings.
    let want = [
        ("token_embd.weight", vec![32, n_vocab as u64], 1),
        ("blk.0.attn_norm.weight", vec![32], 0),
        ("blk.0.attn_q.weight", vec![32, 32], 2),
        ("blk.0.attn_k.weight", vec![32, 16], 2),
        ("blk.1.ffn_down.weight", vec![64, 32], 2),
        ("blk.1.ffn_gate.weight", vec![32, 64], 2),
        ("output_norm.weight", vec![32], 0),
    ];
    for (name, dims, kind) in want {
        let t = tensors.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!((&t.dims, t.kind), (&dims, kind), "{name}");
    }
    assert!(!tensors.contains_key("output.weight"), "tied head");
    assert_eq!(tensors.len(), 2 + 2 * 9);

    // ffn_down's q4_0 blocks dequantise to the fake quantiser's values of
    // the checkpoint's weight (HF layout [out, in] = [32, 64]).
    let ckpt = kiln_trainer::session::load_checkpoint(&run_dir).expect("ckpt");
    let w = &ckpt.model["model.layers.1.mlp.down_proj.weight"]; // Kiln [in 64, out 32]
    let hf = kiln_models::quant::transposed(&w.data, 64, 32); // [32, 64]
    let (fq, _, _) = fake_quant_rows(WeightFormat::Q4_0, &hf, 64, 32);
    let t = &tensors["blk.1.ffn_down.weight"];
    let data = &bytes[start + t.offset as usize..][..32 * 2 * 18];
    let deq: Vec<f32> = data.chunks(18).flat_map(dequant_q4_0).collect();
    assert_eq!(
        deq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        fq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "file and fake quantiser disagree"
    );
}

#[test]
fn bad_quantize_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    train_tiny(tmp, 4);
    fails_with(
        &["quantize", "run", "--format", "q5_k", "--out", "x.gguf"],
        tmp,
        &["q5_k", "q4_0"],
    );
    fails_with(
        &["eval", "run", "--quantize", "int3"],
        tmp,
        &["--quantize int3"],
    );
    fails_with(
        &["eval", "run", "--quantize", "q4_0", "--group", "64"],
        tmp,
        &["quantize.group", "32"],
    );
    assert!(!tmp.join("x.gguf").exists(), "nothing written on error");
    let cfg = crate::common::write_config(
        tmp,
        "q.toml",
        &format!(
            "{}\n[quantize]\nweights = \"int4\"\ntargets = [\"*.nothing\"]\n",
            crate::common::TINY
        ),
    );
    fails_with(
        &["train", cfg.to_str().expect("utf8"), "--run-dir", "q"],
        tmp,
        &["quantize.targets[0]"],
    );
    // A group that does not divide a targeted width; q4_0 on a width that is
    // not a multiple of 32 (ffn 48 -> down_proj has 48 inputs).
    let bad = |name: &str, section: &str, expect: &[&str]| {
        let text = format!(
            "{}\n{section}\n",
            crate::common::TINY.replace("ffn_dim = 64", "ffn_dim = 48")
        );
        let cfg = crate::common::write_config(tmp, name, &text);
        fails_with(
            &["train", cfg.to_str().expect("utf8"), "--run-dir", name],
            tmp,
            expect,
        );
    };
    bad(
        "g.toml",
        "[quantize]\nweights = \"int4\"\ngroup = 64\ntargets = [\"*.q_proj\"]",
        &["quantize.targets", "q_proj", "32 inputs"],
    );
    bad(
        "b.toml",
        "[quantize]\nweights = \"q4_0\"\ntargets = [\"*.down_proj\"]",
        &["quantize.targets", "down_proj", "48 inputs", "f16"],
    );
    // A stack llama.cpp has no architecture for.
    let text = crate::common::TINY.replace("max_steps = 24", "max_steps = 4");
    let (start, end) = (
        text.find("[model]").expect("m"),
        text.find("[data]").expect("d"),
    );
    let model =
        "[model]\narch = \"rwkv7\"\ndim = 32\nn_layers = 2\nhead_size = 8\nmax_seq_len = 32\n\n";
    let cfg = crate::common::write_config(
        tmp,
        "r.toml",
        &format!("{}{model}{}", &text[..start], &text[end..]),
    );
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(tmp.join("rwkv")));
    assert!(o.status.success(), "{}", stderr(&o));
    fails_with(
        &["quantize", "rwkv", "--format", "q8_0", "--out", "r.gguf"],
        tmp,
        &["RWKV-7"],
    );
    assert!(!tmp.join("r.gguf").exists());
}

/// A Mamba stack as llama.cpp's `mamba`: names, metadata, `A = -exp(A_log)`.
#[test]
fn mamba_gguf_has_llama_cpp_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let tmp = dir.path();
    let text = crate::common::TINY.replace("max_steps = 24", "max_steps = 4");
    let (start, end) = (
        text.find("[model]").expect("m"),
        text.find("[data]").expect("d"),
    );
    let model =
        "[model]\narch = \"mamba\"\ndim = 32\nn_layers = 2\nd_state = 4\nmax_seq_len = 32\n\n";
    let cfg = crate::common::write_config(
        tmp,
        "m.toml",
        &format!("{}{model}{}", &text[..start], &text[end..]),
    );
    let o = run(kiln()
        .arg("train")
        .arg(&cfg)
        .arg("--run-dir")
        .arg(tmp.join("run")));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tmp.join("m.gguf");
    let o = run(kiln()
        .arg("quantize")
        .arg(tmp.join("run"))
        .args(["--format", "q8_0", "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let (meta, tensors, bytes, start) = read_gguf(&out);
    assert_eq!(meta["general.architecture"], "mamba");
    assert_eq!(meta["mamba.ssm.inner_size"], "64");
    assert_eq!(meta["mamba.ssm.state_size"], "4");
    assert_eq!(meta["mamba.ssm.time_step_rank"], "2");
    let kinds = [
        ("blk.0.ssm_in.weight", vec![32, 128], 8),
        ("blk.0.ssm_conv1d.weight", vec![4, 64], 0),
        ("blk.0.ssm_x.weight", vec![64, 10], 8),
        ("blk.0.ssm_dt.weight", vec![2, 64], 1),
        ("blk.0.ssm_a", vec![4, 64], 0),
        ("blk.1.ssm_out.weight", vec![64, 32], 8),
        ("blk.1.attn_norm.weight", vec![32], 0),
    ];
    for (name, dims, kind) in kinds {
        let t = tensors.get(name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!((&t.dims, t.kind), (&dims, kind), "{name}");
    }
    let ckpt = kiln_trainer::session::load_checkpoint(&tmp.join("run")).expect("ckpt");
    let a_log = &ckpt.model["backbone.layers.0.mixer.A_log"].data;
    let at = start + tensors["blk.0.ssm_a"].offset as usize;
    let a: Vec<f32> = bytes[at..at + 4 * a_log.len()]
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let want: Vec<f32> = a_log.iter().map(|v| -v.exp()).collect();
    assert_eq!(a, want);
}
