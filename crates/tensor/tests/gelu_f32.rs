//! The f32 vectorised GELU: every kernel equals the scalar twin bit for bit, and the error
//! against the f64 reference stays within the bound quoted in `gelu_erf_f32`'s docs.

mod common;

use common::{bits, with_threads};
use koembed_tensor::{
    gelu_erf, gelu_erf_f32, gelu_erf_f32_inplace, gelu_erf_f32_inplace_with, GeluKernel,
};
use rayon::prelude::*;

fn gelu_ref(x: f32) -> f64 {
    let x = x as f64;
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// 4,000,001 evenly spaced points of [-10, 10] plus the neighbourhoods of the branch points.
fn dense_grid() -> Vec<f32> {
    let n = 4_000_000;
    let mut xs: Vec<f32> = (0..=n)
        .map(|i| (-10.0 + 20.0 * (i as f64 / n as f64)) as f32)
        .collect();
    for b in [0.0f32, 10.0, -12.0, 9.0 * std::f32::consts::SQRT_2, 1e-30] {
        for d in -2000i32..=2000 {
            xs.push(f32::from_bits((b.to_bits() as i32 + d).max(0) as u32));
            xs.push(-f32::from_bits((b.to_bits() as i32 + d).max(0) as u32));
        }
    }
    xs
}

const SPECIAL: [f32; 12] = [
    0.0,
    -0.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    f32::MAX,
    -f32::MAX,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-45,
    -1e-45,
    -1e30,
];

#[test]
fn error_bound_on_the_dense_grid() {
    let xs = dense_grid();
    // (max abs error vs f64, at; max |diff| vs gelu_erf in ulps of gelu_erf, at)
    let (abs, abs_at, ulps, ulps_at) = xs
        .par_iter()
        .filter(|x| x.abs() <= 10.0 || x.abs() > 12.0)
        .map(|&x| {
            let got = gelu_erf_f32(x);
            let abs = (got as f64 - gelu_ref(x)).abs();
            let exact = gelu_erf(x);
            let ulps = (got.to_bits() as i64 - exact.to_bits() as i64).unsigned_abs();
            // Outputs below 1e-3 in magnitude (x < -3.4) have larger relative error (up to
            // ~1e-5 at x = -10, from rounding z² in f32) but absolute errors below 1e-11.
            let ulps = if got == exact || x.abs() > 10.0 || exact.abs() < 1e-3 {
                0
            } else {
                ulps
            };
            (abs, x, ulps, x)
        })
        .reduce(
            || (0.0, 0.0, 0, 0.0),
            |a, b| {
                let (abs, abs_at) = if b.0 > a.0 { (b.0, b.1) } else { (a.0, a.1) };
                let (u, u_at) = if b.2 > a.2 { (b.2, b.3) } else { (a.2, a.3) };
                (abs, abs_at, u, u_at)
            },
        );
    println!(
        "gelu_erf_f32 on [-10, 10]: max abs error {abs:e} at {abs_at}; \
         max {ulps} ulp from gelu_erf (|gelu| >= 1e-3) at {ulps_at}"
    );
    assert!(abs <= 2.4e-7, "max abs error {abs:e} at {abs_at}");
    assert!(ulps <= 24, "{ulps} ulps from gelu_erf at {ulps_at}");
}

#[test]
fn special_values() {
    let g = gelu_erf_f32;
    assert_eq!(g(0.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(g(-0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(g(f32::INFINITY), f32::INFINITY);
    assert_eq!(g(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
    assert!(g(f32::NAN).is_nan());
    assert_eq!(g(f32::MAX), f32::MAX);
    assert_eq!(g(-f32::MAX).to_bits(), (-0.0f32).to_bits());
    assert_eq!(g(20.0), 20.0);
    // Tiny: gelu(x) = x/2 (exact halving).
    for x in [1e-20f32, 1e-38, -1e-20, f32::MIN_POSITIVE] {
        assert_eq!(g(x), x / 2.0, "gelu({x:e})");
    }
    // Beyond [-10, 10] the error stays tiny in absolute terms.
    for i in 0..=100_000 {
        let x = -1e4 + 2e4 * i as f32 / 1e5;
        assert!(
            (g(x) as f64 - gelu_ref(x)).abs()
                <= 1e-3 * f32::EPSILON as f64 * x.abs() as f64 + 2.4e-7,
            "{x}"
        );
    }
}

#[test]
fn every_kernel_matches_the_scalar_twin() {
    let mut xs = dense_grid();
    xs.extend(SPECIAL);
    let want: Vec<u32> = xs.iter().map(|&x| gelu_erf_f32(x).to_bits()).collect();
    println!("GELU kernels: {:?}", GeluKernel::supported());
    for kernel in GeluKernel::supported() {
        // Lengths that leave a remainder for the vector tails.
        for len in [0, 1, 7, 15, 17, 33, xs.len()] {
            let mut got = xs[..len].to_vec();
            gelu_erf_f32_inplace_with(kernel, &mut got);
            let got = bits(&got);
            for (i, (&a, &b)) in got.iter().zip(&want[..len]).enumerate() {
                let (fa, fb) = (f32::from_bits(a), f32::from_bits(b));
                assert!(
                    a == b || (fa.is_nan() && fb.is_nan()),
                    "{kernel:?} len {len}: x = {} gives {fa} vs scalar {fb}",
                    xs[i]
                );
            }
        }
    }
    assert_eq!(GeluKernel::supported().last(), Some(&GeluKernel::Scalar));
}

#[test]
fn threads_do_not_change_the_bits() {
    let xs: Vec<f32> = (0..200_003)
        .map(|i| (i as f32 * 0.37).sin() * 8.0)
        .collect();
    let run = || {
        let mut v = xs.clone();
        gelu_erf_f32_inplace(&mut v);
        bits(&v)
    };
    assert_eq!(with_threads(1, run), with_threads(2, run));
}

/// Re-derives the coefficients of `g(t) ≈ ln(erfc(z)/t) + z²`, t = 2/(2+z), z ∈ [0, 9], used by
/// `gelu_erf_f32`: Chebyshev interpolation of degree 9 on t ∈ [2/11, 1] in f64 (against
/// `libm::erfc`), converted to monomials in t and rounded to f32.
/// `cargo test --release -p koembed-tensor --test gelu_f32 -- --ignored --nocapture`
#[test]
#[ignore = "prints the polynomial fitted for gelu_erf_f32 (a developer's step)"]
fn refit_gelu_coefficients() {
    use std::f64::consts::PI;
    let g_of_t = |t: f64| {
        let z = 2.0 / t - 2.0;
        (libm::erfc(z) / t).ln() + z * z
    };
    let (a, b, n) = (2.0 / 11.0, 1.0, 10usize);
    let node = |i: usize| (PI * (i as f64 + 0.5) / n as f64).cos();
    let fv: Vec<f64> = (0..n)
        .map(|i| g_of_t(a + (b - a) * (node(i) + 1.0) / 2.0))
        .collect();
    // Chebyshev coefficients.
    let mut c: Vec<f64> = (0..n)
        .map(|j| {
            (0..n)
                .map(|i| fv[i] * (j as f64 * PI * (i as f64 + 0.5) / n as f64).cos())
                .sum::<f64>()
                * 2.0
                / n as f64
        })
        .collect();
    c[0] /= 2.0;
    // T_j(u) as monomials in u.
    let mut tp: Vec<Vec<f64>> = vec![vec![1.0], vec![0.0, 1.0]];
    for j in 2..n {
        let mut p = vec![0.0; j + 1];
        for (k, &v) in tp[j - 1].iter().enumerate() {
            p[k + 1] += 2.0 * v;
        }
        for (k, &v) in tp[j - 2].iter().enumerate() {
            p[k] -= v;
        }
        tp.push(p);
    }
    let mut pu = vec![0.0; n];
    for (j, poly) in tp.iter().enumerate() {
        for (k, &v) in poly.iter().enumerate() {
            pu[k] += c[j] * v;
        }
    }
    // u = alpha·t + beta.
    let (alpha, beta) = (2.0 / (b - a), -(a + b) / (b - a));
    let mut pt = vec![0.0; n];
    for (k, &coef) in pu.iter().enumerate() {
        let mut binom = 1.0;
        for (m, slot) in pt.iter_mut().enumerate().take(k + 1) {
            *slot += coef * binom * alpha.powi(m as i32) * beta.powi((k - m) as i32);
            binom = binom * (k - m) as f64 / (m + 1) as f64;
        }
    }
    for v in &pt {
        println!("    {:e},", *v as f32);
    }
}
