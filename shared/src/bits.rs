//! Bitfields laid out as BitTorrent's and the push protocol's: item `k` in bit `0x80 >> (k % 8)`
//! of byte `k / 8` (bitvec's `Msb0`). One place for the indexing every bitfield user needs.

use bitvec::{order::Msb0, view::BitView};

/// Is item `k` set? An index past the end reads as unset.
#[must_use]
pub fn has(bits: &[u8], k: u64) -> bool {
    usize::try_from(k)
        .ok()
        .and_then(|k| bits.view_bits::<Msb0>().get(k).map(|b| *b))
        .unwrap_or(false)
}

/// Sets item `k`; returns the index of the byte it changed, or `None` for an index past the
/// end (nothing changes).
pub fn set(bits: &mut [u8], k: u64) -> Option<usize> {
    let k = usize::try_from(k).ok()?;
    let mut bit = bits.view_bits_mut::<Msb0>().get_mut(k)?;
    *bit = true;
    Some(k / 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_k_is_bit_0x80_shifted_by_k_mod_8_of_byte_k_div_8() {
        let mut bits = vec![0u8; 2];
        assert_eq!(set(&mut bits, 0), Some(0));
        assert_eq!(set(&mut bits, 9), Some(1));
        assert_eq!(bits, [0x80, 0x40]);
        assert!(has(&bits, 0) && has(&bits, 9));
        assert!(!has(&bits, 1) && !has(&bits, 8) && !has(&bits, 15));
    }

    #[test]
    fn an_index_past_the_end_is_unset_and_changes_nothing() {
        let mut bits = vec![0xffu8; 1];
        assert!(!has(&bits, 8));
        assert!(!has(&bits, u64::MAX));
        assert_eq!(set(&mut bits, 8), None);
        assert_eq!(set(&mut bits, u64::MAX), None);
        assert_eq!(bits, [0xff]);
    }
}
