//! Keycode: an order-preserving encoding of SQL values and composite keys.
//!
//! The engine orders keys by their bytes and knows nothing of SQL. For a
//! range scan over a primary key or an index to return rows in SQL order,
//! the bytes of an encoded key must sort exactly as the values do. This
//! module is that encoding:
//!
//! - [`encode_value`] appends one value: a one-byte kind tag, then a body
//!   that is self-delimiting (a decoder knows where it ends without a length
//!   prefix) and prefix-free (no body is a proper prefix of another body of
//!   the same kind).
//! - [`encode_key`] concatenates the encodings of a key's components.
//!   Because every component is prefix-free, comparing two concatenations
//!   byte by byte compares them component by component, and the encoding of
//!   a key is a byte prefix of the encoding of any longer key that starts
//!   with the same components. So a key prefix (`(warehouse, district)` of a
//!   `(warehouse, district, order)` key) is also a range prefix, and
//!   [`prefix_end`] turns it into the exclusive end of that range.
//! - [`decode_key`] and [`decode_value`] invert the encoding. They accept
//!   only canonical encodings (exactly the bytes [`encode_value`] produces)
//!   and report anything else as [`Error::Corrupt`]; they never panic, since
//!   the bytes come from disk.
//!
//! Guarantee: for two keys whose components have the same column types
//! position by position (each component either that type or NULL), byte
//! order of the encodings equals [`Value::total_cmp`] order, compared
//! lexicographically by component, a key sorting before every longer key it
//! is a prefix of. Equal values encode to equal bytes (`1.0` and `1.00`,
//! `-0.0` and `+0.0`, all NaNs), so an encoded key identifies a row.
//!
//! Layout, by kind (`tag` then body; all integers big-endian):
//!
//! ```text
//!   NULL       0x00
//!   BOOL       0x01  0x00 | 0x01
//!   INT        0x02  i64 with its sign bit flipped              (8 bytes)
//!   FLOAT      0x03  f64 bits, order-flipped (see below)        (8 bytes)
//!   DECIMAL    0x04  class [exponent digit-pairs...]            (1 to 17 bytes)
//!   TEXT       0x05  UTF-8, 0x00 escaped as 0x00 0xFF, then 0x00 0x01
//!   TIMESTAMP  0x06  i64 micros with its sign bit flipped       (8 bytes)
//! ```
//!
//! NULL has the smallest tag, so it sorts before every value of a column,
//! as [`Value::total_cmp`] orders it.
//!
//! Different kinds have different tags, so values of different kinds do
//! not interleave by value: `Int(2)` sorts before `Float(1.0)` and before
//! `Decimal(1)` whatever their values. That is deliberate. A key column has
//! one type, and the SQL layer coerces every value to the column's type
//! (an integer literal compared with a `DECIMAL` key becomes a `Decimal`)
//! before it encodes a key or a scan bound. The tag order otherwise follows
//! [`Value::total_cmp`]'s ranking of kinds (booleans, numbers, text,
//! timestamps).
//!
//! FLOAT uses the usual trick: a non-negative float's bits with the sign
//! bit set, a negative float's bits all inverted. Before that, `-0.0` is
//! written as `+0.0` and every NaN as the one canonical quiet NaN, which
//! then sorts above `+inf`, as [`crate::value::total_float_cmp`] orders it.
//!
//! DECIMAL (up to 28 fractional digits, a 96-bit mantissa, so at most 29
//! significant digits) is written as a scientific number `±0.d₁d₂…dₙ × 10^E`
//! with `d₁ ≠ 0` and trailing zeros stripped, so that the scale a value
//! happens to carry does not change its bytes. The body is:
//!
//! ```text
//!   class     0x00 negative, 0x01 zero (nothing follows), 0x02 positive
//!   exponent  E + 128, one byte (E is between -27 and 29)
//!   digits    d₁d₂ d₃d₄ … as base-100 "centimal" pairs, the last padded
//!             with a 0 digit; a pair X is written 2X+1, except the last
//!             pair, written 2X (even bytes mark the end)
//! ```
//!
//! For positive numbers a larger exponent means a larger number, and for
//! the same exponent the digits compare lexicographically, a number whose
//! digits run out first being the smaller (its missing digits are zeros,
//! the other's are not all zeros); an even (final) byte is smaller than any
//! odd byte of the same pair, which is exactly that rule. Negative numbers
//! have the exponent and digit bytes complemented, reversing their order
//! (correct because positive bodies are prefix-free). This is the scheme of
//! SQLite4's key encoding.

use std::fmt;

use rust_decimal::Decimal;

use crate::{Error, Result, Value};

const TAG_NULL: u8 = 0x00;
const TAG_BOOL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_FLOAT: u8 = 0x03;
const TAG_DECIMAL: u8 = 0x04;
const TAG_TEXT: u8 = 0x05;
const TAG_TIMESTAMP: u8 = 0x06;

/// A text's 0x00 bytes are written as these two bytes.
const TEXT_ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];
/// The end of a text. It sorts below an escaped zero and below every other
/// byte, so a text sorts before every longer text it is a prefix of.
const TEXT_TERMINATOR: [u8; 2] = [0x00, 0x01];

/// The one NaN that keys hold: the positive quiet NaN. Positive so that it
/// sorts above `+inf` once order-flipped.
const FLOAT_CANONICAL_NAN_BITS: u64 = 0x7FF8_0000_0000_0000;

/// The sign bit of an `i64` or `f64`, as the top bit of a `u64`.
const SIGN_BIT: u64 = 1 << 63;

const DECIMAL_NEGATIVE: u8 = 0x00;
const DECIMAL_ZERO: u8 = 0x01;
const DECIMAL_POSITIVE: u8 = 0x02;
/// Added to the decimal exponent so that it fits one unsigned byte with
/// order preserved.
const DECIMAL_EXPONENT_BIAS: i32 = 128;
/// Significant digits of the largest mantissa, 2^96 - 1 (29 digits).
const DECIMAL_DIGITS_MAX: usize = 29;
/// Centimal pairs needed for [`DECIMAL_DIGITS_MAX`] digits; a decoder
/// rejects longer digit strings before doing any arithmetic on them.
const DECIMAL_PAIRS_MAX: usize = DECIMAL_DIGITS_MAX.div_ceil(2);
/// The exponent range of normalised decimals: from `0.1 × 10^-27`
/// (`1e-28`, one digit at scale 28) to 29 integer digits.
const DECIMAL_EXPONENT_MIN: i32 = 1 - Decimal::MAX_SCALE as i32;
const DECIMAL_EXPONENT_MAX: i32 = DECIMAL_DIGITS_MAX as i32;
const _: () = assert!(DECIMAL_EXPONENT_MIN + DECIMAL_EXPONENT_BIAS >= 0);
const _: () = assert!(DECIMAL_EXPONENT_MAX + DECIMAL_EXPONENT_BIAS <= u8::MAX as i32);
// Ten to the 2·pairs must fit the u128 that accumulates the digits.
const _: () = assert!(2 * DECIMAL_PAIRS_MAX <= 38);

/// Appends the encoding of one value to `out`.
///
/// Every value can be encoded; see the module documentation for the layout
/// and for why values of different kinds must not share a key column.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(b) => out.extend_from_slice(&[TAG_BOOL, u8::from(*b)]),
        Value::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&encode_i64(*i));
        }
        Value::Float(f) => {
            out.push(TAG_FLOAT);
            out.extend_from_slice(&encode_f64(*f));
        }
        Value::Decimal(d) => {
            out.push(TAG_DECIMAL);
            encode_decimal(out, d);
        }
        Value::Text(s) => {
            out.push(TAG_TEXT);
            encode_text(out, s);
        }
        Value::Timestamp(micros) => {
            out.push(TAG_TIMESTAMP);
            out.extend_from_slice(&encode_i64(*micros));
        }
    }
}

/// Encodes a composite key: its components' encodings, concatenated.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        encode_value(&mut out, value);
    }
    out
}

/// Decodes a whole key written by [`encode_key`]. Bytes that are not a
/// canonical encoding (including trailing garbage) are [`Error::Corrupt`].
pub fn decode_key(bytes: &[u8]) -> Result<Vec<Value>> {
    let mut input = bytes;
    let mut values = Vec::new();
    while !input.is_empty() {
        values.push(decode_value(&mut input)?);
    }
    Ok(values)
}

/// Decodes one value from the front of `input` and advances `input` past
/// it. On error `input` is left where it was.
pub fn decode_value(input: &mut &[u8]) -> Result<Value> {
    let mut rest = *input;
    let value = match take_byte(&mut rest, "kind tag")? {
        TAG_NULL => Value::Null,
        TAG_BOOL => match take_byte(&mut rest, "boolean")? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => return Err(corrupt(format_args!("boolean byte {other:#04x}"))),
        },
        TAG_INT => Value::Int(decode_i64(take_array(&mut rest, "integer")?)),
        TAG_FLOAT => Value::Float(decode_f64(take_array(&mut rest, "float")?)?),
        TAG_DECIMAL => Value::Decimal(decode_decimal(&mut rest)?),
        TAG_TEXT => Value::Text(decode_text(&mut rest)?),
        TAG_TIMESTAMP => Value::Timestamp(decode_i64(take_array(&mut rest, "timestamp")?)),
        other => return Err(corrupt(format_args!("unknown kind tag {other:#04x}"))),
    };
    *input = rest;
    Ok(value)
}

/// The smallest byte string greater than every string that starts with
/// `prefix`: the exclusive end of the range of keys with that prefix.
/// `None` when there is none (the prefix is empty or all `0xFF`), meaning
/// the range is unbounded above.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    // Trailing 0xFF bytes cannot be incremented; every string that extends
    // the shorter prefix before them by a larger byte is the answer's
    // competition, so drop them and increment the last byte that can be.
    let last = prefix.iter().rposition(|&byte| byte != 0xFF)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

fn corrupt(what: impl fmt::Display) -> Error {
    Error::Corrupt(format!("key: {what}"))
}

fn take_byte(input: &mut &[u8], what: &str) -> Result<u8> {
    let (&byte, rest) = input.split_first().ok_or_else(|| corrupt(format_args!("{what} is truncated")))?;
    *input = rest;
    Ok(byte)
}

fn take_array<const N: usize>(input: &mut &[u8], what: &str) -> Result<[u8; N]> {
    let (bytes, rest) = input.split_first_chunk::<N>().ok_or_else(|| corrupt(format_args!("{what} is truncated")))?;
    *input = rest;
    Ok(*bytes)
}

fn encode_i64(i: i64) -> [u8; 8] {
    // Flipping the sign bit maps i64::MIN..=i64::MAX onto 0..=u64::MAX in
    // order.
    ((i as u64) ^ SIGN_BIT).to_be_bytes()
}

fn decode_i64(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ SIGN_BIT) as i64
}

fn encode_f64(f: f64) -> [u8; 8] {
    let bits = if f.is_nan() {
        FLOAT_CANONICAL_NAN_BITS
    } else if f == 0.0 {
        // Both zeros compare equal, so they must encode equal.
        0.0f64.to_bits()
    } else {
        f.to_bits()
    };
    // Non-negative floats order as their bits; setting the sign bit puts
    // them above every negative. Negative floats order inversely to their
    // bits; inverting all bits fixes that and clears the sign bit.
    let ordered = if bits & SIGN_BIT == 0 { bits | SIGN_BIT } else { !bits };
    ordered.to_be_bytes()
}

fn decode_f64(bytes: [u8; 8]) -> Result<f64> {
    let ordered = u64::from_be_bytes(bytes);
    let bits = if ordered & SIGN_BIT != 0 { ordered & !SIGN_BIT } else { !ordered };
    let f = f64::from_bits(bits);
    if f.is_nan() && bits != FLOAT_CANONICAL_NAN_BITS {
        return Err(corrupt("float is a non-canonical NaN"));
    }
    if bits == (-0.0f64).to_bits() {
        return Err(corrupt("float is a negative zero"));
    }
    Ok(f)
}

fn encode_text(out: &mut Vec<u8>, text: &str) {
    for chunk in text.as_bytes().split_inclusive(|&byte| byte == 0) {
        match chunk.split_last() {
            Some((0, head)) => {
                out.extend_from_slice(head);
                out.extend_from_slice(&TEXT_ESCAPED_ZERO);
            }
            _ => out.extend_from_slice(chunk),
        }
    }
    out.extend_from_slice(&TEXT_TERMINATOR);
}

fn decode_text(input: &mut &[u8]) -> Result<String> {
    let mut bytes = Vec::new();
    let mut rest = *input;
    loop {
        let zero = rest.iter().position(|&byte| byte == 0).ok_or_else(|| corrupt("text is not terminated"))?;
        bytes.extend_from_slice(&rest[..zero]);
        let marker = rest.get(zero..zero + 2).ok_or_else(|| corrupt("text is truncated"))?;
        rest = &rest[zero + 2..];
        if marker == TEXT_TERMINATOR {
            break;
        } else if marker == TEXT_ESCAPED_ZERO {
            bytes.push(0);
        } else {
            return Err(corrupt(format_args!("text has a bad escape 0x00 {:#04x}", marker[1])));
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| corrupt("text is not UTF-8"))?;
    *input = rest;
    Ok(text)
}

fn encode_decimal(out: &mut Vec<u8>, d: &Decimal) {
    if d.is_zero() {
        // Covers the negative zero a Decimal can carry: zero has one encoding.
        out.push(DECIMAL_ZERO);
        return;
    }
    let negative = d.is_sign_negative();
    // Normalise: strip trailing zeros, lowering the scale to match, so that
    // `magnitude × 10^-scale` is the value with the fewest digits.
    let mut magnitude = d.mantissa().unsigned_abs();
    let mut scale = d.scale() as i32;
    while magnitude.is_multiple_of(10) {
        magnitude /= 10;
        scale -= 1;
    }
    let mut digits = [0u8; DECIMAL_DIGITS_MAX];
    let mut digit_count = 0;
    while magnitude > 0 {
        assert!(digit_count < DECIMAL_DIGITS_MAX, "decimal mantissa {} has more than 29 digits", d.mantissa());
        digits[digit_count] = (magnitude % 10) as u8;
        magnitude /= 10;
        digit_count += 1;
    }
    let digits = &mut digits[..digit_count];
    digits.reverse();
    // magnitude × 10^-scale = 0.d₁…dₙ × 10^(n - scale).
    let exponent = digit_count as i32 - scale;
    assert!(
        (DECIMAL_EXPONENT_MIN..=DECIMAL_EXPONENT_MAX).contains(&exponent),
        "decimal {d} has exponent {exponent}, outside what a Decimal can hold"
    );

    out.push(if negative { DECIMAL_NEGATIVE } else { DECIMAL_POSITIVE });
    let body_start = out.len();
    out.push((exponent + DECIMAL_EXPONENT_BIAS) as u8);
    let pairs = digits.chunks(2);
    let pair_count = pairs.len();
    for (index, pair) in pairs.enumerate() {
        let centimal = pair[0] * 10 + pair.get(1).copied().unwrap_or(0);
        let is_last = index + 1 == pair_count;
        out.push(2 * centimal + u8::from(!is_last));
    }
    if negative {
        for byte in &mut out[body_start..] {
            *byte = !*byte;
        }
    }
}

fn decode_decimal(input: &mut &[u8]) -> Result<Decimal> {
    let negative = match take_byte(input, "decimal class")? {
        DECIMAL_ZERO => return Ok(Decimal::ZERO),
        DECIMAL_NEGATIVE => true,
        DECIMAL_POSITIVE => false,
        other => return Err(corrupt(format_args!("decimal class {other:#04x}"))),
    };
    let unflip = |byte: u8| if negative { !byte } else { byte };
    let exponent = i32::from(unflip(take_byte(input, "decimal exponent")?)) - DECIMAL_EXPONENT_BIAS;

    let mut digits: u128 = 0;
    let mut digit_count: i32 = 0;
    for pair_index in 0.. {
        if pair_index == DECIMAL_PAIRS_MAX {
            return Err(corrupt("decimal has too many digits"));
        }
        let byte = unflip(take_byte(input, "decimal digits")?);
        let centimal = byte / 2;
        let is_last = byte.is_multiple_of(2);
        if centimal > 99 {
            return Err(corrupt(format_args!("decimal digit pair byte {byte:#04x}")));
        }
        if pair_index == 0 && centimal < 10 {
            return Err(corrupt("decimal has a leading zero digit"));
        }
        digits = digits * 100 + u128::from(centimal);
        digit_count += 2;
        if is_last {
            if centimal == 0 {
                return Err(corrupt("decimal has trailing zero digits"));
            }
            break;
        }
    }
    // A last pair ending in 0 carries the padding digit: trailing zeros
    // were stripped, so a real digit there is never 0.
    if digits.is_multiple_of(10) {
        digits /= 10;
        digit_count -= 1;
    }

    // 0.d₁…dₙ × 10^E = d₁…dₙ × 10^(E - n).
    let digits = i128::try_from(digits).map_err(|_| corrupt("decimal has too many digits"))?;
    let shift = exponent - digit_count;
    let (mantissa, scale) = if shift >= 0 {
        let mantissa = 10i128
            .checked_pow(shift.unsigned_abs())
            .and_then(|power| digits.checked_mul(power))
            .ok_or_else(|| corrupt("decimal is out of range"))?;
        (mantissa, 0)
    } else {
        (digits, shift.unsigned_abs())
    };
    let mantissa = if negative { -mantissa } else { mantissa };
    Decimal::try_from_i128_with_scale(mantissa, scale).map_err(|e| corrupt(format_args!("decimal: {e}")))
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering;

    use proptest::prelude::*;

    use super::*;

    /// The kinds of key columns, each a strategy for its values.
    #[derive(Clone, Copy, Debug)]
    enum Kind {
        Bool,
        Int,
        Float,
        Decimal,
        Text,
        Timestamp,
    }

    fn arb_kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            Just(Kind::Bool),
            Just(Kind::Int),
            Just(Kind::Float),
            Just(Kind::Decimal),
            Just(Kind::Text),
            Just(Kind::Timestamp),
        ]
    }

    fn arb_i64() -> impl Strategy<Value = i64> {
        // Small values make equal pairs and neighbours likely.
        prop_oneof![any::<i64>(), -3i64..=3, Just(i64::MIN), Just(i64::MAX)]
    }

    fn arb_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            (-3i8..=3).prop_map(f64::from),
            Just(0.0),
            Just(-0.0),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            Just(-f64::NAN),
            // A NaN with a payload, which must still encode canonically.
            Just(f64::from_bits(0x7FF0_0000_0000_0001)),
            Just(f64::MIN_POSITIVE),
            Just(-f64::MIN_POSITIVE),
            Just(f64::from_bits(1)),
            Just(f64::MAX),
            Just(f64::MIN),
        ]
    }

    fn arb_decimal() -> impl Strategy<Value = Decimal> {
        let max = Decimal::MAX.mantissa();
        prop_oneof![
            // Anything representable.
            (-max..=max, 0..=Decimal::MAX_SCALE),
            // Few digits at any scale: equal values at different scales.
            (-30i128..=30, 0u32..=4),
            arb_decimal_parts_alike(),
            // Trailing zeros.
            (-30i128..=30, 0u32..=28).prop_map(|(m, scale)| (m * 10i128.pow(scale.min(20)), scale)),
            Just((max, 0)),
            Just((-max, 0)),
            Just((max, Decimal::MAX_SCALE)),
            Just((1, Decimal::MAX_SCALE)),
            Just((-1, Decimal::MAX_SCALE)),
        ]
        .prop_map(|(mantissa, scale)| Decimal::from_i128_with_scale(mantissa, scale))
    }

    /// Digits from a tiny alphabet at small scales: values whose digits
    /// extend one another's at the same exponent (1.1 and 1.101), the
    /// cases that exercise the end-of-digits marker.
    fn arb_decimal_parts_alike() -> impl Strategy<Value = (i128, u32)> {
        ("-?[019]{1,6}", 0u32..=6).prop_map(|(digits, scale)| (digits.parse().unwrap(), scale))
    }

    fn arb_text() -> impl Strategy<Value = String> {
        // Mostly a small alphabet with the bytes that matter to the escape
        // (0x00, 0x01, 0xFF in UTF-8 as part of ÿ), so prefixes are common.
        prop_oneof![any::<String>(), "[ab\u{0}\u{1}ÿ]{0,6}"]
    }

    fn arb_value_of(kind: Kind) -> BoxedStrategy<Value> {
        let value = match kind {
            Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            Kind::Int => arb_i64().prop_map(Value::Int).boxed(),
            Kind::Float => arb_f64().prop_map(Value::Float).boxed(),
            Kind::Decimal => arb_decimal().prop_map(Value::Decimal).boxed(),
            Kind::Text => arb_text().prop_map(Value::Text).boxed(),
            Kind::Timestamp => arb_i64().prop_map(Value::Timestamp).boxed(),
        };
        // A column of any type may hold NULL.
        prop_oneof![1 => Just(Value::Null), 9 => value].boxed()
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        arb_kind().prop_flat_map(arb_value_of)
    }

    /// Two keys with the same column types, each of `parts_min..=parts_max`
    /// components (the lengths may differ, so one may be a prefix).
    fn arb_key_pair(parts_min: usize, parts_max: usize) -> impl Strategy<Value = (Vec<Value>, Vec<Value>)> {
        proptest::collection::vec(arb_kind(), parts_max..=parts_max).prop_flat_map(move |kinds| {
            let key = |kinds: Vec<Kind>| {
                let parts: Vec<_> = kinds.into_iter().map(arb_value_of).collect();
                (parts, parts_min..=parts_max).prop_map(|(mut parts, len)| {
                    parts.truncate(len);
                    parts
                })
            };
            (key(kinds.clone()), key(kinds))
        })
    }

    /// [`Value::total_cmp`] extended to keys: by component, then by length.
    fn key_cmp(a: &[Value], b: &[Value]) -> Ordering {
        a.iter().zip(b).map(|(a, b)| a.total_cmp(b)).find(|o| o.is_ne()).unwrap_or(a.len().cmp(&b.len()))
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn round_trip(value in arb_value()) {
            let bytes = encode_key(std::slice::from_ref(&value));
            let decoded = decode_key(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {}", hex(&bytes))))?;
            prop_assert_eq!(&decoded, &vec![value.clone()]);
            // Canonical: the decoded value encodes to the same bytes.
            prop_assert_eq!(encode_key(&decoded), bytes.clone());
            // decode_value consumes exactly the value and leaves what follows.
            let mut followed = bytes.clone();
            followed.extend_from_slice(b"rest");
            let mut input = &followed[..];
            prop_assert_eq!(decode_value(&mut input).unwrap(), value);
            prop_assert_eq!(input, b"rest");
        }

        #[test]
        fn byte_order_is_value_order_for_one_kind((a, b) in arb_key_pair(1, 1)) {
            let (a_bytes, b_bytes) = (encode_key(&a), encode_key(&b));
            prop_assert_eq!(
                a_bytes.cmp(&b_bytes), key_cmp(&a, &b),
                "{:?} {} vs {:?} {}", a, hex(&a_bytes), b, hex(&b_bytes)
            );
        }

        #[test]
        fn byte_order_is_value_order_for_similar_decimals(a in arb_decimal_parts_alike(), b in arb_decimal_parts_alike()) {
            let a = Value::Decimal(Decimal::from_i128_with_scale(a.0, a.1));
            let b = Value::Decimal(Decimal::from_i128_with_scale(b.0, b.1));
            let (a_bytes, b_bytes) = (encode_key(std::slice::from_ref(&a)), encode_key(std::slice::from_ref(&b)));
            prop_assert_eq!(a_bytes.cmp(&b_bytes), a.total_cmp(&b), "{} {} vs {} {}", a, hex(&a_bytes), b, hex(&b_bytes));
        }

        #[test]
        fn byte_order_is_value_order_for_composite_keys((a, b) in prop_oneof![arb_key_pair(1, 2), arb_key_pair(1, 3)]) {
            let (a_bytes, b_bytes) = (encode_key(&a), encode_key(&b));
            prop_assert_eq!(
                a_bytes.cmp(&b_bytes), key_cmp(&a, &b),
                "{:?} {} vs {:?} {}", a, hex(&a_bytes), b, hex(&b_bytes)
            );
            prop_assert_eq!(decode_key(&a_bytes).unwrap(), a.clone());
            // A key prefix is a range prefix.
            if b.starts_with(&a) {
                prop_assert!(b_bytes.starts_with(&a_bytes));
                if let Some(end) = prefix_end(&a_bytes) {
                    prop_assert!(b_bytes < end);
                }
            }
        }

        #[test]
        fn decode_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Whatever decodes is canonical: it re-encodes to the same bytes.
            if let Ok(values) = decode_key(&bytes) {
                prop_assert_eq!(encode_key(&values), bytes);
            }
        }

        #[test]
        fn decode_of_damaged_keys_never_panics(
            key in proptest::collection::vec(arb_value(), 1..4),
            damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..3),
            truncate in any::<prop::sample::Index>(),
        ) {
            // Valid keys with a few bytes overwritten, then cut short: these
            // reach deep into the decoders, where random bytes rarely go.
            let mut bytes = encode_key(&key);
            for (index, byte) in damage {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            bytes.truncate(truncate.index(bytes.len() + 1));
            if let Ok(values) = decode_key(&bytes) {
                prop_assert_eq!(encode_key(&values), bytes);
            }
        }

        #[test]
        fn prefix_end_bounds_exactly_the_prefixed_strings(
            prefix in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xFE), Just(0xFF)], 0..4),
            other in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xFE), Just(0xFF)], 0..6),
        ) {
            // A string is below the end exactly when it is below the prefix
            // or starts with it.
            let inside = other.starts_with(&prefix) || other < prefix;
            match prefix_end(&prefix) {
                Some(end) => {
                    prop_assert_eq!(other < end, inside);
                    prop_assert!(!end.starts_with(&prefix));
                }
                None => {
                    prop_assert!(prefix.iter().all(|&b| b == 0xFF));
                    prop_assert!(inside);
                }
            }
        }
    }

    #[test]
    fn equal_decimals_encode_equal_whatever_their_scale() {
        for (a, b) in [("1.0", "1.00"), ("1", "1.000000"), ("-120", "-120.00"), ("0", "-0.000"), ("0.10", "0.1")] {
            let (a, b): (Decimal, Decimal) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(encode_key(&[Value::Decimal(a)]), encode_key(&[Value::Decimal(b)]), "{a} vs {b}");
        }
    }

    #[test]
    fn decimal_layout_is_as_documented() {
        let encode = |text: &str| encode_key(&[Value::Decimal(text.parse().unwrap())]);
        // 12.5 = 0.125 × 10^2: pairs 12, 50 (padded); 2·12+1, 2·50.
        assert_eq!(encode("12.5"), [TAG_DECIMAL, DECIMAL_POSITIVE, 130, 25, 100]);
        assert_eq!(encode("-12.5"), [TAG_DECIMAL, DECIMAL_NEGATIVE, !130, !25, !100]);
        assert_eq!(encode("0"), [TAG_DECIMAL, DECIMAL_ZERO]);
    }

    #[test]
    fn floats_zero_and_nan_are_canonical() {
        let encode = |f: f64| encode_key(&[Value::Float(f)]);
        assert_eq!(encode(-0.0), encode(0.0));
        assert_eq!(encode(f64::NAN), encode(-f64::NAN));
        assert!(encode(f64::NAN) > encode(f64::INFINITY));
        assert!(encode(f64::NEG_INFINITY) > encode_key(&[Value::Null]));
    }

    #[test]
    fn text_escapes_zero_bytes() {
        assert_eq!(encode_key(&[Value::Text("a\0b".into())]), [TAG_TEXT, b'a', 0x00, 0xFF, b'b', 0x00, 0x01]);
        assert!(encode_key(&[Value::Text("a".into())]) < encode_key(&[Value::Text("a\0".into())]));
    }

    #[test]
    fn bad_input_is_corrupt() {
        for bytes in [
            &[0x07][..],
            &[TAG_BOOL, 2],
            &[TAG_INT, 1, 2],
            &[TAG_TEXT, b'a'],
            &[TAG_TEXT, b'a', 0x00, 0x02],
            &[TAG_TEXT, 0xC0, 0x00, 0x01],
            &[TAG_DECIMAL, DECIMAL_POSITIVE, 130],
            &[TAG_DECIMAL, DECIMAL_POSITIVE, 130, 2],
            &[TAG_DECIMAL, DECIMAL_POSITIVE, 255, 100],
        ] {
            assert!(matches!(decode_key(bytes), Err(Error::Corrupt(_))), "{bytes:?} decoded");
        }
    }

    #[test]
    fn prefix_end_examples() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
    }
}
