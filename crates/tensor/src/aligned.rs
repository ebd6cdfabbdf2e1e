//! Vectors whose first element sits on a 64-byte boundary: a cache line, a zmm register, a row
//! of an AMX tile.
//!
//! The allocator only promises 16 bytes for large blocks (glibc hands out mappings 16 bytes
//! past a page start), so every 64-byte row of a tensor straddled two cache lines. An AMX tile
//! load or store of 16 such rows touches 32 lines instead of 16: on the Xeon, a bf16 GEMM
//! (2,048 x 384 x 1,536) took 3.0 ms with its activations and output 16 bytes off a line
//! against 2.05 ms aligned (a C probe of the same loop), and the engine's took 4.1 ms.

/// `len` values of `T` starting at a 64-byte boundary: a `Vec` with up to one line to spare,
/// and the offset of the first aligned element in it. Never grows, so the offset stays right.
pub struct CacheLineVec<T> {
    buf: Vec<T>,
    start: usize,
    len: usize,
}

impl<T: Copy> CacheLineVec<T> {
    /// `len` copies of `value`, aligned. `T`'s size must divide 64 (f32, i32, u8, i8, ...).
    pub fn filled(len: usize, value: T) -> Self {
        let size = std::mem::size_of::<T>().max(1);
        assert!(64 % size == 0, "CacheLineVec: a {size}-byte element");
        let spare = 64 / size - 1;
        let buf = vec![value; len + spare];
        // The allocation is aligned to T, so a 64-byte boundary is at most `spare` elements in.
        let start = buf.as_ptr().align_offset(64).min(spare);
        CacheLineVec { buf, start, len }
    }

    /// An aligned copy of `values`.
    pub fn from_slice(values: &[T]) -> Self {
        match values.first() {
            None => CacheLineVec::from_vec(Vec::new()),
            Some(&first) => {
                let mut copy = CacheLineVec::filled(values.len(), first);
                copy.as_mut_slice().copy_from_slice(values);
                copy
            }
        }
    }

    /// Takes `v` as it is (its alignment is the allocator's): a caller's data is not copied.
    pub fn from_vec(v: Vec<T>) -> Self {
        let len = v.len();
        CacheLineVec {
            buf: v,
            start: 0,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// The values as a plain `Vec` (moved down to the allocation's start if they were not
    /// there).
    pub fn into_vec(mut self) -> Vec<T> {
        self.buf.truncate(self.start + self.len);
        self.buf.drain(..self.start);
        self.buf
    }
}

impl<T: Copy> Clone for CacheLineVec<T> {
    /// A new aligned allocation (a cloned `Vec` keeps no alignment but the allocator's).
    fn clone(&self) -> Self {
        CacheLineVec::from_slice(self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::CacheLineVec;

    #[test]
    fn filled_vectors_start_on_a_line_and_keep_their_values() {
        for len in [0, 1, 15, 16, 17, 1000, 1 << 20] {
            let mut v = CacheLineVec::filled(len, 1.5f32);
            assert_eq!(v.len(), len);
            assert_eq!(v.as_slice().as_ptr() as usize % 64, 0, "f32 x {len}");
            assert!(v.as_slice().iter().all(|&x| x == 1.5));
            for (i, x) in v.as_mut_slice().iter_mut().enumerate() {
                *x = i as f32;
            }
            let c = v.clone();
            if len > 0 {
                assert_eq!(c.as_slice().as_ptr() as usize % 64, 0, "clone of {len}");
            }
            assert_eq!(c.as_slice(), v.as_slice());
            let plain = v.into_vec();
            assert_eq!(plain.len(), len);
            assert!(plain.iter().enumerate().all(|(i, &x)| x == i as f32));

            let bytes = CacheLineVec::filled(len, 7u8);
            assert_eq!(bytes.as_slice().as_ptr() as usize % 64, 0, "u8 x {len}");
            assert_eq!(bytes.len(), len);
        }
    }

    #[test]
    fn a_callers_vec_is_taken_as_it_is() {
        let v = vec![1.0f32, 2.0, 3.0];
        let ptr = v.as_ptr();
        let taken = CacheLineVec::from_vec(v);
        assert_eq!(taken.as_slice().as_ptr(), ptr);
        assert_eq!(taken.into_vec(), [1.0, 2.0, 3.0]);
    }
}
