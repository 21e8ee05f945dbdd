//! Reading a module's record from Burn's named MessagePack (full precision: what Kiln writes as
//! `model.mpk` and in checkpoints), refusing what does not fit instead of failing later.
//!
//! Burn trusts the file. A tensor whose rank is not its field's makes it panic, so a damaged or
//! hand-edited file would crash `kiln` instead of being refused; one whose bytes do not fill
//! its shape is built regardless (Burn's ndarray backend then reads past the buffer); and
//! `Module::load_record` takes a tensor of any shape, so weights of another configuration of
//! the network load and the first forward pass fails. [`decode`] checks every tensor's bytes
//! against its shape before Burn sees them and turns Burn's panics into errors;
//! [`load_module`] checks the shapes against the module's as well.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder, RecorderError};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use crate::params::param_shapes;

/// Named MessagePack in full precision.
pub type NamedMpk = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The bytes are not such a record of the module, or a tensor in them does not fit its
    /// field (the message is the decoder's or Burn's).
    #[error("{0}")]
    Decode(String),
    /// A tensor has another shape than the module's (another configuration of it).
    #[error("`{path}` has shape {found:?} in the record, the module expects {expected:?}")]
    Shape {
        /// The parameter's module path (`conv1.weight`).
        path: String,
        /// Its shape in the module.
        expected: Vec<usize>,
        /// Its shape in the record.
        found: Vec<usize>,
    },
}

/// A record as bytes; records of modules and optimizers always serialise.
pub fn encode<B: Backend, R: Record<B>>(record: R) -> Vec<u8> {
    Recorder::<B>::record(&NamedMpk::new(), record, ()).expect("records serialise to MessagePack")
}

/// The record in `bytes`, or what is wrong with them; never a panic.
pub fn decode<B: Backend, R: Record<B>>(bytes: Vec<u8>, device: &B::Device) -> Result<R, String> {
    rmp_serde::from_slice::<Tensors>(&bytes).map_err(|e| e.to_string())?;
    let decoded = quietly(|| Recorder::<B>::load(&NamedMpk::new(), bytes, device))?;
    decoded.map_err(|e| match e {
        RecorderError::FileNotFound(m)
        | RecorderError::DeserializeError(m)
        | RecorderError::Unknown(m) => m,
    })
}

/// `module` with the weights in `bytes`, which must be a record of a module of the same type
/// whose every parameter has the shape `module`'s has.
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    bytes: Vec<u8>,
    device: &B::Device,
) -> Result<M, RecordError> {
    let expected = param_shapes(&module);
    let record = decode::<B, M::Record>(bytes, device).map_err(RecordError::Decode)?;
    let loaded = module.load_record(record);
    for ((path, expected), (_, found)) in expected.into_iter().zip(param_shapes(&loaded)) {
        if expected != found {
            return Err(RecordError::Shape {
                path,
                expected,
                found,
            });
        }
    }
    Ok(loaded)
}

/// Any MessagePack value, read only to check each tensor in it (a map with `bytes`, `shape`
/// and `dtype`, as Burn writes a `TensorData`) before Burn builds it: the bytes must be exactly
/// the shape's elements in the dtype. Burn's ndarray backend trusts that, and on a file that
/// says otherwise builds an array over a shorter buffer and reads past it.
enum Tensors {
    Bytes(usize),
    Name(String),
    Int(u64),
    Ints(Vec<u64>),
    Other,
}

impl<'de> Deserialize<'de> for Tensors {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TensorsVisitor)
    }
}

struct TensorsVisitor;

impl<'de> Visitor<'de> for TensorsVisitor {
    type Value = Tensors;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a MessagePack value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Tensors, E> {
        Ok(Tensors::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Tensors, E> {
        Ok(u64::try_from(v).map_or(Tensors::Other, Tensors::Int))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Tensors, E> {
        Ok(Tensors::Int(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Tensors, E> {
        Ok(Tensors::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Tensors, E> {
        Ok(Tensors::Name(v.to_string()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Tensors, E> {
        Ok(Tensors::Bytes(v.len()))
    }
    fn visit_unit<E>(self) -> Result<Tensors, E> {
        Ok(Tensors::Other)
    }
    fn visit_none<E>(self) -> Result<Tensors, E> {
        Ok(Tensors::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tensors, D::Error> {
        Tensors::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Tensors, D::Error> {
        Tensors::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tensors, A::Error> {
        let mut ints = Some(Vec::new());
        while let Some(item) = seq.next_element::<Tensors>()? {
            match (item, &mut ints) {
                (Tensors::Int(v), Some(ints)) => ints.push(v),
                _ => ints = None,
            }
        }
        Ok(ints.map_or(Tensors::Other, Tensors::Ints))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tensors, A::Error> {
        let (mut bytes, mut shape, mut dtype) = (None, None, None);
        while let Some((key, value)) = map.next_entry::<Tensors, Tensors>()? {
            match (key, value) {
                (Tensors::Name(k), Tensors::Bytes(n)) if k == "bytes" => bytes = Some(n),
                (Tensors::Name(k), Tensors::Ints(dims)) if k == "shape" => shape = Some(dims),
                (Tensors::Name(k), value) if k == "dtype" => dtype = Some(value),
                _ => {}
            }
        }
        let (Some(bytes), Some(shape), Some(dtype)) = (bytes, shape, dtype) else {
            return Ok(Tensors::Other);
        };
        // Kiln's records hold plain numbers only: no boolean or quantized tensors.
        let size = match &dtype {
            Tensors::Name(name) => match name.as_str() {
                "F64" | "I64" | "U64" => Some(8),
                "F32" | "Flex32" | "I32" | "U32" => Some(4),
                "F16" | "BF16" | "I16" | "U16" => Some(2),
                "I8" | "U8" => Some(1),
                _ => None,
            },
            _ => None,
        };
        let Some(size) = size else {
            return Err(A::Error::custom(format!(
                "a tensor of shape {shape:?} has a dtype Kiln does not read (expected a float or \
                 integer type such as F32)"
            )));
        };
        let needed = shape.iter().try_fold(size, |n: usize, &d| {
            usize::try_from(d).ok().and_then(|d| n.checked_mul(d))
        });
        if needed != Some(bytes) {
            let needed = needed.map_or("more than memory holds".into(), |n| n.to_string());
            return Err(A::Error::custom(format!(
                "a tensor of shape {shape:?} needs {needed} bytes of data, the record has {bytes}"
            )));
        }
        Ok(Tensors::Other)
    }
}

/// Runs `f`, turning a panic into its message, on one line: Burn reports a tensor that does
/// not fit by panicking, and here that is the file's fault, not a bug, so it is not printed
/// either. The panic hook is process-wide; the one installed here (once, around whatever hook
/// there was) stays silent only on a thread inside `quietly`.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    thread_local!(static QUIET: Cell<bool> = const { Cell::new(false) });
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                hook(info)
            }
        }));
    });
    QUIET.with(|quiet| quiet.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|quiet| quiet.set(false));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("Burn panicked while building a tensor");
        format!(
            "a tensor in it does not fit its field: {}",
            message.split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LeNet5Config;
    use burn_ndarray::NdArray;

    type B = NdArray;

    /// LeNet-5's record with `conv1.weight`'s shape `[6, 1, 5, 5]` written as `shape`.
    fn with_conv1_shape(shape: &[u8]) -> Vec<u8> {
        let device = Default::default();
        let bytes = encode::<B, _>(LeNet5Config::new().init::<B>(&device).into_record());
        let old: &[u8] = b"\xa5shape\x94\x06\x01\x05\x05";
        let at = bytes
            .windows(old.len())
            .position(|w| w == old)
            .expect("conv1.weight's shape in the record");
        assert_eq!(bytes.windows(old.len()).filter(|w| *w == old).count(), 1);
        let mut patched = bytes[..at].to_vec();
        patched.extend_from_slice(b"\xa5shape");
        patched.extend_from_slice(shape);
        patched.extend_from_slice(&bytes[at + old.len()..]);
        patched
    }

    fn load(bytes: Vec<u8>) -> Result<crate::LeNet5<B>, RecordError> {
        let device = Default::default();
        load_module(LeNet5Config::new().init::<B>(&device), bytes, &device)
    }

    #[test]
    fn a_record_that_does_not_fit_is_refused_not_a_panic() {
        // The unpatched record loads.
        assert!(load(with_conv1_shape(b"\x94\x06\x01\x05\x05")).is_ok());
        // Rank 2 where the field is rank 4: Burn's `from_data` panics.
        let err = load(with_conv1_shape(b"\x92\x06\x19"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("a tensor in it does not fit its field: ")
                && err.contains("Given dimensions differ from the tensor rank")
                && err.contains("[6, 25]"),
            "{err}"
        );
        // More elements than bytes: Burn's ndarray backend would build the array regardless.
        let err = load(with_conv1_shape(b"\x94\x06\x01\x05\x06")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a tensor of shape [6, 1, 5, 6] needs 720 bytes of data, the record has 600"
        );
        // Another dtype than the bytes were written in.
        let f32_bytes = with_conv1_shape(b"\x94\x06\x01\x05\x05");
        let retyped = |dtype: &[u8]| {
            let old: &[u8] = b"\xa5dtype\xa3F32";
            let at = f32_bytes.windows(old.len()).position(|w| w == old).unwrap();
            let mut patched = f32_bytes[..at].to_vec();
            patched.extend_from_slice(b"\xa5dtype");
            patched.extend_from_slice(dtype);
            patched.extend_from_slice(&f32_bytes[at + old.len()..]);
            load(patched).unwrap_err().to_string()
        };
        assert_eq!(
            retyped(b"\xa3F64"),
            "a tensor of shape [6, 1, 5, 5] needs 1200 bytes of data, the record has 600"
        );
        assert!(retyped(b"\xa4Bool").contains("a dtype Kiln does not read"));
        // The same number of elements in another shape: Burn would load it.
        let err = load(with_conv1_shape(b"\x94\x03\x02\x05\x05")).unwrap_err();
        assert_eq!(
            err,
            RecordError::Shape {
                path: "conv1.weight".into(),
                expected: vec![6, 1, 5, 5],
                found: vec![3, 2, 5, 5],
            }
        );
        // Not a record at all.
        assert!(matches!(
            load(b"not weights".to_vec()),
            Err(RecordError::Decode(_))
        ));
    }
}
