//! The f32 vectorised GELU: every kernel equals the scalar twin bit for bit, and the error
//! against the f64 reference stays within the bounds quoted in the `gelu_f32` module docs.

mod common;

use common::{bits, with_threads};
use koembed_tensor::{
    gelu_erf, gelu_erf_f32, gelu_erf_f32_inplace, gelu_erf_f32_inplace_with, GeluKernel,
};
use rayon::prelude::*;

/// Max abs error against [`gelu_ref`] on [-10, 10] (module docs).
const ABS_BOUND: f64 = 2.3843e-7;
/// Max relative error against [`gelu_ref`] for x in (-6, -1e-30] (module docs).
const REL_BOUND: f64 = 3.1e-7;
/// Max distance in ulps from the correctly rounded [`gelu_erf`] for x in (-6, 10].
const ULP_BOUND: u64 = 4;

fn gelu_ref(x: f32) -> f64 {
    let x = x as f64;
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// Φ(-a) = 0.5·erfc(a/√2), the factor that `gelu_erf_f32` approximates piecewise.
fn phi_neg(a: f64) -> f64 {
    0.5 * libm::erfc(a * std::f64::consts::FRAC_1_SQRT_2)
}

// The interval layout of `gelu_erf_f32` (module docs): interval k of a = |x| is the integer
// nearest to v(a) = a·(a·S + QS), v reaches 14.5 (the end of the last polynomial interval) at
// a = CUT, and a >= CUT falls in interval 15.
const CUT: f64 = 6.0;
const Q: f64 = 2.0;
const MAGIC: f32 = 8_388_608.0;

/// (S, QS): v(a) = a·(a + Q)·s, so that v(CUT) = 14.5.
fn layout() -> (f32, f32) {
    let s = (14.5 / (CUT * (CUT + Q))) as f32;
    (s, (Q * s as f64) as f32)
}

/// The interval of a >= 0 as the kernels compute it, not yet wrapped to 4 bits (so monotonic).
fn interval(a: f32) -> u32 {
    let (s, qs) = layout();
    a.mul_add(s, qs).mul_add(a, MAGIC).to_bits() - MAGIC.to_bits()
}

/// The first f32 of each interval k = 0..=15 (the last one is the cut, 6).
fn interval_starts() -> Vec<f32> {
    (0..16)
        .map(|k| {
            let (mut lo, mut hi) = (0u32, 10.0f32.to_bits());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if interval(f32::from_bits(mid)) >= k {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            f32::from_bits(lo)
        })
        .collect()
}

/// 4,000,001 evenly spaced points of [-10, 10] plus the neighbourhoods of the interval ends.
fn dense_grid() -> Vec<f32> {
    let n = 4_000_000;
    let mut xs: Vec<f32> = (0..=n)
        .map(|i| (-10.0 + 20.0 * (i as f64 / n as f64)) as f32)
        .collect();
    let mut points = interval_starts();
    points.extend([1e-30, 10.0]);
    for b in points {
        for d in -2000i32..=2000 {
            xs.push(f32::from_bits((b.to_bits() as i32 + d).max(0) as u32));
            xs.push(-f32::from_bits((b.to_bits() as i32 + d).max(0) as u32));
        }
    }
    xs
}

/// Every 61st f32 of (-6, -1e-30], so that each interval is sampled at millions of points.
fn negative_walk() -> Vec<f32> {
    (1e-30f32.to_bits()..6.0f32.to_bits())
        .step_by(61)
        .map(|b| -f32::from_bits(b))
        .collect()
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

/// (max, at) of `err(x)` over `xs`.
fn max_over(xs: &[f32], err: impl Fn(f32) -> f64 + Sync) -> (f64, f32) {
    xs.par_iter()
        .map(|&x| (err(x), x))
        .reduce(|| (0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
}

#[test]
fn error_bound_on_the_dense_grid() {
    let xs = dense_grid();
    let (abs, at) = max_over(&xs, |x| {
        if x.abs() <= 10.0 {
            (gelu_erf_f32(x) as f64 - gelu_ref(x)).abs()
        } else {
            0.0
        }
    });
    println!("gelu_erf_f32 on [-10, 10]: max abs error {abs:e} at {at}");
    assert!(abs <= ABS_BOUND, "max abs error {abs:e} at {at}");
}

#[test]
fn relative_error_for_negative_x() {
    let mut xs = dense_grid();
    xs.retain(|&x| x > -CUT as f32 && x <= -1e-30);
    xs.extend(negative_walk());
    let (rel, at) = max_over(&xs, |x| {
        let want = gelu_ref(x);
        (gelu_erf_f32(x) as f64 - want).abs() / want.abs()
    });
    println!(
        "gelu_erf_f32 on (-6, -1e-30] ({} points): max rel error {rel:e} at {at}",
        xs.len()
    );
    assert!(rel <= REL_BOUND, "max rel error {rel:e} at {at}");
}

#[test]
fn few_ulps_from_the_correctly_rounded_gelu() {
    let mut xs = dense_grid();
    xs.retain(|&x| x > -CUT as f32 && x <= 10.0);
    xs.extend(negative_walk());
    let (ulps, at) = max_over(&xs, |x| {
        (gelu_erf_f32(x).to_bits() as i64 - gelu_erf(x).to_bits() as i64).unsigned_abs() as f64
    });
    println!("gelu_erf_f32 on (-6, 10]: max {ulps} ulp from gelu_erf at {at}");
    assert!(ulps as u64 <= ULP_BOUND, "{ulps} ulp from gelu_erf at {at}");
}

#[test]
fn beyond_the_cut() {
    // x >= 6: the exact value rounds to x itself (x·Φ(-x) is below half an ulp of x from
    // x = 5.4 on), and x is what comes out.
    for i in 0..=400_000 {
        let x = 6.0 + i as f32 * 1e-5;
        assert_eq!(gelu_ref(x) as f32, x, "{x}");
        assert_eq!(gelu_erf_f32(x), x, "{x}");
    }
    // x <= -6 gives -0, against exact values of at most 6·Φ(-6) = 5.92e-9 in magnitude.
    assert!(gelu_ref(-6.0).abs() < 5.92e-9);
    for i in 0..=400_000 {
        let x = -6.0 - i as f32 * 1e-5;
        assert_eq!(gelu_erf_f32(x).to_bits(), (-0.0f32).to_bits(), "{x}");
    }
}

#[test]
fn special_values() {
    let g = gelu_erf_f32;
    assert_eq!(g(0.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(g(-0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(g(f32::INFINITY), f32::INFINITY);
    assert_eq!(g(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
    assert!(g(f32::NAN).is_nan());
    assert!(g(-f32::NAN).is_nan());
    assert_eq!(g(f32::MAX), f32::MAX);
    assert_eq!(g(-f32::MAX).to_bits(), (-0.0f32).to_bits());
    assert_eq!(g(20.0), 20.0);
    // Tiny: gelu(x) = x/2 (exact halving, denormals included).
    for x in [1e-20f32, 1e-38, -1e-20, f32::MIN_POSITIVE, 1e-40, -1e-40] {
        assert_eq!(g(x), x / 2.0, "gelu({x:e})");
    }
    // Beyond [-10, 10] the error stays tiny in absolute terms.
    for i in 0..=100_000 {
        let x = -1e4 + 2e4 * i as f32 / 1e5;
        assert!(
            (g(x) as f64 - gelu_ref(x)).abs()
                <= 1e-3 * f32::EPSILON as f64 * x.abs() as f64 + ABS_BOUND,
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

/// The bounds over every f32 rather than a grid: max abs error on [-10, 10], max relative error
/// on (-6, -1e-30], max ulps from `gelu_erf` on (-6, 10]. About 25 s on one core.
/// `cargo test --release -p koembed-tensor --test gelu_f32 -- --ignored exhaustive --nocapture`
#[test]
#[ignore = "every f32 of [-10, 10] (slow; the module docs quote its numbers)"]
fn exhaustive_error_over_every_f32() {
    let kernel = GeluKernel::detect();
    let end = 10.0f32.to_bits() + 1;
    let (abs, rel, ulps) = (0..end.div_ceil(1 << 16))
        .into_par_iter()
        .map(|block| {
            let (start, end) = (block << 16, ((block + 1) << 16).min(end));
            let xs: Vec<f32> = (start..end)
                .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
                .collect();
            let mut gelu = xs.clone();
            gelu_erf_f32_inplace_with(kernel, &mut gelu);
            let mut worst = [(0.0f64, 0.0f32); 3];
            for (&x, &got) in xs.iter().zip(&gelu) {
                let want = gelu_ref(x);
                let mut errs = [(got as f64 - want).abs(), 0.0, 0.0];
                if x > -CUT as f32 && x <= -1e-30 {
                    errs[1] = errs[0] / want.abs();
                }
                if x > -CUT as f32 {
                    errs[2] =
                        (got.to_bits() as i64 - gelu_erf(x).to_bits() as i64).unsigned_abs() as f64;
                }
                for (w, e) in worst.iter_mut().zip(errs) {
                    if e > w.0 {
                        *w = (e, x);
                    }
                }
            }
            worst
        })
        .reduce(
            || [(0.0, 0.0); 3],
            |a, b| std::array::from_fn(|i| if b[i].0 > a[i].0 { b[i] } else { a[i] }),
        )
        .into();
    println!(
        "every f32: max abs error {:e} at {} on [-10, 10]; max rel error {:e} at {} on \
         (-6, -1e-30]; max {} ulp from gelu_erf at {} on (-6, 10]",
        abs.0, abs.1, rel.0, rel.1, ulps.0, ulps.1
    );
    assert!(abs.0 <= ABS_BOUND && rel.0 <= REL_BOUND && ulps.0 as u64 <= ULP_BOUND);
}

/// Householder least squares: the c minimising |rows·c - rhs|.
#[allow(clippy::needless_range_loop)] // Matrix indices read as in the textbook.
fn least_squares(mut rows: Vec<Vec<f64>>, mut rhs: Vec<f64>) -> Vec<f64> {
    let (m, n) = (rows.len(), rows[0].len());
    for k in 0..n {
        let norm = (k..m).map(|i| rows[i][k] * rows[i][k]).sum::<f64>().sqrt();
        let alpha = if rows[k][k] > 0.0 { -norm } else { norm };
        let mut v: Vec<f64> = (k..m).map(|i| rows[i][k]).collect();
        v[0] -= alpha;
        let vv = v.iter().map(|x| x * x).sum::<f64>();
        for j in k..n {
            let d = (k..m).map(|i| v[i - k] * rows[i][j]).sum::<f64>() * 2.0 / vv;
            for i in k..m {
                rows[i][j] -= d * v[i - k];
            }
        }
        let d = (k..m).map(|i| v[i - k] * rhs[i]).sum::<f64>() * 2.0 / vv;
        for i in k..m {
            rhs[i] -= d * v[i - k];
        }
    }
    let mut c = vec![0.0; n];
    for k in (0..n).rev() {
        c[k] = (rhs[k] - ((k + 1)..n).map(|j| rows[k][j] * c[j]).sum::<f64>()) / rows[k][k];
    }
    c
}

/// The polynomial p(u) = Σ c_j u^j of degree `deg` with c_0 = `c0` that minimises
/// max |p(u)/f(u) - 1| over [lo, hi] (Lawson's iteratively reweighted least squares on 402
/// Chebyshev points), and that max.
fn fit_relative(f: impl Fn(f64) -> f64, lo: f64, hi: f64, deg: usize, c0: f64) -> (Vec<f64>, f64) {
    use std::f64::consts::PI;
    let m = 400;
    let us: Vec<f64> = (0..m)
        .map(|i| lo + (hi - lo) * (1.0 + (PI * (i as f64 + 0.5) / m as f64).cos()) / 2.0)
        .chain([lo, hi])
        .collect();
    let fs: Vec<f64> = us.iter().map(|&u| f(u)).collect();
    // Columns in u/scale, for conditioning.
    let scale = lo.abs().max(hi.abs());
    let eval = |c: &[f64], u: f64| c.iter().rev().fold(0.0, |acc, &cj| acc * u + cj);
    let mut w = vec![1.0f64; us.len()];
    let mut best = (vec![], f64::INFINITY);
    for _ in 0..1000 {
        let rows = us
            .iter()
            .zip(&fs)
            .zip(&w)
            .map(|((&u, &fu), &wi)| {
                (1..=deg)
                    .map(|j| wi.sqrt() * (u / scale).powi(j as i32) / fu)
                    .collect()
            })
            .collect();
        let rhs = fs
            .iter()
            .zip(&w)
            .map(|(&fu, &wi)| wi.sqrt() * (1.0 - c0 / fu))
            .collect();
        let c: Vec<f64> = [c0]
            .into_iter()
            .chain(
                least_squares(rows, rhs)
                    .iter()
                    .enumerate()
                    .map(|(j, cj)| cj / scale.powi(j as i32 + 1)),
            )
            .collect();
        let err: Vec<f64> = us
            .iter()
            .zip(&fs)
            .map(|(&u, &fu)| (eval(&c, u) / fu - 1.0).abs())
            .collect();
        let max = err.iter().cloned().fold(0.0, f64::max);
        if max < best.1 {
            best = (c, max);
        }
        // Weight each point by its error: the weights gather where the error peaks.
        let total: f64 = w.iter().zip(&err).map(|(wi, e)| wi * e).sum();
        for (wi, e) in w.iter_mut().zip(&err) {
            *wi *= e / total;
        }
    }
    best
}

/// Re-derives the tables of `gelu_erf_f32` and prints them as Rust constants. For each of the
/// 15 intervals [lo, hi] of `interval_starts`: the expansion point e (0 in interval 0, else the
/// right end, where Φ(-a) is smallest, but at most 2·lo so that a - e is exact), then the
/// degree-6 polynomial in u = a - e with the least max relative error against Φ(-a) (`libm`,
/// f64) whose u^0 coefficient is Φ(-e) rounded to f32 (0.5 in interval 0, so that tiny x give
/// exactly x/2), all coefficients rounded to f32. Interval 15 (a >= 6) is all zeros.
/// `cargo test --release -p koembed-tensor --test gelu_f32 -- --ignored refit --nocapture`
#[test]
#[ignore = "prints the tables fitted for gelu_erf_f32 (a developer's step)"]
fn refit_gelu_coefficients() {
    const DEG: usize = 6;
    let (s, qs) = layout();
    let starts = interval_starts();
    let mut e = [0.0f32; 16];
    let mut c = [[0.0f32; 16]; DEG + 1];
    let mut worst: f64 = 0.0;
    for k in 0..15 {
        let (lo, hi) = (starts[k], f32::from_bits(starts[k + 1].to_bits() - 1));
        e[k] = if k == 0 { 0.0 } else { hi.min(2.0 * lo) };
        let ek = e[k] as f64;
        let (p, err) = fit_relative(
            |u| phi_neg(ek + u),
            lo as f64 - ek,
            hi as f64 - ek,
            DEG,
            phi_neg(ek) as f32 as f64,
        );
        println!("// interval {k}: [{lo}, {hi}], max rel fit error {err:.2e}");
        worst = worst.max(err);
        for (row, pj) in c.iter_mut().zip(&p) {
            row[k] = *pj as f32;
        }
    }
    println!("// max rel fit error {worst:.3e}");
    println!(
        "const S: f32 = {s:e};\nconst QS: f32 = {qs:e};\nconst A_CUT: f32 = {:e};",
        starts[15]
    );
    let list = |v: &[f32]| {
        v.iter()
            .map(|x| format!("{x:e}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("const E: [f32; 16] = [{}];", list(&e));
    println!("const C: [[f32; 16]; {}] = [", DEG + 1);
    for row in &c {
        println!("    [{}],", list(row));
    }
    println!("];");
}
