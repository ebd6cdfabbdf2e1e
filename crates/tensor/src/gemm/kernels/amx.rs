//! AMX bf16 kernel: `tdpbf16ps` on 16 x 16 f32 tiles, a 32 x 32 register tile of four of them.
//!
//! A K step is a pair of k, as for [`super::x86::Avx512Bf16Kernel`]: A's "f32" elements are two
//! bf16 (the driver's `bf16_pairs`), B's panels hold per step and column the two k side by side
//! (the layout `tdpbf16ps` reads: a B tile row is one step of 16 columns). One instruction
//! multiplies 16 rows x 16 steps by 16 steps x 16 columns: 8,192 products.
//!
//! # Rounding
//! Not one f32 chain per output: measured on the Xeon, each pair's two products are summed and
//! rounded to f32, and the 16 pairs of an instruction are summed before they reach the
//! accumulator (acc = 2²⁴ plus pairs of 1 and 1 gives 2²⁴ + 2, where a chain gives 2²⁴); the
//! tree inside is not documented. So the kernel is tested against the f64 product of the
//! bf16-rounded inputs within the f32 dot-product bound, and bit for bit only where the order
//! cannot matter (small integers) or where it is its own (a row alone or in a batch, any
//! thread count, the epilogues). Each output still depends on its own row and column only.
//!
//! # State
//! Linux hands out the 8 KB tile register file per process on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), asked once by
//! [`AmxBf16Kernel::new`]. Every tile has the same shape (16 rows of 64 bytes), loaded into a
//! thread's tile configuration the first time the thread runs the kernel.

use std::arch::asm;
use std::arch::x86_64::*;
use std::cell::Cell;

use super::x86::bias_gelu_rows_avx512;
use super::{unpack_a_panel, MicroKernel, PanelElem, PanelFormat};

/// Proof that the CPU has AMX-TILE and AMX-BF16, that Linux granted this process the tile
/// state, and that the AVX-512 kernels are enabled (the epilogue is AVX-512's); `KOEMBED_AMX=0`
/// turns it off.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmxBf16Kernel(());

impl AmxBf16Kernel {
    pub(crate) fn new() -> Option<Self> {
        // Asked once: CPUID exits to the hypervisor under a VM.
        static BF16: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        // CPUID.(7, 0):EDX bit 22: AMX-BF16.
        let bf16 = *BF16.get_or_init(|| __cpuid_count(7, 0).edx & (1 << 22) != 0);
        (amx_tiles_granted() && bf16).then_some(AmxBf16Kernel(()))
    }
}

/// Whether AMX tiles may be used: the CPU has AMX-TILE, AVX-512F and FMA, the AVX-512 kernels
/// are enabled, `KOEMBED_AMX` is not `0`, and Linux granted the tile state (asked once).
pub(crate) fn amx_tiles_granted() -> bool {
    static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let granted = *GRANTED.get_or_init(|| {
        if std::env::var_os("KOEMBED_AMX").is_some_and(|v| v == "0") {
            return false;
        }
        // CPUID.(7, 0):EDX bit 24: AMX-TILE.
        __cpuid_count(7, 0).edx & (1 << 24) != 0
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("fma")
            && request_tile_state()
    });
    granted && crate::avx512_enabled()
}

/// Tile register names for `asm!` templates.
macro_rules! tmm {
    (load $reg:literal, $ptr:expr, $stride:expr) => {
        asm!(
            concat!("tileloadd tmm", $reg, ", [{p} + {s}*1]"),
            p = in(reg) $ptr, s = in(reg) $stride, options(nostack, readonly),
        )
    };
    (store $reg:literal, $ptr:expr) => {
        asm!(
            concat!("tilestored [{p} + {s}*1], tmm", $reg),
            p = in(reg) $ptr, s = in(reg) 64usize, options(nostack),
        )
    };
    (zero $reg:literal) => {
        asm!(concat!("tilezero tmm", $reg), options(nostack, nomem))
    };
    (dp $acc:literal, $a:literal, $b:literal) => {
        asm!(concat!("tdpbusd tmm", $acc, ", tmm", $a, ", tmm", $b), options(nostack, nomem))
    };
}

/// For each panel p < `panels` (1..=4): `c[p][16 rows x 16 i32] += a[16 rows x 64·chunks u8] ·
/// b[p][(16·chunks quads) x 16 columns x 4 i8]`, `tdpbusd` per 64 k. Exact i32 arithmetic
/// (wrapping), like `vpdpbusd`, so the order of the sums does not matter.
///
/// An activation tile is loaded once (from L2, where a block of rows lives) for up to four
/// weight panels (from L1): loading it per panel made the loads, not `tdpbusd`, the limit. Four
/// accumulator chains always (with fewer panels, each panel's k chunks dealt round-robin to
/// 2 or 4 accumulators, summed at the end), to cover `tdpbusd`'s latency. Tiles: accumulators
/// tmm0-3, activations tmm4/tmm5 and weights tmm6/tmm7, alternating.
///
/// # Safety
/// AMX-TILE + AMX-INT8 with the state granted; `panels` in 1..=4; `c[p]`: 16 rows of 16 i32,
/// contiguous, readable and writable, not overlapping; `a`: 16 rows of `64·chunks` bytes at
/// stride `lda` bytes; `b[p]`: `1024·chunks` bytes (rows of 64 bytes, contiguous).
pub(crate) unsafe fn accumulate_amx_u8s8(
    c: [*mut i32; 4],
    a: *const u8,
    lda: usize,
    b: [*const i8; 4],
    panels: usize,
    chunks: usize,
) {
    assert!((1..=4).contains(&panels), "AMX int8: 1 to 4 panels");
    let splits = 4 / panels;
    // SAFETY (whole body): the contract; each tile load or store touches 16 rows of 64 bytes
    // inside the regions above (C of panel p at c[p], A chunk q at byte 64·q of each row, B
    // chunk q at byte 1024·q of b[p]), or `scratch`.
    unsafe {
        configure_tiles();
        // Accumulator r = p·splits + s: panel p's chain s; chain 0 starts from C.
        for r in 0..panels * splits {
            let (p, s) = (r / splits, r % splits);
            match (r, s == 0) {
                (0, _) => tmm!(load "0", c[p], 64usize),
                (1, true) => tmm!(load "1", c[p], 64usize),
                (2, true) => tmm!(load "2", c[p], 64usize),
                (3, true) => tmm!(load "3", c[p], 64usize),
                (1, false) => tmm!(zero "1"),
                (2, false) => tmm!(zero "2"),
                _ => tmm!(zero "3"),
            }
        }
        let mut n = 0usize;
        for q in 0..chunks {
            let a_odd = q % 2 == 1;
            let aq = a.add(64 * q);
            if a_odd {
                tmm!(load "5", aq, lda);
            } else {
                tmm!(load "4", aq, lda);
            }
            let s = q % splits;
            for (p, &bp) in b.iter().enumerate().take(panels) {
                let b_odd = n % 2 == 1;
                n += 1;
                let bq = bp.add(1024 * q);
                if b_odd {
                    tmm!(load "7", bq, 64usize);
                } else {
                    tmm!(load "6", bq, 64usize);
                }
                match (p * splits + s, a_odd, b_odd) {
                    (0, false, false) => tmm!(dp "0", "4", "6"),
                    (0, false, true) => tmm!(dp "0", "4", "7"),
                    (0, true, false) => tmm!(dp "0", "5", "6"),
                    (0, true, true) => tmm!(dp "0", "5", "7"),
                    (1, false, false) => tmm!(dp "1", "4", "6"),
                    (1, false, true) => tmm!(dp "1", "4", "7"),
                    (1, true, false) => tmm!(dp "1", "5", "6"),
                    (1, true, true) => tmm!(dp "1", "5", "7"),
                    (2, false, false) => tmm!(dp "2", "4", "6"),
                    (2, false, true) => tmm!(dp "2", "4", "7"),
                    (2, true, false) => tmm!(dp "2", "5", "6"),
                    (2, true, true) => tmm!(dp "2", "5", "7"),
                    (_, false, false) => tmm!(dp "3", "4", "6"),
                    (_, false, true) => tmm!(dp "3", "4", "7"),
                    (_, true, false) => tmm!(dp "3", "5", "6"),
                    (_, true, true) => tmm!(dp "3", "5", "7"),
                }
            }
        }
        let mut scratch = Aligned64([[0i32; 16]; 16]);
        for r in 0..panels * splits {
            let (p, s) = (r / splits, r % splits);
            if s == 0 {
                match r {
                    0 => tmm!(store "0", c[p]),
                    1 => tmm!(store "1", c[p]),
                    2 => tmm!(store "2", c[p]),
                    _ => tmm!(store "3", c[p]),
                }
                continue;
            }
            let sp = scratch.0.as_mut_ptr().cast::<i32>();
            match r {
                1 => tmm!(store "1", sp),
                2 => tmm!(store "2", sp),
                _ => tmm!(store "3", sp),
            }
            // Chain 0 was stored first: add this chain's sums into it.
            let cp = std::slice::from_raw_parts_mut(c[p], 256);
            for (d, &v) in cp.iter_mut().zip(scratch.0.as_flattened()) {
                *d = d.wrapping_add(v);
            }
        }
    }
}

#[repr(C, align(64))]
struct Aligned64<T>(T);

/// Asks Linux for the tile data state; true when granted.
fn request_tile_state() -> bool {
    #[cfg(target_os = "linux")]
    {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with this request only changes which state components the
        // process may use; it reads and writes no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// The tile configuration: palette 1, tiles 0-7 of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const TILE_CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = 16;
        t += 1;
    }
    TileConfig(c)
};

thread_local! {
    static CONFIGURED: Cell<bool> = const { Cell::new(false) };
}

/// Loads [`TILE_CONFIG`] on this thread unless done already.
///
/// # Safety
/// AMX-TILE, with the tile state granted (holding an [`AmxBf16Kernel`]).
unsafe fn configure_tiles() {
    CONFIGURED.with(|done| {
        if !done.get() {
            // SAFETY: the contract; the configuration is a valid palette-1 layout.
            unsafe { asm!("ldtilecfg [{}]", in(reg) TILE_CONFIG.0.as_ptr(), options(nostack)) };
            done.set(true);
        }
    });
}

const MR: usize = 32;
const NR: usize = 32;
/// Steps (pairs of k) per `tdpbf16ps`.
const STEPS: usize = 16;
/// The K block in steps (a multiple of [`STEPS`]): 768 pairs, 1,536 k, 96 KB of a panel (in
/// L2, not L1 as for the FMA kernels). Each K block adds into the output in memory, and with
/// AMX that traffic, not the products, set the pace: e5-small's FFN out (K = 1,536) took 4
/// blocks of 192 pairs, now 1; e5-small W2 bf16 13,000 -> 13,450-13,750 tok/s, koe5-shape
/// 1,211 -> 1,460 (1,024 or 2,048 pairs measured no better).
const KC: usize = 768;

impl MicroKernel for AmxBf16Kernel {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = KC;
    const KC_WHOLE: usize = KC;
    const MC: usize = 192;
    const STEP_MULTIPLE: usize = STEPS;
    const SPLIT_EPILOGUE: bool = true;

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
        prefetch: *const u8,
    ) {
        // Packed A (element (i, p) at a + p·MR + i) back to rows: the driver reads A in place
        // through `tile_rows`, so this path only serves the trait's contract.
        let mut rows = vec![0.0f32; MR * k];
        // SAFETY: a holds k·MR values (the contract).
        unsafe { unpack_a_panel(&mut rows, a, MR, MR, k) };
        // SAFETY: `rows` holds MR rows of k values; the rest is the caller's contract.
        unsafe {
            self.tile_rows(
                MR,
                k,
                rows.as_ptr(),
                k,
                b,
                c,
                ldc,
                accumulate,
                bias,
                gelu,
                prefetch,
            )
        }
    }

    unsafe fn tile_rows<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        bias: *const f32,
        gelu: bool,
        _prefetch: *const u8,
    ) {
        assert!(
            E::FORMAT == PanelFormat::Bf16,
            "the AMX kernel multiplies bf16 panels only"
        );
        assert!(k.is_multiple_of(STEPS) && k <= KC, "AMX tile: {k} steps");
        assert!((1..=MR).contains(&rows), "AMX tile: {rows} rows");
        let b = b as *const u16;
        if rows == MR {
            // SAFETY: holding `self` proves AMX with the state granted and AVX-512F + FMA;
            // MR rows of A hold k steps at stride lda, b holds k·NR pairs, C's MR rows NR
            // values at stride ldc (the contract).
            unsafe {
                tile_amx(k, a, lda, b, c, ldc, accumulate);
                bias_gelu_rows_avx512(c, ldc, MR, bias, gelu);
            }
            return;
        }
        // Fewer rows: A's live rows and C's onto the stack (zeros below), the whole tile
        // there, then the live rows back. Only the MR x k that the tile reads is written (the
        // buffer holds a whole K block, 96 KB: zeroing all of it per tile cost a query 20%).
        let mut a_tmp = [std::mem::MaybeUninit::<f32>::uninit(); MR * KC];
        for (i, row) in a_tmp[..MR * k].chunks_exact_mut(k).enumerate() {
            if i < rows {
                // SAFETY: row i < rows of A holds k values (the contract).
                let src = unsafe { std::slice::from_raw_parts(a.add(i * lda), k) };
                for (d, &v) in row.iter_mut().zip(src) {
                    d.write(v);
                }
            } else {
                row.fill(std::mem::MaybeUninit::new(0.0));
            }
        }
        let a_tmp = a_tmp.as_ptr().cast::<f32>();
        let mut c_tmp = [0.0f32; MR * NR];
        if accumulate {
            for i in 0..rows {
                // SAFETY: row i < rows of C: NR readable values (the contract).
                let src = unsafe { std::slice::from_raw_parts(c.add(i * ldc), NR) };
                c_tmp[i * NR..(i + 1) * NR].copy_from_slice(src);
            }
        }
        // SAFETY: as above, on the stack buffers (MR rows each, strides k and NR).
        unsafe {
            // a_tmp: MR rows of k steps at stride k, all written above.
            tile_amx(k, a_tmp, k, b, c_tmp.as_mut_ptr(), NR, accumulate);
            bias_gelu_rows_avx512(c_tmp.as_mut_ptr(), NR, rows, bias, gelu);
        }
        for i in 0..rows {
            // SAFETY: row i < rows of C: NR writable values, this call's alone (the contract).
            let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
            dst.copy_from_slice(&c_tmp[i * NR..(i + 1) * NR]);
        }
    }
}

/// C[32 x 32] (+)= A[32 rows x k steps] · B[k steps x 32 columns], as four 16 x 16 tiles.
///
/// # Safety
/// AMX-TILE + AMX-BF16 with the state granted; `k` a multiple of 16; A's 32 rows of k steps
/// (4 bytes each) readable at stride `lda` steps, B's `k · 64` bf16 (a step: 32 columns x 2)
/// readable, C's 32 rows of 32 f32 readable (if `accumulate`) and writable at stride `ldc`.
unsafe fn tile_amx(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const u16,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let (sa, sb, sc) = (lda * 4, NR * 2 * 2, ldc * 4);
    // SAFETY (whole body): the contract; each tile load or store touches 16 rows of 64 bytes
    // at the given stride, inside the regions above (C tiles at rows 0/16, columns 0/16; A
    // tiles at rows 0/16, steps p..p + 16; B tiles at steps p..p + 16, columns 0/16).
    unsafe {
        configure_tiles();
        let (c0, c1) = (c, c.add(16));
        let (c2, c3) = (c.add(16 * ldc), c.add(16 * ldc + 16));
        if accumulate {
            asm!(
                "tileloadd tmm0, [{c0} + {s}*1]",
                "tileloadd tmm1, [{c1} + {s}*1]",
                "tileloadd tmm2, [{c2} + {s}*1]",
                "tileloadd tmm3, [{c3} + {s}*1]",
                c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
                s = in(reg) sc, options(nostack, readonly),
            );
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        let mut p = 0;
        while p < k {
            asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(p), a1 = in(reg) a.add(16 * lda + p),
                b0 = in(reg) b.add(p * NR * 2), b1 = in(reg) b.add(p * NR * 2 + 32),
                sa = in(reg) sa, sb = in(reg) sb, options(nostack, readonly),
            );
            p += STEPS;
        }
        asm!(
            "tilestored [{c0} + {s}*1], tmm0",
            "tilestored [{c1} + {s}*1], tmm1",
            "tilestored [{c2} + {s}*1], tmm2",
            "tilestored [{c3} + {s}*1], tmm3",
            c0 = in(reg) c0, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
            s = in(reg) sc, options(nostack),
        );
    }
}

/// `C[16 x 16·blocks] = A[16 x steps] · B[steps x 16·blocks]` with sums from zero, for
/// attention's products, whose operands a head makes per call rather than packs once: A is 16
/// rows of bf16 pairs (one f32-sized step each) at stride `lda` steps, B one row of pairs per
/// step at stride `ldb` (column block j at step j·16 of each row), C f32 at stride `ldc`.
/// Each C block is summed over all steps in one tile before it is stored; four blocks at a
/// time share each A tile load.
///
/// # Safety
/// Holding `_proof` (AMX-BF16 with the state granted); `steps` a multiple of 16; A's 16 rows
/// of `steps` values, B's `steps` rows of `16·blocks` values and C's 16 rows of `16·blocks`
/// values lie inside their allocations at the given strides; C is not read, only written, and
/// overlaps neither A nor B.
#[allow(clippy::too_many_arguments)] // three strided operands
pub(crate) unsafe fn multiply_16_rows_amx(
    _proof: AmxBf16Kernel,
    steps: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    blocks: usize,
    c: *mut f32,
    ldc: usize,
) {
    assert!(steps.is_multiple_of(STEPS), "AMX rows: {steps} steps");
    let (sa, sb, sc) = (lda * 4, ldb * 4, ldc * 4);
    // SAFETY (whole body): the contract; every tile load reads 16 rows of 64 bytes of A (at
    // step q·16) or B (rows q·16.., block j), every store writes 16 rows of 64 bytes of C's
    // block j, all inside the regions above.
    unsafe {
        configure_tiles();
        let mut j0 = 0;
        while j0 < blocks {
            let group = (blocks - j0).min(4);
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let mut q = 0;
            while q < steps {
                asm!(
                    "tileloadd tmm4, [{p} + {s}*1]",
                    p = in(reg) a.add(q), s = in(reg) sa, options(nostack, readonly),
                );
                for g in 0..group {
                    let bp = b.add(q * ldb + (j0 + g) * 16);
                    // B tiles rotate over three registers, so a load need not wait for
                    // the product that read the previous one.
                    match g {
                        0 => asm!(
                            "tileloadd tmm5, [{p} + {s}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm5",
                            p = in(reg) bp, s = in(reg) sb, options(nostack, readonly),
                        ),
                        1 => asm!(
                            "tileloadd tmm6, [{p} + {s}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm6",
                            p = in(reg) bp, s = in(reg) sb, options(nostack, readonly),
                        ),
                        2 => asm!(
                            "tileloadd tmm7, [{p} + {s}*1]",
                            "tdpbf16ps tmm2, tmm4, tmm7",
                            p = in(reg) bp, s = in(reg) sb, options(nostack, readonly),
                        ),
                        _ => asm!(
                            "tileloadd tmm5, [{p} + {s}*1]",
                            "tdpbf16ps tmm3, tmm4, tmm5",
                            p = in(reg) bp, s = in(reg) sb, options(nostack, readonly),
                        ),
                    }
                }
                q += STEPS;
            }
            for g in 0..group {
                let cp = c.add((j0 + g) * 16);
                match g {
                    0 => asm!(
                        "tilestored [{p} + {s}*1], tmm0",
                        p = in(reg) cp, s = in(reg) sc, options(nostack),
                    ),
                    1 => asm!(
                        "tilestored [{p} + {s}*1], tmm1",
                        p = in(reg) cp, s = in(reg) sc, options(nostack),
                    ),
                    2 => asm!(
                        "tilestored [{p} + {s}*1], tmm2",
                        p = in(reg) cp, s = in(reg) sc, options(nostack),
                    ),
                    _ => asm!(
                        "tilestored [{p} + {s}*1], tmm3",
                        p = in(reg) cp, s = in(reg) sc, options(nostack),
                    ),
                }
            }
            j0 += group;
        }
    }
}
