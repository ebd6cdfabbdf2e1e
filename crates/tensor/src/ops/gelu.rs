//! The error function and exact (erf) GELU, `0.5·x·(1 + erf(x/√2))`, the activation of
//! `hidden_act = "gelu"` (not the tanh approximation; see numerics.md).
//!
//! erf is evaluated in f64 and rounded to f32 once. The f64 evaluation follows the rational
//! approximations of FreeBSD's `s_erf.c` (fdlibm, copyright notice below), whose documented error
//! is below 2^-57 relative on every interval. Because the result is rounded to f32, two of
//! fdlibm's tricks are dropped: the split of `exp(-x²)` into two calls (the f64 rounding of
//! `-x²` moves the result by < 4e-15 relative, far below an f32 ulp) and the separate tiny-|x|
//! branch (f32 inputs are far above f64's underflow range, so the general formula covers them).
//!
//! Scalar and branchy: this is the correct-first reference. A vectorised f32 erf, if added
//! later, must be tested against it.
//
// ====================================================
// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
//
// Developed at SunPro, a Sun Microsystems, Inc. business.
// Permission to use, copy, modify, and distribute this
// software is freely granted, provided that this notice
// is preserved.
// ====================================================

// fdlibm's coefficients are kept verbatim (more digits than an f64 holds) for traceability.
#![allow(clippy::excessive_precision)]

use std::f64::consts::FRAC_1_SQRT_2;

use rayon::prelude::*;

/// erf(x) for f32, evaluated in f64 and rounded once.
///
/// Measured against `libm::erf` (f64) of the same input, over **every finite f32** (exhaustive
/// run, `tests/erf.rs`): the result is the f32 nearest to libm's value for all 4,278,190,080
/// inputs (so within 0.5 ulp), and the maximum absolute error is **2.98e-8** (= 2^-25, the
/// rounding to f32 just below 1.0; at x = 0.516517). The default test suite checks the same on a
/// dense grid of 4 million points of [-10, 10] plus the approximation's interval boundaries.
///
/// Special values: erf(±0) = ±0, erf(±inf) = ±1, erf(NaN) = NaN, erf(x) = ±1 from |x| ~ 3.92
/// on (where rounding to f32 demands it); tiny and subnormal x give x·2/√π correctly rounded.
pub fn erf(x: f32) -> f32 {
    erf_f64(x as f64) as f32
}

/// GELU with the exact error function, `0.5·x·(1 + erf(x/√2))`, evaluated in f64 and rounded to
/// f32 once.
///
/// Computed as the equal `0.5·x·erfc(-x/√2)`, which avoids the cancellation in `1 + erf(x/√2)`
/// for negative x, so even the tiny outputs of very negative inputs are accurate to the ulp.
///
/// Measured against `0.5·x·libm::erfc(-x/√2)` in f64 over **every finite f32** (exhaustive run,
/// `tests/erf.rs`): the result is the f32 nearest to that reference for every input, and the
/// maximum absolute error over [-10, 10] is **2.38e-7** (half an f32 ulp of outputs in [4, 8)).
/// (PyTorch's own f32 GELU is less exact than this: its vectorised erf is an approximation and
/// `1 + erf` cancels for negative x; both effects are far below numerics.md's tolerances.)
///
/// Special values: `gelu_erf(-inf)` is -0, the limit (the formula itself would give NaN);
/// `gelu_erf(inf)` is inf; NaN stays NaN; ±0 stays ±0.
pub fn gelu_erf(x: f32) -> f32 {
    if x == f32::NEG_INFINITY {
        return -0.0;
    }
    let x = x as f64;
    (0.5 * x * erfc_f64(-x * FRAC_1_SQRT_2)) as f32
}

/// x = GELU(x) elementwise, any shape (see [`gelu_erf`]).
///
/// Large inputs are split into fixed chunks across rayon's threads; each element is computed on
/// its own, so the result does not depend on the thread count.
pub fn gelu_erf_inplace(x: &mut [f32]) {
    const CHUNK: usize = 8192;
    let apply = |chunk: &mut [f32]| chunk.iter_mut().for_each(|v| *v = gelu_erf(*v));
    if x.len() <= CHUNK {
        apply(x);
    } else {
        x.par_chunks_mut(CHUNK).for_each(apply);
    }
}

/// erf in f64 (see the module comment for the method and its provenance).
pub(crate) fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let ax = x.abs();
    let y = if ax < 0.84375 {
        // erf(x) = x + x·R(x²), R = P/Q; |R - (erf(x)-x)/x| <= 2^-57.90.
        // Exact at 0 (keeps the sign of -0) and accurate down to f32 subnormals.
        let z = x * x;
        let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
        let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
        return x + x * (r / s);
    } else if ax < 1.25 {
        // erf(1 + s) = ERX + P1(s)/Q1(s); |P1/Q1 - (erf(1+s) - ERX)| <= 2^-59.06.
        let s = ax - 1.0;
        let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
        let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
        ERX + p / q
    } else if ax < 6.0 {
        1.0 - erfc_tail(ax)
    } else {
        // erfc(6) < 2.2e-17: 1 - erfc rounds to 1 even in f64.
        1.0
    };
    y.copysign(x)
}

/// erfc in f64, accurate in relative terms for large positive x too (no `1 - erf` cancellation).
pub(crate) fn erfc_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        // erfc(x) = 1 + erf(|x|): no cancellation.
        return 1.0 + erf_f64(-x);
    }
    if x < 0.84375 {
        // erf(x) < 0.77 here, so 1 - erf(x) loses at most 2 bits of f64.
        1.0 - erf_f64(x)
    } else if x < 1.25 {
        let s = x - 1.0;
        let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
        let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
        (1.0 - ERX) - p / q
    } else if x < 28.0 {
        erfc_tail(x)
    } else {
        // erfc(28) < 1e-341: below f64's smallest subnormal.
        0.0
    }
}

/// erfc(x) for 1.25 <= x < 28: exp(-x² - 0.5625 + R(1/x²)/S(1/x²)) / x, where R/S approximates
/// log(x·erfc(x)) + x² - 0.5625 to 2^-61.
fn erfc_tail(x: f64) -> f64 {
    let s = 1.0 / (x * x);
    let (r, big_s) = if x < 1.0 / 0.35 {
        (
            RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
            1.0 + s
                * (SA1
                    + s * (SA2
                        + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
        )
    } else {
        (
            RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
            1.0 + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
        )
    };
    (-x * x - 0.5625 + r / big_s).exp() / x
}

// erf(1) rounded to 24 bits (fdlibm's `erx`).
const ERX: f64 = 8.45062911510467529297e-01;
// erf on [0, 0.84375].
const PP0: f64 = 1.28379167095512558561e-01;
const PP1: f64 = -3.25042107247001499370e-01;
const PP2: f64 = -2.84817495755985104766e-02;
const PP3: f64 = -5.77027029648944159157e-03;
const PP4: f64 = -2.37630166566501626084e-05;
const QQ1: f64 = 3.97917223959155352819e-01;
const QQ2: f64 = 6.50222499887672944485e-02;
const QQ3: f64 = 5.08130628187576562776e-03;
const QQ4: f64 = 1.32494738004321644526e-04;
const QQ5: f64 = -3.96022827877536812320e-06;
// erf on [0.84375, 1.25].
const PA0: f64 = -2.36211856075265944077e-03;
const PA1: f64 = 4.14856118683748331666e-01;
const PA2: f64 = -3.72207876035701323847e-01;
const PA3: f64 = 3.18346619901161753674e-01;
const PA4: f64 = -1.10894694282396677476e-01;
const PA5: f64 = 3.54783043256182359371e-02;
const PA6: f64 = -2.16637559486879084300e-03;
const QA1: f64 = 1.06420880400844228286e-01;
const QA2: f64 = 5.40397917702171048937e-01;
const QA3: f64 = 7.18286544141962662868e-02;
const QA4: f64 = 1.26171219808761642112e-01;
const QA5: f64 = 1.36370839120290507362e-02;
const QA6: f64 = 1.19844998467991074170e-02;
// erfc on [1.25, 1/0.35].
const RA0: f64 = -9.86494403484714822705e-03;
const RA1: f64 = -6.93858572707181764372e-01;
const RA2: f64 = -1.05586262253232909814e+01;
const RA3: f64 = -6.23753324503260060396e+01;
const RA4: f64 = -1.62396669462573470355e+02;
const RA5: f64 = -1.84605092906711035994e+02;
const RA6: f64 = -8.12874355063065934246e+01;
const RA7: f64 = -9.81432934416914548592e+00;
const SA1: f64 = 1.96512716674392571292e+01;
const SA2: f64 = 1.37657754143519042600e+02;
const SA3: f64 = 4.34565877475229228821e+02;
const SA4: f64 = 6.45387271733267880336e+02;
const SA5: f64 = 4.29008140027567833386e+02;
const SA6: f64 = 1.08635005541779435134e+02;
const SA7: f64 = 6.57024977031928170135e+00;
const SA8: f64 = -6.04244152148580987438e-02;
// erfc on [1/0.35, 28).
const RB0: f64 = -9.86494292470009928597e-03;
const RB1: f64 = -7.99283237680523006574e-01;
const RB2: f64 = -1.77579549177547519889e+01;
const RB3: f64 = -1.60636384855821916062e+02;
const RB4: f64 = -6.37566443368389627722e+02;
const RB5: f64 = -1.02509513161107724954e+03;
const RB6: f64 = -4.83519191608651397019e+02;
const SB1: f64 = 3.03380607434824582924e+01;
const SB2: f64 = 3.25792512996573918826e+02;
const SB3: f64 = 1.53672958608443695994e+03;
const SB4: f64 = 3.19985821950859553908e+03;
const SB5: f64 = 2.55305040643316442583e+03;
const SB6: f64 = 4.74528541206955367215e+02;
const SB7: f64 = -2.24409524465858183362e+01;
