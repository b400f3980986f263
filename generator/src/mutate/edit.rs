//! Edits of a [`Target`]'s bytes, one change each: set bits, write a
//! (random) value, point a field past the end of the file, move an offset
//! off its boundary. An edit never skips when its structure was found,
//! but returns what an `apply` step returns, so that one edit can serve as
//! a whole `apply`.

use super::target::U64;
use super::{Skip, Target};
use rand::distributions::uniform::SampleRange;
use rand::Rng;
use spec_model::fields::Field;

/// What an `apply` step returns.
type Applied = Result<(), Skip>;

impl Target {
    /// Replaces a field of the structure at `at` by `new` of its value.
    pub(super) fn update(&mut self, at: u64, f: Field, new: impl FnOnce(u64) -> u64) -> Applied {
        let v = new(self.get(at, f));
        self.put(at, f, v);
        Ok(())
    }

    /// Sets `bits` in a field of the structure at `at`.
    pub(super) fn set_bits(&mut self, at: u64, f: Field, bits: u64) -> Applied {
        self.update(at, f, |v| v | bits)
    }

    /// Sets one bit, drawn from `bits`, in a field of the structure at `at`.
    pub(super) fn set_random_bit(
        &mut self,
        at: u64,
        f: Field,
        bits: impl SampleRange<u32>,
    ) -> Applied {
        let bit = self.rng.gen_range(bits);
        self.set_bits(at, f, 1 << bit)
    }

    /// Writes a value drawn from `values` to a field of the structure at `at`.
    pub(super) fn put_random(
        &mut self,
        at: u64,
        f: Field,
        values: impl SampleRange<u64>,
    ) -> Applied {
        let v = self.rng.gen_range(values);
        self.put(at, f, v);
        Ok(())
    }

    /// Points a field of the structure at `at` at or past the end of the
    /// file ([`Target::past_eof`]).
    pub(super) fn put_past_eof(&mut self, at: u64, f: Field) -> Applied {
        let off = self.past_eof();
        self.put(at, f, off);
        Ok(())
    }

    /// Points the 64-bit table entry at `at` at host offset `off`,
    /// keeping the bits of `keep` (its flags).
    pub(super) fn repoint(&mut self, at: u64, keep: u64, off: u64) -> Applied {
        self.update(at, U64, |v| v & keep | off)
    }

    /// Lowers a field of the structure at `at` by `by`, or skips with
    /// `why` when it holds less.
    pub(super) fn lower(&mut self, at: u64, f: Field, by: u64, why: Skip) -> Applied {
        let v = self.get(at, f).checked_sub(by).ok_or(why)?;
        self.put(at, f, v);
        Ok(())
    }

    /// Sets the refcount of the cluster holding `offset` to 0.
    pub(super) fn unallocate(&mut self, offset: u64) -> Applied {
        self.set_refcount(offset, 0);
        Ok(())
    }

    /// Moves the offset in the 64-bit table entry at `at` off its cluster
    /// boundary ([`Target::misalign_512`]).
    pub(super) fn misalign_entry(&mut self, at: u64) -> Applied {
        let d = self.misalign_512()?;
        self.update(at, U64, |v| v + d)
    }
}
