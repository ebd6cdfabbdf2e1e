//! Register-tile micro-kernels of the packed GEMM ([`super::packed`]).
//!
//! Each kernel is a zero-sized type whose constructor `new() -> Option<Self>` only succeeds when
//! the CPU has the instructions it uses: holding one is the proof that calling it is sound.
//!
//! # The one accumulation order
//! A kernel computes every output element as a single chain over k = 0, 1, ..., K-1:
//! `acc = 0; acc = fma(a[k], b[k], acc)` (the portable kernel: `acc = acc + a[k]·b[k]`, two
//! roundings), continued across K blocks by reloading the stored f32 tile (exact), then
//! `acc + bias`, then the epilogue. Lanes never mix, and padded rows/columns only fill lanes that
//! are thrown away, so an element's value depends on its own input row and weight column only:
//! not on M, the tile it falls in, the blocking, or the thread count. The AVX2 and AVX-512
//! kernels perform the same fused operations, so they give the same bits as each other.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
pub(crate) mod int8_portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod int8_x86;
pub(crate) mod portable;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86;

use super::panel_memory::Plain;

/// The number format of packed B panels. The kernels widen each loaded value to f32 before
/// the FMA, so the half formats change what is stored (half the bytes to stream from memory),
/// not how the product is accumulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PanelFormat {
    /// IEEE binary32: the weights as given.
    F32,
    /// IEEE binary16 (widened with F16C `vcvtph2ps` on x86).
    F16,
    /// bfloat16: the top 16 bits of an f32 (widened by a 16-bit shift).
    Bf16,
}

impl PanelFormat {
    /// Bytes per stored weight.
    pub fn size_in_bytes(self) -> usize {
        match self {
            PanelFormat::F32 => 4,
            PanelFormat::F16 | PanelFormat::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PanelFormat::F32 => "f32",
            PanelFormat::F16 => "f16",
            PanelFormat::Bf16 => "bf16",
        }
    }
}

/// A Rust type stored in packed B panels, one per [`PanelFormat`].
///
/// `half::f16` and `half::bf16` are `#[repr(transparent)]` over the u16 bit pattern, so a panel
/// of them is the bytes a SIMD load widens.
pub(crate) trait PanelElem: Plain + Send + Sync + Default + 'static {
    const FORMAT: PanelFormat;
    fn to_f32(self) -> f32;
    /// Rounds to nearest, ties to even (the conversion `torch.Tensor.to` does).
    fn from_f32(v: f32) -> Self;
    /// The panel itself when it is f32 already (packing then writes it in place).
    fn as_f32_mut(panel: &mut [Self]) -> Option<&mut [f32]> {
        let _ = panel;
        None
    }
    /// [`Self::from_f32`] over a slice (`dst.len() == src.len()`).
    fn from_f32_slice(dst: &mut [Self], src: &[f32]) {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(v);
        }
    }
}

impl PanelElem for f32 {
    const FORMAT: PanelFormat = PanelFormat::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn as_f32_mut(panel: &mut [Self]) -> Option<&mut [f32]> {
        Some(panel)
    }
}

impl PanelElem for half::f16 {
    const FORMAT: PanelFormat = PanelFormat::F16;
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    fn from_f32_slice(dst: &mut [Self], src: &[f32]) {
        // Eight at a time with F16C where the CPU has it (the same rounding): one by one, the
        // conversion is a call per value.
        use half::slice::HalfFloatSliceExt;
        dst.convert_from_f32_slice(src);
    }
}

impl PanelElem for half::bf16 {
    const FORMAT: PanelFormat = PanelFormat::Bf16;
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

const _: () =
    assert!(std::mem::size_of::<half::f16>() == 2 && std::mem::size_of::<half::bf16>() == 2);

/// Largest MR·NR of any kernel (AMX: 32 x 32), for edge-tile scratch space on the stack.
pub(crate) const MAX_TILE: usize = 32 * 32;

/// Rows i < `rows` of a packed A panel (`a[p·mr + i]`, k steps) back to rows of k values:
/// `dst[i·k + p]`, for the kernels that read A as rows.
///
/// # Safety
/// `a` points to `k·mr` readable f32; `rows <= mr`; `dst` holds at least `rows·k` values.
pub(crate) unsafe fn unpack_a_panel(
    dst: &mut [f32],
    a: *const f32,
    mr: usize,
    rows: usize,
    k: usize,
) {
    for (i, row) in dst[..rows * k].chunks_exact_mut(k.max(1)).enumerate() {
        for (p, v) in row.iter_mut().enumerate() {
            // SAFETY: p < k and i < rows <= mr: inside the panel (the contract).
            *v = unsafe { *a.add(p * mr + i) };
        }
    }
}

/// [`MicroKernel::pack_a_panel`] one value at a time, for a kernel of `mr` rows:
/// `dst[p·mr + i] = a[i·lda + p]` for p < `k`, i < `rows`.
pub(crate) fn pack_a_panel_scalar(
    dst: &mut [f32],
    a: &[f32],
    lda: usize,
    k: usize,
    rows: usize,
    mr: usize,
) {
    for i in 0..rows {
        for (p, &v) in a[i * lda..i * lda + k].iter().enumerate() {
            dst[p * mr + i] = v;
        }
    }
}

/// Largest MR·KC of the kernels that read A in place (those that pack it override
/// `tile_packed_rows`): the stack buffer of [`MicroKernel::tile_packed_rows`]' default.
pub(crate) const MAX_A_PANEL: usize = 12 * 256;

/// The second tile over a B panel prefetches the next panel only when at most this many tiles
/// share a panel (queries: M <= 24 for f32, 16 for int8). With more, the panel stays in use long
/// enough that the next one, pulled into L1 beside it, would evict it and the A rows; memory
/// then keeps up on its own.
pub(crate) const PREFETCH_NEXT_MAX_TILES: usize = 4;

/// How the tiles over one B panel prefetch it and the next (see [`tile_prefetch`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BPrefetch {
    /// How far ahead of its reads in the panel the first tile prefetches, in bytes.
    pub(crate) ahead: usize,
    /// Whether the second tile prefetches the next panel when few tiles share one.
    pub(crate) next_panel: bool,
}

/// The prefetch stream of tile `tile` of the `tiles` that read one B panel (or panel block),
/// for the f32 and int8 drivers alike: the first tile, which streams the panel from memory,
/// prefetches `how.ahead` bytes ahead of its reads in it; the second, which reuses the panel
/// from L1 and would leave memory idle, the next panel (`next()`, or null when there is none),
/// when `how.next_panel` and few tiles share the panel (see [`PREFETCH_NEXT_MAX_TILES`]); the
/// others nothing.
pub(crate) fn tile_prefetch(
    tile: usize,
    tiles: usize,
    panel: *const u8,
    how: BPrefetch,
    next: impl FnOnce() -> *const u8,
) -> *const u8 {
    match tile {
        0 => panel.wrapping_add(how.ahead),
        1 if how.next_panel && tiles <= PREFETCH_NEXT_MAX_TILES => next(),
        _ => std::ptr::null(),
    }
}

/// Which cache [`prefetch_rows`] asks for lines in.
#[derive(Clone, Copy)]
pub(crate) enum PrefetchTo {
    /// L1, with the hint that asks for ownership (`_MM_HINT_ET0`; without the `prfchw`
    /// target feature it compiles to `prefetcht0`, a read prefetch: see "Speed" in the
    /// README).
    L1,
    /// L2 (`prefetcht1`).
    L2,
}

/// Asks for `rows` rows of `width` bytes from `first`, `stride` bytes apart, in cache `to`:
/// in L1, the output rows the next tile will store (its stores otherwise wait on their
/// lines, read for ownership from L3 in the first K block, from L2 after it) and the
/// residual rows it adds; in L2, the next attention task's Q, K and V rows. A hint: never
/// faults, and changes no result.
pub(crate) fn prefetch_rows(
    to: PrefetchTo,
    first: *const u8,
    rows: usize,
    stride: usize,
    width: usize,
) {
    if width == 0 {
        return;
    }
    for i in 0..rows {
        let row = first.wrapping_add(i * stride);
        let end = row.wrapping_add(width - 1) as usize & !63;
        let mut line = row as usize & !63;
        while line <= end {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch (SSE, always on x86-64; a no-op elsewhere) reads nothing the
            // program sees and never faults, whatever the address.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_ET0, _MM_HINT_T1};
                match to {
                    PrefetchTo::L1 => _mm_prefetch::<_MM_HINT_ET0>(line as *const i8),
                    PrefetchTo::L2 => _mm_prefetch::<_MM_HINT_T1>(line as *const i8),
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = to;
            line += 64;
        }
    }
}

/// `C[MR x NR] (+)= A_panel · B_panel`, then optionally `+ bias` and GELU.
///
/// Blocking constants live here, per kernel, so that the packed layout of B (NR, KC) and the
/// loops of the driver (MC) agree. Zen 4: 32 KB L1d, 1 MB L2 per core, 32 MB shared L3.
pub(crate) trait MicroKernel: Copy + Send + Sync {
    /// Rows of the register tile (one broadcast of A each per k).
    const MR: usize;
    /// Columns of the register tile (NR/lanes vector loads of B per k).
    const NR: usize;
    /// K block: the B micro-panel (KC x NR) is reused from L1 by every A micro-panel of an M
    /// block, so KC·NR·4 bytes should take about half of the 32 KB L1d.
    const KC: usize;
    /// A K up to this runs as one block instead of blocks of KC: each output tile is then
    /// stored once instead of stored and re-read per K block (the C block of a task does not
    /// stay in L2 between K blocks), at the price of a larger B panel in L1.
    const KC_WHOLE: usize;

    /// The K block for a product over `k`: all of it up to [`KC_WHOLE`](Self::KC_WHOLE), else
    /// [`KC`](Self::KC).
    fn k_block(k: usize) -> usize {
        if (1..=Self::KC_WHOLE).contains(&k) {
            k
        } else {
            Self::KC
        }
    }
    /// M block: the packed A block (MC x KC) stays in L2 while all B panels of a task stream
    /// past it; MC·KC·4 bytes is kept well under the 1 MB L2 (B panels and C share it).
    const MC: usize;
    /// Whether the driver may pack A (see [`Self::tile_packed_rows`]) instead of reading it
    /// in place, when M is large (see `packed::PACK_A_MIN_M`).
    const PACKS_A: bool = false;
    /// How the tiles prefetch B (see [`tile_prefetch`]): by default 2 KB ahead in the panel,
    /// and the next panel from the second tile, which made queries faster on Zen 3 (AVX2).
    const B_PREFETCH: BPrefetch = BPrefetch {
        ahead: 2048,
        next_panel: true,
    };

    /// Whether the driver prefetches, for writing, the output of the next tile while this one
    /// multiplies (see `packed::Call::prefetch_next_tile`). On for the AVX-512 and AVX2 f32
    /// kernels, where it was measured. With AMX, f32 outputs gained 4-6% alone (M = 4,096-8,192)
    /// but e5-small's FFN in, whose output is bf16 pairs behind a rounding pass, went from 79-83
    /// to 92-94 ms per W2 batch; the pair kernels were not measured with it.
    const PREFETCH_OUTPUT: bool = false;

    /// Whether the driver keeps a task's partial sums apart from the output between K blocks
    /// when the output's rows lie a multiple of 4 KB apart (see `packed::Call::partials_apart`).
    /// On for the AVX-512 f32 kernel, where it was measured (Zen 4).
    const PARTIALS_APART: bool = false;

    /// Packs one A panel for [`Self::tile_packed_rows`]: `dst[p·MR + i] = a[i·lda + p]` for
    /// p < `k`, i < `rows`; `dst`'s rows `rows..MR` are left as they are (not read).
    fn pack_a_panel(self, dst: &mut [f32], a: &[f32], lda: usize, k: usize, rows: usize) {
        pack_a_panel_scalar(dst, a, lda, k, rows, Self::MR);
    }

    /// [`Self::tile`] with only the first `rows` rows of the tile live: A packed as for
    /// `tile` (`a[p·MR + i]`, rows `rows..MR` not read), C's rows `rows..MR` neither read nor
    /// written. The same results, row for row, as [`Self::tile_rows`] on the unpacked rows.
    ///
    /// # Safety
    /// As [`Self::tile`], except that `1 <= rows <= MR`, only C's rows i < rows are accessed,
    /// and `k <= KC`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_packed_rows<E: PanelElem>(
        self,
        rows: usize,
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
        assert!(Self::MR * k <= MAX_A_PANEL, "tile_packed_rows: k above KC");
        assert!(
            (1..=Self::MR).contains(&rows),
            "tile_packed_rows: {rows} rows"
        );
        // Back to rows (row stride k) for `tile_rows`: only kernels that pack A override this.
        let mut unpacked = [0.0f32; MAX_A_PANEL];
        // SAFETY: a holds k·MR packed f32 (contract).
        unsafe { unpack_a_panel(&mut unpacked, a, Self::MR, rows, k) };
        // SAFETY: `unpacked` holds `rows` rows of k f32 at stride k; the rest is the caller's
        // contract.
        unsafe {
            self.tile_rows(
                rows,
                k,
                unpacked.as_ptr(),
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

    /// A row of tiles: `rows` rows of A (`k` <= KC values each, `lda` apart, as for
    /// [`Self::tile_rows`]) times `panels` whole B panels, panel j at `b + j·panel_stride`,
    /// each stored (no accumulation, bias or prefetch of B) to C's columns `j·NR .. (j +
    /// 1)·NR`. The same results as a [`Self::tile_rows`] per panel, which is what it does
    /// unless a kernel overrides it to skip the per-tile calls (attention's scores: K = the
    /// head size, 32 steps a tile).
    ///
    /// # Safety
    /// As [`Self::tile_rows`] for each panel's tile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_row_of_panels<E: PanelElem>(
        self,
        rows: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const E,
        panel_stride: usize,
        panels: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        for j in 0..panels {
            // SAFETY: the contract, panel by panel.
            unsafe {
                self.tile_rows(
                    rows,
                    k,
                    a,
                    lda,
                    b.add(j * panel_stride),
                    c.add(j * Self::NR),
                    ldc,
                    false,
                    std::ptr::null(),
                    false,
                    std::ptr::null(),
                )
            }
        }
    }

    /// `dst[i·ldd + j] = src[i·lds + j] + residual[i·ldr + j]` for i < `rows`, j < `cols`
    /// (one rounding, as `s + x`), or a plain copy when `residual` is null: a tile's way out
    /// of a task's partial sums, and the residual connection added to a stored tile (`src`
    /// may be `dst`: each value is read before it is written).
    ///
    /// # Safety
    /// `src + i·lds`, `residual + i·ldr` (unless null) readable and `dst + i·ldd` writable for
    /// `cols` f32, i < rows; `dst`'s rows not shared with another thread, nor with `src` except
    /// as the same elements.
    #[allow(clippy::too_many_arguments)]
    unsafe fn finish_rows(
        self,
        rows: usize,
        cols: usize,
        src: *const f32,
        lds: usize,
        residual: *const f32,
        ldr: usize,
        dst: *mut f32,
        ldd: usize,
    ) {
        for i in 0..rows {
            for j in 0..cols {
                // SAFETY: element (i, j) of each operand: inside the contract's rows.
                unsafe {
                    let s = *src.add(i * lds + j);
                    *dst.add(i * ldd + j) = if residual.is_null() {
                        s
                    } else {
                        s + *residual.add(i * ldr + j)
                    };
                }
            }
        }
    }

    /// K steps come in multiples of this (the packed K is padded with zeros to it, and so
    /// is every K block): AMX multiplies 16 steps per instruction.
    const STEP_MULTIPLE: usize = 1;

    /// Whether [`Self::tile_rows`] stores the tile first and then adds the bias and applies
    /// GELU as `x86::bias_gelu_rows_avx512` does, in a pass over the stored values: a driver
    /// may then run a tile with no bias and apply the same operations itself, with the same
    /// bits (a bf16 output does, on its way to the rounding store).
    const SPLIT_EPILOGUE: bool = false;

    /// One register tile.
    ///
    /// # Safety
    /// - the CPU supports the kernel (guaranteed by holding `self`);
    /// - `a` points to `k·MR` readable f32 (packed A: `a[p·MR + i]`), `b` to `k·NR` readable
    ///   panel values (packed B: `b[p·NR + j]`, widened to f32 as loaded);
    /// - `c` points to MR rows of NR f32 at row stride `ldc` that the caller may read and write
    ///   and that no other thread accesses during the call (if `!accumulate` they are only
    ///   written);
    /// - `bias` is null or points to NR readable f32.
    ///
    /// `prefetch` is null or an address the kernel streams into cache at the pace it reads B:
    /// `prefetch + p·(one B row's bytes)` at k step p. The driver points the first tile over a
    /// panel (which streams it from memory) a little ahead in its own panel, and, when few
    /// tiles share a panel, the second tile at the next panel, so that memory works while the
    /// tiles that reuse a panel from L1 compute. A hint only; results do not depend on it.
    #[allow(clippy::too_many_arguments)]
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
    );

    /// [`Self::tile`] with A read in place and only the first `rows` rows of the tile live:
    /// row `i < rows` of A at `a + i·lda`, contiguous along k (a row-major matrix, no packing);
    /// rows `rows..MR` of A are not read and rows `rows..MR` of C neither read nor written.
    /// The same results, row for row, as packing the rows (zeros below) and calling `tile`.
    /// The default packs onto the stack; SIMD kernels read in place, so that the last rows of
    /// an M that is not a multiple of MR cost neither a packing pass nor the dead rows' FMAs.
    ///
    /// # Safety
    /// As [`Self::tile`], except that `1 <= rows <= MR`, `a + i·lda .. + k` must be readable
    /// for every i < rows, C's rows i < rows only are accessed, and `k <= KC`.
    #[allow(clippy::too_many_arguments)]
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
        prefetch: *const u8,
    ) {
        assert!(Self::MR * k <= MAX_A_PANEL, "tile_rows: k above KC");
        assert!(
            Self::MR * Self::NR <= MAX_TILE,
            "tile_rows: tile above MAX_TILE"
        );
        assert!((1..=Self::MR).contains(&rows), "tile_rows: {rows} rows");
        let mut panel = [0.0f32; MAX_A_PANEL];
        for i in 0..rows {
            // SAFETY: row i's k values are readable (contract).
            let row = unsafe { std::slice::from_raw_parts(a.add(i * lda), k) };
            for (p, &v) in row.iter().enumerate() {
                panel[p * Self::MR + i] = v;
            }
        }
        if rows == Self::MR {
            // SAFETY: `panel` holds k·MR packed f32; the rest is the caller's contract.
            unsafe {
                self.tile(
                    k,
                    panel.as_ptr(),
                    b,
                    c,
                    ldc,
                    accumulate,
                    bias,
                    gelu,
                    prefetch,
                )
            }
            return;
        }
        // Fewer rows: the whole tile runs on the stack, and only the live rows go back.
        let nr = Self::NR;
        let mut tmp = [0.0f32; MAX_TILE];
        if accumulate {
            for i in 0..rows {
                // SAFETY: row i < rows of C: NR readable f32 at c + i·ldc (contract).
                let src = unsafe { std::slice::from_raw_parts(c.add(i * ldc), nr) };
                tmp[i * nr..(i + 1) * nr].copy_from_slice(src);
            }
        }
        // SAFETY: `panel` holds k·MR packed f32, `tmp` MAX_TILE >= MR·NR f32 (row stride NR)
        // that only this call touches; b and bias are the caller's contract.
        unsafe {
            self.tile(
                k,
                panel.as_ptr(),
                b,
                tmp.as_mut_ptr(),
                nr,
                accumulate,
                bias,
                gelu,
                prefetch,
            )
        };
        for i in 0..rows {
            // SAFETY: row i < rows of C: NR writable f32 at c + i·ldc, not shared (contract).
            let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
            dst.copy_from_slice(&tmp[i * nr..(i + 1) * nr]);
        }
    }
}
