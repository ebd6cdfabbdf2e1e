//! Elementwise and row-wise kernels of an encoder layer, plus attention over one sequence.
//!
//! Every op checks its shapes before it writes anything. Row-wise ops run rows in parallel
//! (rayon) when the matrix is large; each row is computed by the same sequential code whatever
//! thread runs it, so results are bit-identical for any thread count.

pub mod attention;
#[cfg(target_arch = "x86_64")]
mod attention_amx;
pub mod gelu;
pub mod gelu_f32;
pub mod layernorm;
pub mod softmax;

use rayon::prelude::*;

/// Below this many elements a row-wise op runs on the calling thread.
const PAR_MIN_ELEMS: usize = 16 * 1024;
/// Roughly how many elements one rayon task gets (whole rows).
const PAR_TASK_ELEMS: usize = 4 * 1024;

/// Runs `f` on each `cols`-long row of `x`, in parallel if `x` is large.
pub(crate) fn for_each_row(x: &mut [f32], cols: usize, f: impl Fn(&mut [f32]) + Sync) {
    if cols == 0 {
        return;
    }
    if x.len() < PAR_MIN_ELEMS {
        x.chunks_exact_mut(cols).for_each(f);
    } else {
        x.par_chunks_exact_mut(cols)
            .with_min_len(rows_per_task(cols))
            .for_each(&f);
    }
}

/// Runs `f` on each pair of `cols`-long rows of `x` and `y` (same length), in parallel if large.
pub(crate) fn for_each_row_pair(
    x: &mut [f32],
    y: &[f32],
    cols: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) {
    debug_assert_eq!(x.len(), y.len());
    if cols == 0 {
        return;
    }
    if x.len() < PAR_MIN_ELEMS {
        x.chunks_exact_mut(cols)
            .zip(y.chunks_exact(cols))
            .for_each(|(a, b)| f(a, b));
    } else {
        x.par_chunks_exact_mut(cols)
            .zip(y.par_chunks_exact(cols))
            .with_min_len(rows_per_task(cols))
            .for_each(|(a, b)| f(a, b));
    }
}

fn rows_per_task(cols: usize) -> usize {
    (PAR_TASK_ELEMS / cols).max(1)
}
