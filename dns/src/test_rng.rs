//! A small deterministic random source (xorshift) for the crate's randomised tests, so a
//! failing seed replays.

pub(crate) struct Rng(u64);

impl Rng {
    /// A source for `seed`; every seed, zero included, gives a usable state.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}
