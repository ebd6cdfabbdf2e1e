//! The portable int8 kernel: i32 dot products in plain Rust over the packed panel layout of
//! [`crate::gemm::int8`]. Correct anywhere; used when no SIMD kernel applies.

use crate::gemm::int8::{dequantize, Int8Epilogue, Int8MicroKernel, Int8Tile, MR, NR};

/// Always available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableInt8Kernel(());

impl PortableInt8Kernel {
    pub(crate) fn new() -> Option<Self> {
        Some(PortableInt8Kernel(()))
    }
}

impl Int8MicroKernel for PortableInt8Kernel {
    fn accumulate(self, t: &Int8Tile<'_>, acc: &mut [[i32; NR]; MR]) {
        let kcb = t.kcb();
        for (i, row_acc) in acc.iter_mut().enumerate() {
            let a = &t.a[i * t.lda..][..kcb];
            for (a_quad, b_quad) in a.chunks_exact(4).zip(t.b.chunks_exact(4 * NR)) {
                for (v, b_col) in row_acc.iter_mut().zip(b_quad.chunks_exact(4)) {
                    *v += a_quad
                        .iter()
                        .zip(b_col)
                        .map(|(&x, &w)| x as i32 * w as i32)
                        .sum::<i32>();
                }
            }
        }
    }

    fn finish(self, acc: &[[i32; NR]; MR], e: &Int8Epilogue<'_>, out: &mut [[f32; NR]; MR]) {
        for ((out_row, acc_row), &row_scale) in out.iter_mut().zip(acc).zip(e.row_scales) {
            for (j, (o, &a)) in out_row.iter_mut().zip(acc_row).enumerate() {
                *o = dequantize(a, row_scale, e.col_scales[j], e.bias[j], e.gelu);
            }
        }
    }
}
