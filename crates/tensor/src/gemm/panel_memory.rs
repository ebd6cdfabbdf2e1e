//! Memory for packed weight panels: zeroed and 64-byte aligned.
//!
//! A large weight's panels get an anonymous mapping of their own, which goes back to the
//! system whole when the matrix is dropped and never shares pages with the heap, where loading
//! allocates and frees a temporary f32 copy of every f16 or bf16 weight. On the heap, those
//! copies and the panels interleave, and the freed copies' pages stay resident between them:
//! KoE5's peak RSS was 33-40 MB higher that way, in every dtype (`koembed bench`, W1).
//!
//! Transparent huge pages (`MADV_HUGEPAGE`) were tried for these mappings: forward passes
//! were no faster (in-process A/B, e5-small and KoE5 W1), and loading KoE5 in f32 took 2-4x as
//! long, zeroing fresh huge pages in the VM.

use memmap2::MmapMut;

use crate::aligned::CacheLineVec;

/// Panels smaller than this stay on the heap: attention packs K and V blocks of a few KB per
/// head on every call, where a mapping of their own would cost two system calls each.
const MAPPED_MIN_BYTES: usize = 1 << 20;

/// Plain numbers that may be read from any initialised bytes: every bit pattern is a value.
///
/// # Safety
/// An implementor must have no invalid bit patterns, no padding and an alignment of at most
/// 64.
pub(crate) unsafe trait Plain: Copy {}

// SAFETY: f32, f16, bf16 and i8 are plain bits of 4, 2, 2 and 1 bytes, aligned to their size;
// every pattern is a number, an infinity or a NaN.
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for half::f16 {}
// SAFETY: as above.
unsafe impl Plain for half::bf16 {}
// SAFETY: as above.
unsafe impl Plain for i8 {}

/// `len` zeroed bytes at a 64-byte boundary.
pub(crate) struct PanelMemory {
    storage: Storage,
    len: usize,
}

enum Storage {
    Heap(CacheLineVec<u8>),
    /// An anonymous mapping (page-aligned, zeroed by the system).
    Mapped(MmapMut),
}

impl PanelMemory {
    pub fn zeroed(len: usize) -> Self {
        if len >= MAPPED_MIN_BYTES {
            if let Ok(map) = MmapMut::map_anon(len) {
                return PanelMemory {
                    storage: Storage::Mapped(map),
                    len,
                };
            }
            // No mapping (an address-space limit): the heap serves as well.
        }
        PanelMemory {
            storage: Storage::Heap(CacheLineVec::filled(len, 0)),
            len,
        }
    }

    /// Bytes held for the panels.
    pub fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Heap(buf) => buf.as_slice(),
            Storage::Mapped(map) => &map[..self.len],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.storage {
            Storage::Heap(buf) => buf.as_mut_slice(),
            Storage::Mapped(map) => &mut map[..self.len],
        }
    }

    /// The first `count` values of `T` (panics if they do not fit).
    pub fn as_slice<T: Plain>(&self, count: usize) -> &[T] {
        let bytes = &self.bytes()[..count * std::mem::size_of::<T>()];
        debug_assert!(bytes.as_ptr().cast::<T>().is_aligned());
        // SAFETY: the bytes are initialised (zeroed at creation), `count` values of T fit in
        // them (the slice above is bounds-checked), they start at a 64-byte boundary (heap:
        // a `CacheLineVec`; mapped: page-aligned) and T is aligned
        // to at most 64, and every bit pattern is a T (`Plain`). The borrow of `self` covers
        // the returned slice's lifetime.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), count) }
    }

    /// [`Self::as_slice`], writable.
    pub fn as_mut_slice<T: Plain>(&mut self, count: usize) -> &mut [T] {
        let bytes = &mut self.bytes_mut()[..count * std::mem::size_of::<T>()];
        debug_assert!(bytes.as_ptr().cast::<T>().is_aligned());
        // SAFETY: as in `as_slice`; the exclusive borrow of `self` makes the slice unique, and
        // any value written is valid bytes.
        unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<T>(), count) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_panels_are_zeroed_aligned_and_writable() {
        for len in [
            0,
            1,
            64,
            4095,
            MAPPED_MIN_BYTES - 4,
            MAPPED_MIN_BYTES,
            5 << 20,
        ] {
            let mut memory = PanelMemory::zeroed(len);
            assert_eq!(memory.len(), len);
            let words = memory.as_mut_slice::<f32>(len / 4);
            assert!(words.iter().all(|&v| v == 0.0), "len {len}");
            assert_eq!(words.as_ptr() as usize % 64, 0, "len {len}");
            for (i, w) in words.iter_mut().enumerate() {
                *w = i as f32;
            }
            let read = memory.as_slice::<f32>(len / 4);
            assert!(read.iter().enumerate().all(|(i, &v)| v == i as f32));
            let bytes = memory.as_slice::<i8>(len);
            assert_eq!(bytes.len(), len);
        }
    }

    #[test]
    #[should_panic]
    fn reading_past_the_panels_panics() {
        let memory = PanelMemory::zeroed(MAPPED_MIN_BYTES);
        let _ = memory.as_slice::<f32>(MAPPED_MIN_BYTES / 4 + 1);
    }
}
