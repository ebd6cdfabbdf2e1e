//! Results must be bit-identical for any thread count: rayon pools of 1 and 2 threads for the
//! row-wise ops and attention, and `MATMUL_NUM_THREADS` = 1 and 4 for matrixmultiply (read once
//! per process, so those runs happen in child processes of this test binary).

mod common;

use std::process::Command;

use common::{bits, with_threads, Rng};
use koembed_tensor::{
    add_layernorm_inplace, attention_single_sequence_qkv, gelu_erf_inplace, layernorm_inplace,
    matmul_bias_nt, softmax_rows_inplace, Tensor,
};

fn t(data: Vec<f32>, shape: &[usize]) -> Tensor {
    Tensor::from_vec(data, shape).unwrap()
}

/// Runs every parallel op once on inputs large enough to take the parallel paths; returns the
/// concatenated output bits.
fn run_all_ops() -> Vec<u32> {
    let mut rng = Rng::new(40);
    let (t_len, h, heads, ffn) = (130, 384, 12, 1536);
    let mut out = Vec::new();

    let x = t(rng.uniform_vec(t_len * h, -2.0, 2.0), &[t_len, h]);
    let w = t(rng.uniform_vec(3 * h * h, -0.1, 0.1), &[3 * h, h]);
    let b = t(rng.uniform_vec(3 * h, -0.1, 0.1), &[3 * h]);
    let mut qkv = Tensor::full(&[t_len, 3 * h], f32::NAN);
    matmul_bias_nt(qkv.view_mut(), x.view(), w.view(), b.view()).unwrap();
    out.extend(bits(qkv.as_slice()));

    let mut ctx = Tensor::full(&[t_len, h], f32::NAN);
    attention_single_sequence_qkv(ctx.view_mut(), qkv.view(), heads).unwrap();
    out.extend(bits(ctx.as_slice()));

    let gamma = t(rng.uniform_vec(h, 0.5, 1.5), &[h]);
    let beta = t(rng.uniform_vec(h, -0.5, 0.5), &[h]);
    add_layernorm_inplace(ctx.view_mut(), x.view(), gamma.view(), beta.view(), 1e-12).unwrap();
    out.extend(bits(ctx.as_slice()));
    layernorm_inplace(ctx.view_mut(), gamma.view(), beta.view(), 1e-5).unwrap();
    out.extend(bits(ctx.as_slice()));

    let mut scores = t(
        rng.uniform_vec(heads * t_len * t_len, -8.0, 8.0),
        &[heads * t_len, t_len],
    );
    softmax_rows_inplace(scores.view_mut()).unwrap();
    out.extend(bits(scores.as_slice()));

    let mut act = rng.uniform_vec(t_len * ffn, -6.0, 6.0);
    gelu_erf_inplace(&mut act);
    out.extend(bits(&act));
    out
}

#[test]
fn one_and_two_rayon_threads_give_the_same_bits() {
    let one = with_threads(1, run_all_ops);
    let two = with_threads(2, run_all_ops);
    assert_eq!(one.len(), two.len());
    let first_diff = one.iter().zip(&two).position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "1 vs 2 threads differ");
}

fn digest(words: &[u32]) -> u64 {
    // FNV-1a over the bit patterns.
    words.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &w| {
        (h ^ w as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[test]
#[ignore = "helper: run in a child process by matmul_num_threads_does_not_change_the_bits"]
fn print_digest_child() {
    println!("DIGEST={:016x}", digest(&run_all_ops()));
}

#[test]
fn matmul_num_threads_does_not_change_the_bits() {
    let exe = std::env::current_exe().unwrap();
    let run = |threads: &str| -> String {
        let out = Command::new(&exe)
            .args(["--exact", "print_digest_child", "--ignored", "--nocapture"])
            .args(["--test-threads", "1"])
            .env("MATMUL_NUM_THREADS", threads)
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .find_map(|l| l.split_once("DIGEST=").map(|(_, d)| d.trim().to_owned()))
            .unwrap_or_else(|| panic!("no digest from child (threads {threads}): {stdout}"))
    };
    let here = format!("{:016x}", digest(&run_all_ops()));
    assert_eq!(run("1"), here, "MATMUL_NUM_THREADS=1");
    assert_eq!(run("4"), here, "MATMUL_NUM_THREADS=4");
}
