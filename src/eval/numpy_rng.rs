//! numpy's random streams, bit for bit: `SeedSequence`, `PCG64`, `default_rng`, `Generator.integers` (int64,
//! closed-open range) and `Generator.permutation` of a 1-D array.
//!
//! Sources (numpy 2.x):
//! - `numpy/random/bit_generator.pyx` — `SeedSequence`: `_coerce_to_uint32_array`, `mix_entropy`, `hashmix`,
//!   `mix`, `generate_state` (constants `INIT_A`, `MULT_A`, `INIT_B`, `MULT_B`, `MIX_MULT_L`, `MIX_MULT_R`,
//!   `XSHIFT`; pool size 4);
//! - `numpy/random/_pcg64.pyx` + `src/pcg64/pcg64.h` — seeding from `generate_state(4, uint64)` as
//!   (state = words 0,1 high/low; inc = words 2,3), `pcg_setseq_128_srandom_r`, the 128-bit LCG step, XSL-RR
//!   output, and the 32-bit buffer `pcg64_next32` (low half first, high half kept for the next call);
//! - `numpy/random/_bounded_integers.pyx` (`_rand_int64`) + `src/distributions/distributions.c`
//!   (`random_bounded_uint64_fill`, `buffered_bounded_lemire_uint32`, `bounded_lemire_uint64`) — Lemire's method,
//!   32-bit draws when the inclusive range fits in 32 bits;
//! - `numpy/random/_generator.pyx` (`permutation`, `shuffle`, `_shuffle_raw`) + `random_interval` — Fisher–Yates
//!   from the last element down, with masked rejection sampling.

const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// numpy's `SeedSequence(entropy)` (no spawn key), with its mixed pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedSequence {
    pool: [u32; POOL_SIZE],
}

fn hashmix(value: u32, hash_const: &mut u32) -> u32 {
    let mut v = value ^ *hash_const;
    *hash_const = hash_const.wrapping_mul(MULT_A);
    v = v.wrapping_mul(*hash_const);
    v ^ (v >> XSHIFT)
}

fn mix(x: u32, y: u32) -> u32 {
    let r = MIX_MULT_L.wrapping_mul(x).wrapping_sub(MIX_MULT_R.wrapping_mul(y));
    r ^ (r >> XSHIFT)
}

impl SeedSequence {
    /// `SeedSequence(entropy)` for a non-negative integer entropy (`_coerce_to_uint32_array`: 32-bit words, least
    /// significant first; 0 is `[0]`).
    pub fn new(entropy: u128) -> Self {
        let mut words = Vec::new();
        let mut e = entropy;
        loop {
            words.push(e as u32);
            e >>= 32;
            if e == 0 {
                break;
            }
        }
        Self::from_words(&words)
    }

    /// `SeedSequence` from an already-coerced uint32 entropy array.
    pub fn from_words(entropy: &[u32]) -> Self {
        let mut pool = [0u32; POOL_SIZE];
        let mut hc = INIT_A;
        for (i, slot) in pool.iter_mut().enumerate() {
            *slot = hashmix(entropy.get(i).copied().unwrap_or(0), &mut hc);
        }
        for i_src in 0..POOL_SIZE {
            for i_dst in 0..POOL_SIZE {
                if i_src != i_dst {
                    let h = hashmix(pool[i_src], &mut hc);
                    pool[i_dst] = mix(pool[i_dst], h);
                }
            }
        }
        for &e in entropy.iter().skip(POOL_SIZE) {
            for slot in pool.iter_mut() {
                let h = hashmix(e, &mut hc);
                *slot = mix(*slot, h);
            }
        }
        SeedSequence { pool }
    }

    /// `generate_state(n_words)` with the default dtype uint32.
    pub fn generate_state_u32(&self, n_words: usize) -> Vec<u32> {
        let mut hc = INIT_B;
        (0..n_words)
            .map(|i| {
                let mut v = self.pool[i % POOL_SIZE] ^ hc;
                hc = hc.wrapping_mul(MULT_B);
                v = v.wrapping_mul(hc);
                v ^ (v >> XSHIFT)
            })
            .collect()
    }

    /// `generate_state(n_words, np.uint64)`: twice the uint32 words, viewed little-endian.
    pub fn generate_state_u64(&self, n_words: usize) -> Vec<u64> {
        let w = self.generate_state_u32(2 * n_words);
        w.chunks_exact(2).map(|c| (c[0] as u64) | ((c[1] as u64) << 32)).collect()
    }
}

/// `PCG_DEFAULT_MULTIPLIER_128` (pcg64.h).
const PCG_MULT: u128 = (2_549_297_995_355_413_924u128 << 64) + 4_865_540_595_714_422_341u128;

/// numpy's `PCG64` bit generator (XSL-RR 128/64) with its 32-bit buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg64 {
    state: u128,
    inc: u128,
    has_uint32: bool,
    uinteger: u32,
}

impl Pcg64 {
    /// `PCG64(seed_sequence)`.
    pub fn from_seed_sequence(ss: &SeedSequence) -> Self {
        let v = ss.generate_state_u64(4);
        let s = ((v[0] as u128) << 64) | v[1] as u128;
        let i = ((v[2] as u128) << 64) | v[3] as u128;
        Self::from_state_inc(s, i)
    }

    /// `pcg_setseq_128_srandom_r(initstate, initseq)`.
    pub fn from_state_inc(initstate: u128, initseq: u128) -> Self {
        let mut r = Pcg64 { state: 0, inc: (initseq << 1) | 1, has_uint32: false, uinteger: 0 };
        r.step();
        r.state = r.state.wrapping_add(initstate);
        r.step();
        r
    }

    fn step(&mut self) {
        self.state = self.state.wrapping_mul(PCG_MULT).wrapping_add(self.inc);
    }

    /// `pcg64_next64`: step, then XSL-RR output of the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let s = self.state;
        let x = ((s >> 64) as u64) ^ (s as u64);
        x.rotate_right((s >> 122) as u32)
    }

    /// `pcg64_next32`: buffered halves of a 64-bit draw (low first).
    pub fn next_u32(&mut self) -> u32 {
        if self.has_uint32 {
            self.has_uint32 = false;
            return self.uinteger;
        }
        let n = self.next_u64();
        self.has_uint32 = true;
        self.uinteger = (n >> 32) as u32;
        n as u32
    }
}

/// numpy's `Generator` over PCG64 (only what the vcc2026 rules use).
#[derive(Debug, Clone)]
pub struct Generator {
    bitgen: Pcg64,
}

/// `numpy.random.default_rng(seed)` for an integer seed.
pub fn default_rng(seed: u128) -> Generator {
    Generator { bitgen: Pcg64::from_seed_sequence(&SeedSequence::new(seed)) }
}

impl Generator {
    /// The bit generator.
    pub fn bit_generator(&mut self) -> &mut Pcg64 {
        &mut self.bitgen
    }

    /// `integers(low, high, size)` (int64, `endpoint=False`), drawn with `random_bounded_uint64_fill`
    /// (`use_masked=False`). Requires `low < high`.
    pub fn integers(&mut self, low: i64, high: i64, size: usize) -> Vec<i64> {
        let rng = (high as i128 - 1 - low as i128) as u64; // inclusive range
        let off = low;
        let mut out = Vec::with_capacity(size);
        if rng == 0 {
            out.resize(size, off);
        } else if rng <= 0xFFFF_FFFF {
            if rng == 0xFFFF_FFFF {
                for _ in 0..size {
                    out.push(off.wrapping_add(self.bitgen.next_u32() as i64));
                }
            } else {
                for _ in 0..size {
                    out.push(off.wrapping_add(self.bounded_lemire_u32(rng as u32) as i64));
                }
            }
        } else if rng == u64::MAX {
            for _ in 0..size {
                out.push(off.wrapping_add(self.bitgen.next_u64() as i64));
            }
        } else {
            for _ in 0..size {
                out.push(off.wrapping_add(self.bounded_lemire_u64(rng) as i64));
            }
        }
        out
    }

    /// `buffered_bounded_lemire_uint32` (for 32-bit output the buffer is unused).
    fn bounded_lemire_u32(&mut self, rng: u32) -> u32 {
        let rng_excl = rng.wrapping_add(1);
        let mut m = (self.bitgen.next_u32() as u64) * rng_excl as u64;
        let mut leftover = m as u32;
        if leftover < rng_excl {
            let threshold = (u32::MAX - rng) % rng_excl;
            while leftover < threshold {
                m = (self.bitgen.next_u32() as u64) * rng_excl as u64;
                leftover = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// `bounded_lemire_uint64`.
    fn bounded_lemire_u64(&mut self, rng: u64) -> u64 {
        let rng_excl = rng.wrapping_add(1);
        let mut m = (self.bitgen.next_u64() as u128) * rng_excl as u128;
        let mut leftover = m as u64;
        if leftover < rng_excl {
            let threshold = (u64::MAX - rng) % rng_excl;
            while leftover < threshold {
                m = (self.bitgen.next_u64() as u128) * rng_excl as u128;
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// `random_interval(max)`: a value in `[0, max]` by masked rejection (32-bit draws when `max` fits).
    pub fn random_interval(&mut self, max: u64) -> u64 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        mask |= mask >> 1;
        mask |= mask >> 2;
        mask |= mask >> 4;
        mask |= mask >> 8;
        mask |= mask >> 16;
        mask |= mask >> 32;
        if max <= 0xFFFF_FFFF {
            loop {
                let v = (self.bitgen.next_u32() as u64) & mask;
                if v <= max {
                    return v;
                }
            }
        } else {
            loop {
                let v = self.bitgen.next_u64() & mask;
                if v <= max {
                    return v;
                }
            }
        }
    }

    /// `shuffle(x)` of a 1-D array in place (`_shuffle_raw` with `first = 1`: i from n−1 down to 1,
    /// j = random_interval(i), swap).
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        let n = x.len();
        for i in (1..n).rev() {
            let j = self.random_interval(i as u64) as usize;
            x.swap(i, j);
        }
    }

    /// `permutation(x)` of a 1-D array: a shuffled copy.
    pub fn permutation<T: Clone>(&mut self, x: &[T]) -> Vec<T> {
        let mut v = x.to_vec();
        self.shuffle(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_sequence_zero_matches_spec() {
        // design/vcc2026.md §7: SeedSequence(0).generate_state(5)
        let s = SeedSequence::new(0).generate_state_u32(5);
        assert_eq!(s, vec![2968811710, 3677149159, 745650761, 2884920346, 2642120001]);
    }
}
