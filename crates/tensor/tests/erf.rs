//! erf and GELU against libm's f64 erf, taken as exact.
//!
//! The dense-grid tests run by default; `every_f32_*` walk all 2^32 inputs and are `#[ignore]`d
//! (a few minutes on 2 cores): `cargo test --release -p koembed-tensor --test erf -- --ignored
//! --nocapture` prints the bounds quoted in `erf`'s and `gelu_erf`'s docs.

use koembed_tensor::{erf, gelu_erf, gelu_erf_inplace};
use rayon::prelude::*;

/// Error statistics of f32 results against an f64 reference.
#[derive(Clone, Copy, Debug, Default)]
struct Err {
    max_abs: f64,
    max_abs_at: f32,
    max_ulp: f64,
    max_ulp_at: f32,
    count: u64,
    /// Results that differ from the f32 nearest the reference.
    not_nearest: u64,
}

impl Err {
    fn add(mut self, x: f32, got: f32, want: f64) -> Err {
        self.count += 1;
        if got.to_bits() != (want as f32).to_bits() {
            self.not_nearest += 1;
        }
        let abs = (got as f64 - want).abs();
        if abs > self.max_abs {
            self.max_abs = abs;
            self.max_abs_at = x;
        }
        let ulp = abs / ulp_f32(want);
        if ulp > self.max_ulp {
            self.max_ulp = ulp;
            self.max_ulp_at = x;
        }
        self
    }

    fn merge(self, o: Err) -> Err {
        let mut m = if o.max_abs > self.max_abs {
            Err {
                max_ulp: self.max_ulp,
                max_ulp_at: self.max_ulp_at,
                ..o
            }
        } else {
            self
        };
        if o.max_ulp > m.max_ulp {
            m.max_ulp = o.max_ulp;
            m.max_ulp_at = o.max_ulp_at;
        }
        m.count = self.count + o.count;
        m.not_nearest = self.not_nearest + o.not_nearest;
        m
    }
}

/// The spacing of f32 values in the binade of |y|: 2^(e - 23) for 2^e <= |y| < 2^(e+1), and
/// 2^-149 in the subnormal range. A correctly rounded result is within 0.5 of it.
fn ulp_f32(y: f64) -> f64 {
    let e = ((y.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    2f64.powi(e.max(-126) - 23)
}

fn gelu_ref(x: f32) -> f64 {
    let x = x as f64;
    // = 0.5·x·(1 + erf(x/√2)), without the cancellation for negative x.
    0.5 * x * libm::erfc(-x * std::f64::consts::FRAC_1_SQRT_2)
}

/// 4,000,001 evenly spaced points of [-10, 10] plus every f32 within 2000 ulps of the interval
/// boundaries of the approximation.
fn dense_grid() -> Vec<f32> {
    let n = 4_000_000;
    let mut xs: Vec<f32> = (0..=n)
        .map(|i| (-10.0 + 20.0 * (i as f64 / n as f64)) as f32)
        .collect();
    for b in [
        0.84375f32,
        1.25,
        (1.0f64 / 0.35) as f32,
        6.0,
        6.0 * std::f32::consts::SQRT_2,
    ] {
        for d in -2000i32..=2000 {
            let x = f32::from_bits((b.to_bits() as i32 + d) as u32);
            xs.push(x);
            xs.push(-x);
        }
    }
    xs
}

#[test]
fn erf_dense_grid_is_nearest_f32_of_libm() {
    let e = dense_grid()
        .par_iter()
        .fold(Err::default, |e, &x| e.add(x, erf(x), libm::erf(x as f64)))
        .reduce(Err::default, Err::merge);
    println!("erf over the dense grid of [-10, 10]: {e:?}");
    assert!(
        e.max_abs <= 2.99e-8 && e.max_ulp <= 0.5 && e.not_nearest == 0,
        "{e:?}"
    );
}

#[test]
fn gelu_dense_grid_is_nearest_f32_of_reference() {
    let e = dense_grid()
        .par_iter()
        .fold(Err::default, |e, &x| e.add(x, gelu_erf(x), gelu_ref(x)))
        .reduce(Err::default, Err::merge);
    println!("gelu_erf over the dense grid of [-10, 10]: {e:?}");
    assert!(
        e.max_abs <= 2.39e-7 && e.max_ulp <= 0.5 && e.not_nearest == 0,
        "{e:?}"
    );
}

#[test]
fn erf_special_values() {
    assert_eq!(erf(0.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(erf(-0.0).to_bits(), (-0.0f32).to_bits());
    assert_eq!(erf(f32::INFINITY), 1.0);
    assert_eq!(erf(f32::NEG_INFINITY), -1.0);
    assert!(erf(f32::NAN).is_nan());
    assert_eq!(erf(f32::MAX), 1.0);
    assert_eq!(erf(-f32::MAX), -1.0);
    assert_eq!(erf(4.0), 1.0);
    // Tiny and subnormal inputs: erf(x) = x·2/√π, correctly rounded.
    let two_over_sqrt_pi = std::f64::consts::FRAC_2_SQRT_PI;
    for x in [
        f32::from_bits(1),
        f32::from_bits(0x007f_ffff),
        f32::MIN_POSITIVE,
        1e-30,
        1e-10,
        3.7e-9,
    ] {
        assert_eq!(erf(x), (x as f64 * two_over_sqrt_pi) as f32, "erf({x:e})");
        assert_eq!(erf(-x), -erf(x), "odd at {x:e}");
    }
    // A few known values (correctly rounded f32 of the true erf).
    assert_eq!(erf(0.5), 0.520_499_9);
    assert_eq!(erf(1.0), 0.842_700_8);
    assert_eq!(erf(2.0), 0.995_322_3);
}

#[test]
fn gelu_special_values() {
    assert_eq!(gelu_erf(0.0).to_bits(), 0.0f32.to_bits());
    assert_eq!(gelu_erf(f32::INFINITY), f32::INFINITY);
    assert_eq!(gelu_erf(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
    assert!(gelu_erf(f32::NAN).is_nan());
    assert_eq!(gelu_erf(f32::MAX), f32::MAX);
    assert_eq!(gelu_erf(-f32::MAX), -0.0);
    assert_eq!(gelu_erf(20.0), 20.0);
    for x in [1.0, -1.0, 0.5, -3.0, -7.5] {
        assert_eq!(gelu_erf(x), gelu_ref(x) as f32, "gelu_erf({x})");
    }
    // Tiny: gelu(x) ~ x/2.
    assert_eq!(gelu_erf(1e-20), 5e-21);
    // Not the tanh approximation, which is off by up to ~5e-4 (here ~2e-4).
    let tanh_gelu = |x: f64| {
        let c = (2.0 / std::f64::consts::PI).sqrt();
        0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
    };
    assert!((gelu_erf(-2.5) as f64 - tanh_gelu(-2.5)).abs() > 1e-4);
}

#[test]
fn gelu_inplace_matches_scalar_at_every_length() {
    // Lengths below and above the parallel chunk size.
    for len in [0, 1, 7, 8191, 8192, 8193, 70_001] {
        let xs: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 8.0).collect();
        let mut got = xs.clone();
        gelu_erf_inplace(&mut got);
        for (i, (&g, &x)) in got.iter().zip(&xs).enumerate() {
            assert_eq!(g.to_bits(), gelu_erf(x).to_bits(), "len {len} index {i}");
        }
    }
}

fn every_f32(f: impl Fn(f32) -> (f32, f64) + Sync) -> (Err, Err) {
    // (error over [-10, 10], error over all finite inputs)
    // One rayon task per block of 2^16 consecutive bit patterns.
    (0u32..1 << 16)
        .into_par_iter()
        .map(|hi| {
            let (mut inside, mut all) = (Err::default(), Err::default());
            for lo in 0..1u32 << 16 {
                let x = f32::from_bits(hi << 16 | lo);
                if !x.is_finite() {
                    continue;
                }
                let (got, want) = f(x);
                all = all.add(x, got, want);
                if x.abs() <= 10.0 {
                    inside = inside.add(x, got, want);
                }
            }
            (inside, all)
        })
        .reduce(
            || (Err::default(), Err::default()),
            |a, b| (a.0.merge(b.0), a.1.merge(b.1)),
        )
}

#[test]
#[ignore = "exhaustive over all 2^32 f32 inputs: minutes"]
fn every_f32_erf() {
    let (inside, all) = every_f32(|x| (erf(x), libm::erf(x as f64)));
    println!("erf, every f32 in [-10, 10]: {inside:?}");
    println!("erf, every finite f32: {all:?}");
    assert!(inside.max_abs <= 2.99e-8 && all.max_ulp <= 0.5 && all.not_nearest == 0);
}

#[test]
#[ignore = "exhaustive over all 2^32 f32 inputs: minutes"]
fn every_f32_gelu() {
    let (inside, all) = every_f32(|x| (gelu_erf(x), gelu_ref(x)));
    println!("gelu_erf, every f32 in [-10, 10]: {inside:?}");
    println!("gelu_erf, every finite f32: {all:?}");
    assert!(inside.max_abs <= 2.39e-7 && all.max_ulp <= 0.5 && all.not_nearest == 0);
}
