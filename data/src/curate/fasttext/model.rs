//! The linear model (`src/model.cc`, `src/loss.cc`, 0.9.2): hidden = mean of
//! the input rows, scores = output x hidden, softmax (or fastText's table
//! sigmoid for ova / ns), and the SGD update. All float32 in fastText's
//! operation order, so probabilities match pip `fasttext` to float rounding.

use super::binio::{Reader, Writer};
use super::{FastTextError, Loss};

/// fastText's `DenseMatrix`: row-major `[rows, dim]` float32.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Matrix {
    pub fn zeros(rows: usize, dim: usize) -> Self {
        Self {
            rows,
            dim,
            data: vec![0.0; rows * dim],
        }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    fn row_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// `DenseMatrix::save`: int64 m, int64 n, then m * n float32.
    pub(crate) fn save(&self, w: &mut Writer) {
        w.i64(self.rows as i64);
        w.i64(self.dim as i64);
        w.f32s(&self.data);
    }

    pub(crate) fn load(r: &mut Reader, what: &'static str) -> Result<Self, FastTextError> {
        let at = r.offset();
        let rows = r.i64(what)?;
        let dim = r.i64(what)?;
        let remaining = (r.bytes.len() - r.pos) as u64;
        let n = (rows as u64).checked_mul(dim as u64);
        if rows < 0 || dim <= 0 || n.is_none() {
            return Err(r.corrupt(at, what, format!("shape [{rows}, {dim}]")));
        }
        let n = n.unwrap_or(0);
        if n.saturating_mul(4) > remaining {
            // Checked before allocating: a damaged shape must not ask for terabytes.
            return Err(FastTextError::Truncated {
                path: r.path.to_path_buf(),
                offset: r.bytes.len() as u64,
                what,
                len: r.bytes.len() as u64,
            });
        }
        let data = r.f32s(n as usize, what)?;
        Ok(Self {
            rows: rows as usize,
            dim: dim as usize,
            data,
        })
    }
}

/// `Vector::addRow` then `Vector::mul(1.0 / n)`: the sum is scaled by the
/// float32 reciprocal, not divided, as fastText does.
/// fastText's `std_log`: `std::log(x + 1e-5)` with a double literal, so the
/// sum and the log are double, rounded to float on return.
pub fn std_log(x: f32) -> f32 {
    (f64::from(x) + 1e-5).ln() as f32
}

pub fn hidden(input: &Matrix, rows: &[i32], out: &mut [f32]) {
    out.fill(0.0);
    for &r in rows {
        for (o, &x) in out.iter_mut().zip(input.row(r as usize)) {
            *o += x;
        }
    }
    let scale = (1.0 / rows.len() as f64) as f32;
    for o in out.iter_mut() {
        *o *= scale;
    }
}

/// `Vector::mul(matrix, vec)`: one sequential float32 dot product per row.
fn scores(output: &Matrix, hidden: &[f32], out: &mut [f32]) {
    for (i, o) in out.iter_mut().enumerate() {
        let mut d = 0.0f32;
        for (&w, &h) in output.row(i).iter().zip(hidden) {
            d += w * h;
        }
        *o = d;
    }
}

/// `SoftmaxLoss::computeOutput`: softmax with the max subtracted.
fn softmax(out: &mut [f32]) {
    let max = out.iter().copied().fold(out[0], f32::max);
    let mut z = 0.0f32;
    for o in out.iter_mut() {
        *o = (*o - max).exp();
        z += *o;
    }
    for o in out.iter_mut() {
        *o /= z;
    }
}

const SIGMOID_TABLE: usize = 512;
const MAX_SIGMOID: f32 = 8.0;

/// `Loss::sigmoid`: fastText reads a 513-entry table, not `1 / (1 + e^-x)`.
fn table_sigmoid(x: f32) -> f32 {
    if x < -MAX_SIGMOID {
        return 0.0;
    }
    if x > MAX_SIGMOID {
        return 1.0;
    }
    let i = ((x + MAX_SIGMOID) * SIGMOID_TABLE as f32 / MAX_SIGMOID / 2.0) as usize;
    let t = (i as f32 * 2.0 * MAX_SIGMOID) / SIGMOID_TABLE as f32 - MAX_SIGMOID;
    // C++ calls the float `std::exp` and divides in double.
    (1.0 / (1.0 + f64::from((-t).exp()))) as f32
}

/// Class probabilities for one line's input rows (empty rows: no output).
pub fn probabilities(input: &Matrix, output: &Matrix, loss: Loss, rows: &[i32]) -> Vec<f32> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut h = vec![0.0f32; input.dim];
    hidden(input, rows, &mut h);
    let mut out = vec![0.0f32; output.rows];
    scores(output, &h, &mut out);
    match loss {
        Loss::Softmax => softmax(&mut out),
        _ => out.iter_mut().for_each(|o| *o = table_sigmoid(*o)),
    }
    out
}

/// One SGD step on a line (`Model::update` with `SoftmaxLoss::forward`):
/// returns the loss. `hidden`, `grad`, `out` are reused scratch buffers.
pub fn update(
    input: &mut Matrix,
    output: &mut Matrix,
    rows: &[i32],
    target: usize,
    lr: f32,
    scratch: &mut Scratch,
) -> f32 {
    hidden(input, rows, &mut scratch.hidden);
    scores(output, &scratch.hidden, &mut scratch.out);
    softmax(&mut scratch.out);
    scratch.grad.fill(0.0);
    for i in 0..output.rows {
        let label = if i == target { 1.0 } else { 0.0 };
        let alpha = lr * (label - scratch.out[i]);
        let row = output.row_mut(i);
        for (g, &w) in scratch.grad.iter_mut().zip(row.iter()) {
            *g += alpha * w;
        }
        for (w, &h) in row.iter_mut().zip(&scratch.hidden) {
            *w += alpha * h;
        }
    }
    // Supervised models average the gradient over the input rows.
    let scale = (1.0 / rows.len() as f64) as f32;
    for g in scratch.grad.iter_mut() {
        *g *= scale;
    }
    for &r in rows {
        for (w, &g) in input.row_mut(r as usize).iter_mut().zip(&scratch.grad) {
            *w += g;
        }
    }
    -std_log(scratch.out[target])
}

pub struct Scratch {
    hidden: Vec<f32>,
    grad: Vec<f32>,
    out: Vec<f32>,
}

impl Scratch {
    pub fn new(dim: usize, nlabels: usize) -> Self {
        Self {
            hidden: vec![0.0; dim],
            grad: vec![0.0; dim],
            out: vec![0.0; nlabels],
        }
    }
}
