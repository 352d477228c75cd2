//! Quantisation arithmetic against its references (fixtures from
//! tests/reference/quant_reference.py): symmetric int8 / int4 per-channel and
//! per-group fake quantisation and its straight-through gradient against
//! `torch.fake_quantize_per_channel_affine`, per-token int8 activations, and
//! llama.cpp's q8_0 / q4_0 blocks byte for byte against the `gguf` package.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use kiln_models::layers::fake_quant::fake_quant_weight;
use kiln_models::quant::{
    encode_q4_0, encode_q8_0, fake_quant_affine, fake_quant_rows, fake_quant_token_int8,
    transposed, ActFormat, QuantSpec, WeightFormat,
};

use crate::common::{raw_f32s as f32s, raw_fixture};

/// Every tensor of a fixture as (shape, bytes, dtype name).
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const CASES: [(&str, WeightFormat, Option<usize>); 8] = [
    ("int8_channel", WeightFormat::Int8, None),
    ("int4_channel", WeightFormat::Int4, None),
    ("int8_group32", WeightFormat::Int8, Some(32)),
    ("int8_group64", WeightFormat::Int8, Some(64)),
    ("int8_group128", WeightFormat::Int8, Some(128)),
    ("int4_group32", WeightFormat::Int4, Some(32)),
    ("int4_group64", WeightFormat::Int4, Some(64)),
    ("int4_group128", WeightFormat::Int4, Some(128)),
];

#[test]
fn fake_quant_values_and_ste_gradients_match_torch() {
    let t = raw_fixture("quant/fake_quant.safetensors");
    let (w, u) = (f32s(&t["w"]), f32s(&t["u"])); // [out 8, in 128] (PyTorch layout)
    let (n_out, n_in) = (8, 128);
    type AB = Autodiff<Flex>;
    let dev = Default::default();
    for (name, format, group) in CASES {
        let want = f32s(&t[&format!("fq.{name}")]);
        let (got, _, _) = fake_quant_rows(format, &w, n_in, group.unwrap_or(n_in));
        let d = max_diff(&got, &want);
        assert!(d <= 1e-6, "{name}: values differ by {d}");

        // Through the layer's op (Kiln layout [in, out]) and autodiff.
        let spec = QuantSpec {
            weights: format,
            group,
            activations: ActFormat::None,
        };
        let wk = Tensor::<AB, 2>::from_data(
            TensorData::new(transposed(&w, n_out, n_in), [n_in, n_out]),
            &dev,
        )
        .require_grad();
        let uk = Tensor::<AB, 2>::from_data(
            TensorData::new(transposed(&u, n_out, n_in), [n_in, n_out]),
            &dev,
        );
        let fq = fake_quant_weight(wk.clone(), &spec);
        let vals: Vec<f32> = fq.clone().inner().into_data().into_vec().expect("f32");
        assert!(
            max_diff(&transposed(&vals, n_in, n_out), &want) <= 1e-6,
            "{name}: layer op values"
        );
        let grads = (fq * uk).sum().backward();
        let g: Vec<f32> = wk
            .grad(&grads)
            .expect("grad")
            .into_data()
            .into_vec()
            .expect("f32");
        let want_g = f32s(&t[&format!("grad.{name}")]);
        let d = max_diff(&transposed(&g, n_in, n_out), &want_g);
        assert!(d <= 1e-6, "{name}: gradient differs by {d}");
    }
    // A half scale clamps: the values saturate and their gradient is zero.
    for (name, bits) in [("int8_channel_halfscale", 8), ("int4_channel_halfscale", 4)] {
        let scales = f32s(&t[&format!("scale.{name}")]);
        let (want, want_g) = (
            f32s(&t[&format!("fq.{name}")]),
            f32s(&t[&format!("grad.{name}")]),
        );
        let (mut out, mut mask) = (vec![0f32; w.len()], vec![0f32; w.len()]);
        let mut clamped = false;
        for (r, s) in scales.iter().enumerate() {
            let span = r * n_in..(r + 1) * n_in;
            clamped |= fake_quant_affine(
                &w[span.clone()],
                *s,
                bits,
                &mut out[span.clone()],
                &mut mask[span],
            );
        }
        assert!(clamped, "{name}: the case must clamp something");
        assert!(max_diff(&out, &want) <= 1e-6, "{name}: values");
        let g: Vec<f32> = mask.iter().zip(&u).map(|(m, u)| m * u).collect();
        assert!(max_diff(&g, &want_g) == 0.0, "{name}: STE mask");
    }
}

#[test]
fn per_token_int8_activations_match_torch() {
    let t = raw_fixture("quant/fake_quant.safetensors");
    let (x, want) = (f32s(&t["x"]), f32s(&t["fq.act_int8_token"]));
    let mut got = vec![0f32; x.len()];
    for (o, row) in got.chunks_mut(128).zip(x.chunks(128)) {
        fake_quant_token_int8(row, o);
    }
    let d = max_diff(&got, &want);
    assert!(d <= 1e-6, "per-token int8 differs by {d}");
}

#[test]
fn gguf_blocks_match_the_gguf_package_bitwise() {
    let t = raw_fixture("quant/gguf_blocks.safetensors");
    let x = f32s(&t["x"]); // [16 blocks, 32]
    for (fmt, encode, bytes_per_block) in [
        (WeightFormat::Q8_0, encode_q8_0 as fn(&[f32]) -> Vec<u8>, 34),
        (WeightFormat::Q4_0, encode_q4_0 as fn(&[f32]) -> Vec<u8>, 18),
    ] {
        let key = if fmt == WeightFormat::Q8_0 {
            "q8_0"
        } else {
            "q4_0"
        };
        let want = &t[&format!("bytes.{key}")].1;
        let got: Vec<u8> = x.chunks(32).flat_map(encode).collect();
        assert_eq!(got.len(), 16 * bytes_per_block);
        for (b, (g, w)) in got
            .chunks(bytes_per_block)
            .zip(want.chunks(bytes_per_block))
            .enumerate()
        {
            assert_eq!(g, w, "{key} block {b}: bytes differ");
        }
        // The fake quantiser's values are the dequantised file's, exactly.
        let (deq, _, _) = fake_quant_rows(fmt, &x, 32, 32);
        let want_deq = f32s(&t[&format!("deq.{key}")]);
        assert_eq!(
            deq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want_deq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{key}: dequantised values"
        );
    }
}
