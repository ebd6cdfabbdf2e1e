//! Packed GEMM for linear layers: weights packed once at load, `out = epilogue(x · wᵀ + bias)`.
//!
//! ```text
//! let w1 = PackedMatrix::pack_b(w1_view)?;          // at model load, w1: [N, K] (PyTorch)
//! matmul_packed_bias(h, x, &w1, b1, Epilogue::Gelu)?; // h[M,N] = gelu(x[M,K] · w1ᵀ + b1)
//! ```
//!
//! # Structure (BLIS-style)
//! - [`PackedMatrix`] holds `w` transposed into the layout of one micro-kernel: K blocks of KC,
//!   each split into panels of NR output columns (zero-padded), each panel k-major
//!   (`panel[p·NR + j] = w[j0 + j, k0 + p]`), 64-byte aligned.
//! - Per call, A (`x`) is packed per (M block of MC rows, K block) into MR-row panels (rows past
//!   M padded with zeros), so every tile, edge or not, runs the same full MR x NR kernel; edge
//!   tiles go through a scratch tile on the stack.
//! - Loops: task (M block x range of NR panels) → K block (pack A) → B panel (stays in L1) → A
//!   panel (from L2) → register tile. Bias and the epilogue are applied in registers when the
//!   last K block is stored.
//! - Tasks run on rayon: whole M blocks when M is large, and the N panels split into chunks so
//!   both cores work even at M = 16. K is never split between threads.
//!
//! # Determinism and numerics
//! See the `gemm::kernels` module: each output element is one accumulation chain over K in
//! index order (FMA on the SIMD kernels), then `+ bias` in f32, then the epilogue. So a row's
//! result does not depend on M, on the other rows in the call, on the task split or on the
//! thread count; the AVX2 and AVX-512 kernels agree bit for bit; the portable kernel (unfused
//! multiply-add) may differ from them by rounding. Error against the f64-accumulated
//! [`naive`](super::naive) twin: within `(K + 2)·2^-24·Σ|x·w| + |bias|` like any f32 dot product
//! (tested), plus [`gelu_erf_f32`]'s 2.4e-7 for [`Epilogue::Gelu`].

use rayon::prelude::*;

use super::kernels::portable::PortableKernel;
#[cfg(target_arch = "x86_64")]
use super::kernels::x86::{Avx2Kernel, Avx512Kernel};
use super::kernels::{MicroKernel, MAX_TILE};
use crate::error::{expect_2d, expect_shape, Result, TensorError};
use crate::ops::gelu_f32::gelu_erf_f32;
use crate::tensor::{TensorView, TensorViewMut};

/// Below this many multiply-adds (M·N·K) a call runs on the calling thread only.
const PAR_MIN_FMAS: usize = 1 << 18;
/// Tasks per rayon thread when splitting: more than one evens out a noisy, shared machine.
const TASKS_PER_THREAD: usize = 4;

/// Which micro-kernel a [`PackedMatrix`] is packed for (and so which one multiplies with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmKernel {
    /// AVX-512F, 8 x 32 register tile.
    Avx512,
    /// AVX2 + FMA, 6 x 16 register tile.
    Avx2,
    /// Plain Rust, 4 x 8 tile, separate multiply and add.
    Portable,
}

impl GemmKernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> GemmKernel {
        Self::supported()[0]
    }

    /// Whether this CPU can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512 => Avx512Kernel::new().is_some(),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx2 => Avx2Kernel::new().is_some(),
            GemmKernel::Portable => PortableKernel::new().is_some(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Every kernel this CPU supports, fastest first (never empty: ends with `Portable`).
    pub fn supported() -> Vec<GemmKernel> {
        [GemmKernel::Avx512, GemmKernel::Avx2, GemmKernel::Portable]
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    /// (MR, NR, KC) of the kernel: the packed layout.
    fn shape(self) -> (usize, usize, usize) {
        fn of<K: MicroKernel>() -> (usize, usize, usize) {
            (K::MR, K::NR, K::KC)
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx512 => of::<Avx512Kernel>(),
            #[cfg(target_arch = "x86_64")]
            GemmKernel::Avx2 => of::<Avx2Kernel>(),
            #[allow(unreachable_patterns)]
            _ => of::<PortableKernel>(),
        }
    }
}

/// What happens to `x · wᵀ + bias` as it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// Store `x · wᵀ + bias`.
    None,
    /// Store `gelu(x · wᵀ + bias)`: exact-erf GELU evaluated in f32, bit for bit
    /// [`gelu_erf_f32`] (max abs error 2.385e-7 against the f64 reference on [-10, 10]).
    Gelu,
}

/// A weight matrix `w[N, K]` (PyTorch `nn.Linear` layout) packed for one micro-kernel.
///
/// Packing copies the weights once (`K · N` rounded up to the kernel's NR, 4 bytes each); do it
/// at model load and keep the packed matrix instead of the f32 view.
pub struct PackedMatrix {
    kernel: GemmKernel,
    n: usize,
    k: usize,
    /// N rounded up to NR.
    n_pad: usize,
    nr: usize,
    kc: usize,
    buf: Vec<f32>,
    /// Index in `buf` where the 64-byte aligned data starts.
    start: usize,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("kernel", &self.kernel)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

impl PackedMatrix {
    /// Packs `w[N, K]` for the fastest kernel of this CPU ([`GemmKernel::detect`]).
    pub fn pack_b(w: TensorView<'_>) -> Result<PackedMatrix> {
        Self::pack_b_with_kernel(w, GemmKernel::detect())
    }

    /// Packs `w[N, K]` for a chosen kernel (tests and benchmarks pin kernels this way); errors if
    /// the CPU does not support it.
    pub fn pack_b_with_kernel(w: TensorView<'_>, kernel: GemmKernel) -> Result<PackedMatrix> {
        const OP: &str = "PackedMatrix::pack_b";
        let (n, k) = expect_2d(OP, "w", w.shape(), ["N", "K"])?;
        if !kernel.is_supported() {
            return Err(TensorError::InvalidArgument {
                op: OP,
                message: format!("GEMM kernel {kernel:?} is not supported by this CPU"),
            });
        }
        let (_, nr, kc) = kernel.shape();
        let n_pad = n.div_ceil(nr) * nr;
        let len = n_pad * k;
        let (mut buf, start) = aligned_zeros(len);
        let data = &mut buf[start..start + len];
        let w = w.as_slice();
        // K block at k0 of length kcb starts at k0·n_pad; its panel jp at + jp·kcb·NR.
        let mut k0 = 0;
        while k0 < k {
            let kcb = kc.min(k - k0);
            let block = &mut data[k0 * n_pad..(k0 + kcb) * n_pad];
            for (jp, panel) in block.chunks_exact_mut(kcb * nr).enumerate() {
                for j in 0..nr.min(n - jp * nr) {
                    let row = &w[(jp * nr + j) * k + k0..][..kcb];
                    for (p, &v) in row.iter().enumerate() {
                        panel[p * nr + j] = v;
                    }
                }
            }
            k0 += kcb;
        }
        Ok(PackedMatrix {
            kernel,
            n,
            k,
            n_pad,
            nr,
            kc,
            buf,
            start,
        })
    }

    /// Output features N (rows of the original `w`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features K (columns of the original `w`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kernel this matrix is packed for.
    pub fn kernel(&self) -> GemmKernel {
        self.kernel
    }

    /// Bytes held (padding included).
    pub fn memory_bytes(&self) -> usize {
        self.buf.len() * std::mem::size_of::<f32>()
    }

    /// The packed data (`K · n_pad` f32).
    fn data(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.k * self.n_pad]
    }

    /// Panel `jp` of the K block starting at `k0` with length `kcb`: `kcb · NR` f32.
    fn panel(&self, k0: usize, kcb: usize, jp: usize) -> &[f32] {
        &self.data()[k0 * self.n_pad + jp * kcb * self.nr..][..kcb * self.nr]
    }
}

/// A zero-filled buffer with `len` f32 starting at a 64-byte boundary: (buffer, start index).
fn aligned_zeros(len: usize) -> (Vec<f32>, usize) {
    let buf = vec![0.0f32; len + 15];
    let start = buf.as_ptr().align_offset(64).min(15);
    (buf, start)
}

/// `out[M,N] = epilogue(x[M,K] · wᵀ + bias[N])` with `w` packed by [`PackedMatrix::pack_b`].
///
/// `out` is written, never read (it may hold NaN). All shapes are checked before anything is
/// written. Uses the kernel the matrix was packed for, on rayon's threads.
pub fn matmul_packed_bias(
    mut out: TensorViewMut<'_>,
    x: TensorView<'_>,
    w: &PackedMatrix,
    bias: TensorView<'_>,
    epilogue: Epilogue,
) -> Result<()> {
    const OP: &str = "matmul_packed_bias";
    let (m, k) = expect_2d(OP, "x", x.shape(), ["M", "K"])?;
    expect_shape(OP, "x", x.shape(), &["M", "K"], &[m, w.k])?;
    expect_shape(OP, "bias", bias.shape(), &["N"], &[w.n])?;
    expect_shape(OP, "out", out.shape(), &["M", "N"], &[m, w.n])?;
    let call = Call {
        m,
        k,
        n: w.n,
        x: x.as_slice(),
        w,
        bias: bias.as_slice(),
        gelu: epilogue == Epilogue::Gelu,
    };
    let out = out.as_mut_slice();
    fn missing<T>() -> T {
        unreachable!("a PackedMatrix is only built for a supported kernel")
    }
    match w.kernel {
        #[cfg(target_arch = "x86_64")]
        GemmKernel::Avx512 => call.run(Avx512Kernel::new().unwrap_or_else(missing), out),
        #[cfg(target_arch = "x86_64")]
        GemmKernel::Avx2 => call.run(Avx2Kernel::new().unwrap_or_else(missing), out),
        GemmKernel::Portable => call.run(PortableKernel::new().unwrap_or_else(missing), out),
        #[allow(unreachable_patterns)]
        _ => missing::<()>(),
    }
    Ok(())
}

/// The checked operands of one call.
struct Call<'a> {
    m: usize,
    k: usize,
    n: usize,
    x: &'a [f32],
    w: &'a PackedMatrix,
    bias: &'a [f32],
    gelu: bool,
}

/// The output pointer shared by the tasks of one call, each writing its own disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks of `Call::run` write disjoint elements (distinct M blocks or distinct column
// ranges) of the `&mut [f32]` borrowed for the whole call, and `run` returns only after all
// tasks finish (rayon's `for_each` joins).
unsafe impl Send for OutPtr {}
// SAFETY: as above; the pointer itself is only copied between threads.
unsafe impl Sync for OutPtr {}

impl Call<'_> {
    fn run<Kr: MicroKernel>(&self, kr: Kr, out: &mut [f32]) {
        let (m, n, k) = (self.m, self.n, self.k);
        assert_eq!(out.len(), m * n, "matmul_packed_bias: out length");
        assert_eq!(self.w.nr, Kr::NR, "packed for another kernel");
        assert_eq!(self.w.kc, Kr::KC, "packed for another kernel");
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            // No products: what the kernels store for an empty chain, (0 + bias) then GELU.
            for row in out.chunks_exact_mut(n) {
                for (o, &b) in row.iter_mut().zip(self.bias) {
                    let v = 0.0 + b;
                    *o = if self.gelu { gelu_erf_f32(v) } else { v };
                }
            }
            return;
        }
        let n_panels = self.w.n_pad / Kr::NR;
        let mut bias = vec![0.0f32; self.w.n_pad];
        bias[..n].copy_from_slice(self.bias);

        let m_blocks = m.div_ceil(Kr::MC);
        let threads = if m * n * k.max(1) < PAR_MIN_FMAS {
            1
        } else {
            rayon::current_num_threads()
        };
        let chunks_wanted = (threads * TASKS_PER_THREAD).div_ceil(m_blocks);
        let panels_per_chunk = n_panels.div_ceil(chunks_wanted.clamp(1, n_panels));
        let n_chunks = n_panels.div_ceil(panels_per_chunk);
        let tasks = m_blocks * n_chunks;
        let out_ptr = OutPtr(out.as_mut_ptr());
        let task = |t: usize| {
            let (mb, nc) = (t / n_chunks, t % n_chunks);
            let rows = mb * Kr::MC..((mb + 1) * Kr::MC).min(m);
            let panels = nc * panels_per_chunk..((nc + 1) * panels_per_chunk).min(n_panels);
            // SAFETY: task t alone writes rows `rows` x columns of `panels` (clamped to N); see
            // `OutPtr`. `out` outlives the tasks.
            unsafe { self.block(kr, out_ptr, rows, panels, &bias) };
        };
        if threads == 1 || tasks == 1 {
            (0..tasks).for_each(task);
        } else {
            (0..tasks).into_par_iter().for_each(task);
        }
    }

    /// Computes rows `rows` x the columns of B panels `panels` of the output.
    ///
    /// # Safety
    /// `out` points to the M x N output; no other thread accesses this region during the call.
    unsafe fn block<Kr: MicroKernel>(
        &self,
        kr: Kr,
        out: OutPtr,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        bias: &[f32],
    ) {
        let (mr, nr, n, k) = (Kr::MR, Kr::NR, self.n, self.k);
        let a_panels = rows.len().div_ceil(mr);
        let (mut a_buf, a_start) = aligned_zeros(a_panels * mr * Kr::KC.min(k));
        let mut k0 = 0;
        loop {
            let kcb = Kr::KC.min(k - k0);
            let a_pack = &mut a_buf[a_start..a_start + a_panels * mr * kcb];
            self.pack_a(a_pack, rows.clone(), k0, kcb, mr);
            let first = k0 == 0;
            let last = k0 + kcb == k;
            for jp in panels.clone() {
                let b_panel = self.w.panel(k0, kcb, jp);
                let j0 = jp * nr;
                let cols = nr.min(n - j0);
                let bias_ptr = if last {
                    bias[j0..j0 + nr].as_ptr()
                } else {
                    std::ptr::null()
                };
                let gelu = last && self.gelu;
                for (ip, a_panel) in a_pack.chunks_exact(mr * kcb).enumerate() {
                    let r0 = rows.start + ip * mr;
                    let tile_rows = mr.min(rows.end - r0);
                    if tile_rows == mr && cols == nr {
                        // SAFETY: a_panel holds kcb·MR f32, b_panel kcb·NR, bias_ptr NR (or
                        // null); the MR x NR tile at (r0, j0) lies inside the M x N output
                        // (r0 + MR <= M, j0 + NR <= N) and inside this task's region.
                        unsafe {
                            kr.tile(
                                kcb,
                                a_panel.as_ptr(),
                                b_panel.as_ptr(),
                                out.0.add(r0 * n + j0),
                                n,
                                !first,
                                bias_ptr,
                                gelu,
                            )
                        };
                    } else {
                        // Edge tile: the same kernel on a scratch tile, then copy the valid part.
                        let mut tmp = [0.0f32; MAX_TILE];
                        for i in 0..tile_rows {
                            // SAFETY: row r0 + i < M, columns j0..j0 + cols <= N: inside the
                            // output and this task's region.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(out.0.add((r0 + i) * n + j0), cols)
                            };
                            if !first {
                                tmp[i * nr..i * nr + cols].copy_from_slice(dst);
                            }
                        }
                        // SAFETY: as for the full tile; `tmp` holds MAX_TILE >= MR·NR f32 and
                        // is the MR x NR tile with row stride NR.
                        unsafe {
                            kr.tile(
                                kcb,
                                a_panel.as_ptr(),
                                b_panel.as_ptr(),
                                tmp.as_mut_ptr(),
                                nr,
                                !first,
                                bias_ptr,
                                gelu,
                            )
                        };
                        for i in 0..tile_rows {
                            // SAFETY: as above.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(out.0.add((r0 + i) * n + j0), cols)
                            };
                            dst.copy_from_slice(&tmp[i * nr..i * nr + cols]);
                        }
                    }
                }
            }
            k0 += kcb;
            if k0 >= k {
                break;
            }
        }
    }

    /// Packs x[rows, k0..k0+kcb] into MR-row panels, k-major (`panel[p·MR + i]`), rows past the
    /// end zero.
    fn pack_a(
        &self,
        a_pack: &mut [f32],
        rows: std::ops::Range<usize>,
        k0: usize,
        kcb: usize,
        mr: usize,
    ) {
        for (ip, panel) in a_pack.chunks_exact_mut(mr * kcb).enumerate() {
            for i in 0..mr {
                let r = rows.start + ip * mr + i;
                if r < rows.end {
                    let src = &self.x[r * self.k + k0..][..kcb];
                    for (p, &v) in src.iter().enumerate() {
                        panel[p * mr + i] = v;
                    }
                } else {
                    for p in 0..kcb {
                        panel[p * mr + i] = 0.0;
                    }
                }
            }
        }
    }
}
