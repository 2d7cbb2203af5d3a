//! TPC-C's random functions (TPC-C v5.11 clause 4.3.2 and 2.1.6):
//! a-strings and n-strings, customer last names made of syllables, and
//! the non-uniform `NURand(A, x, y)` that makes some customers and items
//! hot.
//!
//! `NURand` adds a constant `C` chosen once per population and once per
//! run. Clause 2.1.6.1 ties the run's `C` for `C_LAST` to the load's: the
//! difference must lie in [65, 119] and be neither 96 nor 112, so that the
//! names looked up during the run are not exactly the names made hot at
//! load time. [`Constants`] holds the three values of one phase.

use rand::Rng;

/// Clause 4.3.2.3: the ten syllables of a customer last name.
const SYLLABLES: [&str; 10] = ["BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING"];

/// `A` of `NURand` for customer last names, customer ids and item ids (clause 2.1.6).
pub const A_C_LAST: i64 = 255;
pub const A_C_ID: i64 = 1023;
pub const A_OL_I_ID: i64 = 8191;

/// The `C` constants of `NURand` for one phase (load or run).
#[derive(Clone, Copy, Debug)]
pub struct Constants {
    pub c_last: i64,
    pub c_id: i64,
    pub ol_i_id: i64,
}

impl Constants {
    /// Constants for loading the population: each uniform in [0, A].
    pub fn for_load(rng: &mut impl Rng) -> Constants {
        Constants {
            c_last: rng.random_range(0..=A_C_LAST),
            c_id: rng.random_range(0..=A_C_ID),
            ol_i_id: rng.random_range(0..=A_OL_I_ID),
        }
    }

    /// Constants for the measured run, given the load's.
    pub fn for_run(load: Constants, rng: &mut impl Rng) -> Constants {
        // Clause 2.1.6.1: C_LAST of the run differs from the load's by a
        // delta in [65, 119], delta ∉ {96, 112}. C_ID and OL_I_ID may be
        // drawn anew without constraint.
        let c_last = loop {
            let candidate = rng.random_range(0..=A_C_LAST);
            if run_c_last_is_valid(load.c_last, candidate) {
                break candidate;
            }
        };
        Constants { c_last, c_id: rng.random_range(0..=A_C_ID), ol_i_id: rng.random_range(0..=A_OL_I_ID) }
    }
}

pub fn run_c_last_is_valid(load: i64, run: i64) -> bool {
    let delta = (run - load).abs();
    (65..=119).contains(&delta) && delta != 96 && delta != 112
}

/// Clause 2.1.6: `NURand(A, x, y) = (((random(0, A) | random(x, y)) + C) % (y - x + 1)) + x`.
pub fn nurand(rng: &mut impl Rng, a: i64, c: i64, x: i64, y: i64) -> i64 {
    debug_assert!(x <= y);
    (((rng.random_range(0..=a) | rng.random_range(x..=y)) + c) % (y - x + 1)) + x
}

/// Clause 4.3.2.3: the last name numbered `number` in [0, 999], three
/// syllables chosen by its decimal digits.
pub fn last_name(number: i64) -> String {
    assert!((0..1000).contains(&number), "last-name numbers are three digits: {number}");
    let digit = |position: u32| SYLLABLES[((number / 10_i64.pow(position)) % 10) as usize];
    format!("{}{}{}", digit(2), digit(1), digit(0))
}

/// Clause 4.3.2.2: a random a-string of length in [min, max] (letters and digits).
pub fn a_string(rng: &mut impl Rng, min: usize, max: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let length = rng.random_range(min..=max);
    (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Clause 4.3.2.2: a random n-string (digits) of length in [min, max].
pub fn n_string(rng: &mut impl Rng, min: usize, max: usize) -> String {
    let length = rng.random_range(min..=max);
    (0..length).map(|_| char::from(b'0' + rng.random_range(0..10u8))).collect()
}

/// Clause 4.3.3.1: a zip code, four random digits then `11111`.
pub fn zip(rng: &mut impl Rng) -> String {
    format!("{}11111", n_string(rng, 4, 4))
}

/// Clause 4.3.3.1: I_DATA and S_DATA, an a-string of [26, 50] characters
/// of which 10 % hold `ORIGINAL` at a random position.
pub fn data_maybe_original(rng: &mut impl Rng) -> String {
    let mut data = a_string(rng, 26, 50);
    if rng.random_ratio(1, 10) {
        let at = rng.random_range(0..=data.len() - "ORIGINAL".len());
        data.replace_range(at..at + "ORIGINAL".len(), "ORIGINAL");
    }
    data
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn last_names_follow_the_syllable_table() {
        assert_eq!(last_name(0), "BARBARBAR");
        assert_eq!(last_name(371), "PRICALLYOUGHT");
        assert_eq!(last_name(999), "EINGEINGEING");
    }

    #[test]
    fn nurand_stays_in_range() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let v = nurand(&mut rng, A_C_ID, 259, 1, 3000);
            assert!((1..=3000).contains(&v));
            let v = nurand(&mut rng, A_C_LAST, 200, 0, 29);
            assert!((0..=29).contains(&v));
        }
    }

    #[test]
    fn run_constant_keeps_the_clause_2_1_6_1_distance() {
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..1000 {
            let load = Constants::for_load(&mut rng);
            let run = Constants::for_run(load, &mut rng);
            let delta = (run.c_last - load.c_last).abs();
            assert!((65..=119).contains(&delta) && delta != 96 && delta != 112, "delta {delta}");
        }
    }

    #[test]
    fn data_strings_have_spec_lengths() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut originals = 0;
        for _ in 0..1000 {
            let data = data_maybe_original(&mut rng);
            assert!((26..=50).contains(&data.len()));
            originals += usize::from(data.contains("ORIGINAL"));
        }
        assert!((50..200).contains(&originals), "about 10 % hold ORIGINAL: {originals}");
        assert_eq!(zip(&mut rng).len(), 9);
    }
}
