//! The word list for codes: BIP-39 English (2048 words, 11 bits each, every word
//! identified by its first four letters, so a typo is easy to catch and complete).

use rand::Rng;

/// Bits of entropy each word from the list contributes.
pub const BITS_PER_WORD: u32 = 11;

/// The full list, sorted.
pub fn words() -> &'static [&'static str; 2048] {
    bip39::Language::English.word_list()
}

/// Whether `word` is on the list.
pub fn contains(word: &str) -> bool {
    words().binary_search(&word).is_ok()
}

/// `n` words chosen uniformly at random.
pub fn choose_words<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<&'static str> {
    let list = words();
    (0..n).map(|_| list[rng.gen_range(0..list.len())]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn four_letter_prefixes_are_unique() {
        let prefixes: HashSet<String> = words().iter().map(|w| w.chars().take(4).collect()).collect();
        assert_eq!(prefixes.len(), 2048);
    }

    #[test]
    fn list_is_sorted_for_binary_search() {
        assert!(words().windows(2).all(|w| w[0] < w[1]));
        assert!(contains("pilot") && contains("planet") && !contains("otter") && !contains("zzzz"));
    }
}
