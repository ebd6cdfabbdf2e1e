//! The portable kernel: plain Rust on a 4 x 8 tile (the compiler vectorises it with SSE2 or
//! whatever the target baseline has). Correct anywhere, used when no SIMD kernel applies.

use super::{MicroKernel, PanelElem};
use crate::ops::gelu_f32::gelu_erf_f32;

const MR: usize = 4;
const NR: usize = 8;

/// Always available.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableKernel(());

impl PortableKernel {
    pub(crate) fn new() -> Option<Self> {
        Some(PortableKernel(()))
    }
}

impl MicroKernel for PortableKernel {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256; // B micro-panel 8 KB
    const KC_WHOLE: usize = 256;
    const MC: usize = 64; // A block 64 KB

    unsafe fn tile<E: PanelElem>(
        self,
        k: usize,
        a: *const f32,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        _prefetch: *const u8,
    ) {
        // SAFETY: the caller guarantees k·MR readable f32 at `a` and k·NR panel values at `b`
        // (trait contract).
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(a, k * MR),
                std::slice::from_raw_parts(b, k * NR),
            )
        };
        let mut acc = [[0.0f32; NR]; MR];
        if accumulate {
            for (i, row) in acc.iter_mut().enumerate() {
                // SAFETY: row i of the tile, NR f32 at c + i·ldc, readable (trait contract).
                row.copy_from_slice(unsafe { std::slice::from_raw_parts(c.add(i * ldc), NR) });
            }
        }
        for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
            for (row, &ai) in acc.iter_mut().zip(ap) {
                for (v, &bj) in row.iter_mut().zip(bp) {
                    *v += ai * bj.to_f32();
                }
            }
        }
        if !bias.is_null() {
            // SAFETY: a non-null `bias` points to NR readable f32 (trait contract).
            let bias = unsafe { std::slice::from_raw_parts(bias, NR) };
            for row in &mut acc {
                for (v, &bj) in row.iter_mut().zip(bias) {
                    *v += bj;
                    if gelu {
                        *v = gelu_erf_f32(*v);
                    }
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row i of the tile, NR writable f32 at c + i·ldc, not shared (contract).
            unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) }.copy_from_slice(row);
        }
    }
}
