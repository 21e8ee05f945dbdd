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
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

use burn::module::Module;
use burn::prelude::*;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Record, Recorder, RecorderError};
use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

use crate::params::{params, ParamInfo};

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
    Value::read(&bytes)?;
    burn_decode(bytes, device)
}

/// An optimizer's record of `model`'s parameters, refused where the state kept for a parameter
/// is not of its shape or is kept for a parameter `model` does not have. Kiln's optimizers
/// (Adam, SGD) keep element-wise state, moments or momentum, each of its parameter's shape;
/// Burn's record does not say what shape it should be and loads any; its first step then
/// broadcasts a moment of another shape into the update and the parameter changes shape.
pub fn decode_optimizer<B: Backend, M: Module<B>, R: Record<B>>(
    bytes: Vec<u8>,
    model: &M,
    device: &B::Device,
) -> Result<R, String> {
    let by_id: HashMap<String, ParamInfo> = params(model)
        .into_iter()
        .map(|param| (param.id.clone(), param))
        .collect();
    // Burn's record: `{metadata, item}`, the item a map from parameter ids to their states.
    if let Some(Value::Map(states)) = Value::read(&bytes)?.get("item") {
        for (id, state) in states {
            let Value::Name(id) = id else {
                return Err("a parameter id in it is not a string".into());
            };
            let Some(ParamInfo {
                path,
                shape: expected,
                ..
            }) = by_id.get(id)
            else {
                return Err(format!(
                    "it keeps state for a parameter (id `{id}`) the model does not have"
                ));
            };
            if let Some(found) = state.shapes().into_iter().find(|found| found != expected) {
                return Err(format!(
                    "the state kept for `{path}` has shape {found:?}, the parameter {expected:?}"
                ));
            }
        }
    }
    burn_decode(bytes, device)
}

/// Burn's decoding of a record already read by [`Value::read`], its panics made errors.
fn burn_decode<B: Backend, R: Record<B>>(bytes: Vec<u8>, device: &B::Device) -> Result<R, String> {
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
    let expected = params(&module);
    let record = decode::<B, M::Record>(bytes, device).map_err(RecordError::Decode)?;
    let loaded = module.load_record(record);
    for (expected, found) in expected.into_iter().zip(params(&loaded)) {
        if expected.shape != found.shape {
            return Err(RecordError::Shape {
                path: expected.path,
                expected: expected.shape,
                found: found.shape,
            });
        }
    }
    Ok(loaded)
}

/// A MessagePack value as far as checking it needs: each tensor in it (a map with `bytes`,
/// `shape` and `dtype`, as Burn writes a `TensorData`) is checked while reading, before Burn
/// builds it, and kept as its shape only: the bytes must be exactly the shape's elements in the
/// dtype. Burn's ndarray backend trusts that, and on a file that says otherwise builds an array
/// over a shorter buffer and reads past it. Burn also reads a tensor from forms Kiln never
/// writes (an array, fields found by index or by a byte string, bytes as a string): those are
/// refused, so every tensor Burn could build is one checked here.
enum Value {
    Bytes(usize),
    Name(String),
    Int(u64),
    Ints(Vec<u64>),
    Tensor(Vec<usize>),
    Map(Vec<(Value, Value)>),
    Seq(Vec<Value>),
    Other,
}

impl Value {
    /// `bytes` read as MessagePack, every tensor in it checked.
    fn read(bytes: &[u8]) -> Result<Value, String> {
        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// The value under `key`, in a map.
    fn get(&self, key: &str) -> Option<&Value> {
        let Value::Map(entries) = self else {
            return None;
        };
        entries.iter().find_map(|(k, v)| match k {
            Value::Name(name) if name == key => Some(v),
            _ => None,
        })
    }

    /// The shape of every tensor in this value.
    fn shapes(&self) -> Vec<&[usize]> {
        let mut stack = vec![self];
        let mut shapes = Vec::new();
        while let Some(value) = stack.pop() {
            match value {
                Value::Tensor(shape) => shapes.push(shape.as_slice()),
                Value::Map(entries) => stack.extend(entries.iter().flat_map(|(k, v)| [k, v])),
                Value::Seq(items) => stack.extend(items),
                _ => {}
            }
        }
        shapes
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a MessagePack value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(u64::try_from(v).map_or(Value::Other, Value::Int))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Name(v.to_string()))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.len()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Other)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Other)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        // Burn reads a struct from an array too, and a tensor's bytes from a byte string, a
        // string or an array of bytes: an array led by one of those could be a tensor that no
        // check below sees. Kiln's records hold arrays of sizes and of modules only.
        if let Some(Value::Bytes(_) | Value::Name(_) | Value::Ints(_) | Value::Seq(_)) =
            items.first()
        {
            return Err(A::Error::custom(
                "an array that could be read as a tensor (Kiln's records write tensors as maps \
                 of `bytes`, `shape` and `dtype`)",
            ));
        }
        if items.iter().all(|item| matches!(item, Value::Int(_))) {
            let ints = items.into_iter().filter_map(|item| match item {
                Value::Int(v) => Some(v),
                _ => None,
            });
            return Ok(Value::Ints(ints.collect()));
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let (mut bytes, mut shape, mut dtype) = (None, None, None);
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<Value, Value>()? {
            // Burn also finds a struct's fields by index or by a byte string; Kiln's records
            // name every key, and only a named field can be checked.
            let Value::Name(k) = &key else {
                return Err(A::Error::custom(
                    "a map key that is not a name (Kiln's records name every key)",
                ));
            };
            let field = match k.as_str() {
                "bytes" => "bytes",
                "shape" => "shape",
                "dtype" => "dtype",
                _ => {
                    entries.push((key, value));
                    continue;
                }
            };
            let not = |expected: &str| {
                A::Error::custom(format!("a tensor's `{field}` is not {expected}"))
            };
            let duplicate = match (field, &value) {
                ("bytes", Value::Bytes(n)) => bytes.replace(*n).is_some(),
                ("bytes", _) => return Err(not("a byte string")),
                ("shape", Value::Ints(dims)) => shape.replace(dims.clone()).is_some(),
                ("shape", _) => return Err(not("a list of sizes")),
                (_, Value::Name(name)) => dtype.replace(name.clone()).is_some(),
                // Refused below with the other dtypes Kiln does not read.
                _ => dtype.replace(String::new()).is_some(),
            };
            if duplicate {
                return Err(A::Error::custom(format!(
                    "a tensor has two `{field}` fields"
                )));
            }
            entries.push((key, value));
        }
        let (bytes, shape, dtype) = match (bytes, shape, dtype) {
            (None, None, None) => return Ok(Value::Map(entries)),
            (Some(bytes), Some(shape), Some(dtype)) => (bytes, shape, dtype),
            (bytes, shape, _) => {
                let missing = if bytes.is_none() {
                    "bytes"
                } else if shape.is_none() {
                    "shape"
                } else {
                    "dtype"
                };
                return Err(A::Error::custom(format!(
                    "a tensor without its `{missing}` field"
                )));
            }
        };
        // Kiln's records hold plain numbers only: no boolean or quantized tensors.
        let size = match dtype.as_str() {
            "F64" | "I64" | "U64" => 8,
            "F32" | "Flex32" | "I32" | "U32" => 4,
            "F16" | "BF16" | "I16" | "U16" => 2,
            "I8" | "U8" => 1,
            _ => {
                return Err(A::Error::custom(format!(
                    "a tensor of shape {shape:?} has a dtype Kiln does not read (expected a \
                     float or integer type such as F32)"
                )))
            }
        };
        let dims: Option<Vec<usize>> = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
        let needed = dims
            .as_ref()
            .and_then(|dims| dims.iter().try_fold(size, |n: usize, &d| n.checked_mul(d)));
        match (dims, needed) {
            (Some(dims), Some(needed)) if needed == bytes => Ok(Value::Tensor(dims)),
            (_, needed) => {
                let needed = needed.map_or("more than memory holds".into(), |n| n.to_string());
                Err(A::Error::custom(format!(
                    "a tensor of shape {shape:?} needs {needed} bytes of data, the record has \
                     {bytes}"
                )))
            }
        }
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

    type Edit = dyn Fn(&[u8], &[u8], &[u8]) -> Vec<u8>;

    /// LeNet-5's record with `conv1.weight`'s tensor (a map of `bytes`, `shape` and `dtype`,
    /// in that order) given to `edit` as its map header, its 600 bytes of data with their
    /// header, and what follows them (`shape` and `dtype`), to be written back as `edit` makes.
    fn with_conv1_tensor(edit: &Edit) -> Vec<u8> {
        let bytes = with_conv1_shape(b"\x94\x06\x01\x05\x05");
        let tail: &[u8] = b"\xa5shape\x94\x06\x01\x05\x05\xa5dtype\xa3F32";
        let at = bytes.windows(tail.len()).position(|w| w == tail).unwrap();
        let data = at - 3 - 600;
        let header = data - 6 - 1;
        assert_eq!(&bytes[header..data], b"\x83\xa5bytes");
        let mut patched = bytes[..header].to_vec();
        patched.extend(edit(&bytes[header..header + 1], &bytes[data..at], tail));
        patched.extend_from_slice(&bytes[at + tail.len()..]);
        patched
    }

    #[test]
    fn a_tensor_in_a_form_kiln_does_not_write_is_refused() {
        let refused = |edit: &Edit| load(with_conv1_tensor(edit)).unwrap_err().to_string();
        // As written: it loads.
        assert!(load(with_conv1_tensor(
            &|h, d, t| [h, b"\xa5bytes", d, t].concat()
        ))
        .is_ok());
        // The same tensor as an array, which Burn reads as well; its shape is not checked there.
        assert!(
            refused(&|_, d, _| [b"\x93", d, b"\x94\x06\x01\x05\x05\xa3F32"].concat())
                .contains("an array that could be read as a tensor")
        );
        // `shape` by its field index, which Burn reads as well.
        assert!(
            refused(&|h, d, t| [h, b"\xa5bytes", d, b"\x01", &t[6..]].concat())
                .contains("a map key that is not a name")
        );
        // A shape as a byte string, which Burn reads as a list of sizes.
        assert!(refused(&|h, d, t| {
            [
                h,
                b"\xa5bytes",
                d,
                b"\xa5shape\xc4\x04\x06\x01\x05\x05",
                &t[11..],
            ]
            .concat()
        })
        .contains("a tensor's `shape` is not a list of sizes"));
        // No dtype.
        assert!(refused(&|_, d, t| [b"\x82\xa5bytes", d, &t[..11]].concat())
            .contains("a tensor without its `dtype` field"));
        // Two shapes.
        assert!(
            refused(&|_, d, t| [b"\x84\xa5bytes", d, &t[..11], t].concat())
                .contains("a tensor has two `shape` fields")
        );
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
