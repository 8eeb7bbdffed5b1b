//! Transfer codes such as `7-purple-otter`: the number is the nameplate (a public pointer
//! for the relay), the words are the PAKE password and never leave the machine.

use std::{fmt, str::FromStr};

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::wordlist;

/// Words in a generated code.
pub const DEFAULT_WORDS: usize = 2;
/// Minimum estimated entropy of the password part, in bits.
pub const MIN_PASSWORD_BITS: u32 = 22;
/// Words in a generated code that several receivers may use.
pub const MANY_WORDS: usize = 3;
/// Least estimated bits in the words of a code that several receivers may use: the
/// sender admits up to 3 failed tries in all, so a guesser wins with odds below 3 in 2^33,
/// which is below the 1 in 2^22 of a single-use two-word code.
pub const MIN_MANY_BITS: u32 = 33;

/// The public number of a code: the relay pairs the two sides on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nameplate(pub u32);

impl fmt::Display for Nameplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A parsed code: nameplate plus the secret words.
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    nameplate: Nameplate,
    words: Vec<String>,
}

/// Why a code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseCodeError {
    #[error("a code looks like 7-purple-otter: a number, then words, separated by '-'")]
    Malformed,
    #[error("the number in a code must be between 1 and 999999")]
    BadNameplate,
    #[error(
        "the code is too weak to protect a transfer ({bits} bits); use at least {MIN_PASSWORD_BITS} bits, \
         e.g. two words from the list (`convey send` makes one) or a long random phrase"
    )]
    TooWeak { bits: u32 },
}

impl Code {
    /// A fresh code on `nameplate` with [`DEFAULT_WORDS`] random words.
    pub fn generate<R: Rng + ?Sized>(rng: &mut R, nameplate: Nameplate) -> Self {
        let words = wordlist::choose_words(rng, DEFAULT_WORDS)
            .into_iter()
            .map(str::to_owned)
            .collect();
        Self { nameplate, words }
    }

    /// A fresh code on `nameplate` with `words` random words.
    pub fn generate_words<R: Rng + ?Sized>(rng: &mut R, nameplate: Nameplate, words: usize) -> Self {
        let words = wordlist::choose_words(rng, words)
            .into_iter()
            .map(str::to_owned)
            .collect();
        Self { nameplate, words }
    }

    /// Same words, another nameplate (used when the relay allocates the number).
    pub fn with_nameplate(&self, nameplate: Nameplate) -> Self {
        Self {
            nameplate,
            words: self.words.clone(),
        }
    }

    pub fn nameplate(&self) -> Nameplate {
        self.nameplate
    }

    /// The PAKE password: the words, joined as typed.
    pub fn password(&self) -> String {
        self.words.join("-")
    }

    /// A conservative entropy estimate of the words: 11 bits for a word from the list,
    /// about 2 bits per character for anything else (like free-form passphrases).
    pub fn estimated_bits(&self) -> u32 {
        self.words
            .iter()
            .map(|w| {
                if wordlist::contains(w) {
                    wordlist::BITS_PER_WORD
                } else {
                    2 * u32::try_from(w.chars().count()).unwrap_or(u32::MAX / 4)
                }
            })
            .sum()
    }
}

impl FromStr for Code {
    type Err = ParseCodeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (number, rest) = s.split_once('-').ok_or(ParseCodeError::Malformed)?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseCodeError::Malformed);
        }
        let number: u32 = number.parse().map_err(|_| ParseCodeError::BadNameplate)?;
        if !(1..=999_999).contains(&number) {
            return Err(ParseCodeError::BadNameplate);
        }
        let words: Vec<String> = rest.split('-').map(str::to_lowercase).collect();
        if words
            .iter()
            .any(|w| w.is_empty() || w.chars().any(char::is_whitespace))
        {
            return Err(ParseCodeError::Malformed);
        }
        let code = Self {
            nameplate: Nameplate(number),
            words,
        };
        let bits = code.estimated_bits();
        if bits < MIN_PASSWORD_BITS {
            return Err(ParseCodeError::TooWeak { bits });
        }
        Ok(code)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.nameplate, self.words.join("-"))
    }
}

/// Never print the secret words in logs by accident.
impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({}-<redacted>)", self.nameplate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_parse() {
        let code: Code = "7-purple-otter".parse().unwrap();
        assert_eq!(code.nameplate(), Nameplate(7));
        assert_eq!(code.password(), "purple-otter");
        assert_eq!(code.to_string(), "7-purple-otter");
        assert_eq!(format!("{code:?}"), "Code(7-<redacted>)");
    }

    #[test]
    fn codes_for_many_have_enough_bits() {
        let c = Code::generate_words(&mut rand::thread_rng(), Nameplate(3), MANY_WORDS);
        assert!(c.estimated_bits() >= MIN_MANY_BITS);
        assert!(Code::generate(&mut rand::thread_rng(), Nameplate(3)).estimated_bits() < MIN_MANY_BITS);
    }

    #[test]
    fn generated_codes_parse_back() {
        let mut rng = rand::thread_rng();
        for _ in 0..100 {
            let c = Code::generate(&mut rng, Nameplate(42));
            assert_eq!(c.to_string().parse::<Code>().unwrap(), c);
            assert!(c.estimated_bits() >= MIN_PASSWORD_BITS);
        }
    }

    #[test]
    fn refuses_bad_codes() {
        assert_eq!("purple-otter".parse::<Code>(), Err(ParseCodeError::Malformed));
        assert_eq!("7".parse::<Code>(), Err(ParseCodeError::Malformed));
        assert_eq!("7--otter".parse::<Code>(), Err(ParseCodeError::Malformed));
        assert_eq!(
            "0-purple-otter".parse::<Code>(),
            Err(ParseCodeError::BadNameplate)
        );
        assert!(matches!(
            "7-pilot".parse::<Code>(),
            Err(ParseCodeError::TooWeak { bits: 11 })
        ));
        assert!(matches!(
            "7-otter".parse::<Code>(),
            Err(ParseCodeError::TooWeak { bits: 10 })
        ));
        assert_eq!("7-pilot-planet".parse::<Code>().unwrap().estimated_bits(), 22);
        assert!(matches!(
            "7-abc".parse::<Code>(),
            Err(ParseCodeError::TooWeak { .. })
        ));
        assert!("7-correcthorsebatterystaple".parse::<Code>().is_ok());
    }
}
