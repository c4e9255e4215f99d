//! Postcard helpers shared by the store, the snapshot and the journal.

use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};

use crate::error::Result;

/// A byte slice that serializes as postcard `bytes` (a length, then the raw
/// bytes) in one copy, where `&[u8]` would go element by element through
/// serde's sequence path. The wire format is the same, so the reading side
/// simply borrows a `&[u8]`.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// Encodes a value the way the store keeps it.
///
/// # Errors
///
/// [`Error::Codec`](crate::Error::Codec) if serde refuses the value (e.g. a
/// map whose length is unknown up front).
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(value)?)
}

/// Decodes a stored value, insisting that the whole encoding is consumed.
///
/// Postcard is not self-describing, so reading a value as the wrong type can
/// succeed by accident (a `String` starts with a varint, like a `u64`).
/// Refusing leftover bytes catches most such mistakes; the rest (types with the
/// same encoding, such as `u32` and `u64`) are indistinguishable by design.
///
/// # Errors
///
/// [`Error::Codec`](crate::Error::Codec) if the bytes are not a complete
/// encoding of `T`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(postcard::Error::DeserializeBadEncoding.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_wrapper_matches_the_slice_encoding() {
        let data = [1u8, 2, 200, 0];
        let wrapped = encode(&Bytes(&data)).unwrap();
        let plain = encode(&data[..]).unwrap();
        assert_eq!(wrapped, plain);
        let back: &[u8] = postcard::from_bytes(&wrapped).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn decode_refuses_trailing_bytes() {
        let bytes = encode("hello").unwrap();
        assert!(decode::<u64>(&bytes).is_err());
        assert_eq!(decode::<String>(&bytes).unwrap(), "hello");
    }
}
