//! A small, safe reader of Python pickles: just enough of the pickle machine to read CIFAR's
//! python batches (a dict of byte strings, lists of ints and one numpy array), as Python 2's
//! cPickle wrote them and as Python 3 writes them with protocols 2 to 5.
//!
//! Nothing is ever executed. `GLOBAL` only names a callable; `REDUCE` accepts a short list of
//! them, each replaced by what it would build: numpy's array reconstructors and `dtype`, and
//! the helpers Python 3 uses to pickle byte strings in protocol 2 (`_codecs.encode`,
//! `builtins.bytes`, `builtins.bytearray`). Any other callable, and any opcode not listed in
//! [`run`], is an error naming it and its byte offset.
//!
//! Untrusted input cannot make the reader panic, allocate more than a small multiple of its
//! size, or recurse deeply: every length is checked against the bytes that are left, nesting
//! is limited to [`MAX_DEPTH`], and a container cannot change once it is inside another one (so
//! no cycles; Python only writes such pickles for self-referencing data, which CIFAR has not).
//!
//! Why not the `serde-pickle` crate: tried on 2026-11-30, version 1.2.0 converts its values
//! recursively with no limit on nesting, so a 200 KB pickle of 100,000 nested lists overflows
//! the stack and aborts the process (a test here feeds this reader the same input); and an
//! unknown global becomes an inert value instead of an error that names it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest nesting of containers accepted (CIFAR's batches nest 4 deep).
pub const MAX_DEPTH: u32 = 64;

/// A problem with a pickle, at a byte offset (of the opcode being run, or the end of the data
/// for problems found after `STOP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PickleError {
    pub offset: usize,
    pub message: String,
}

/// A value of the pickle machine.
#[derive(Debug, Clone)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Read for completeness (CIFAR's batches hold none); its value is never needed.
    Float(#[allow(dead_code)] f64),
    /// Python 2 `str` and Python 3 `bytes`/`bytearray`.
    Bytes(Rc<Vec<u8>>),
    /// Python 2 `unicode` and Python 3 `str`.
    Str(Rc<str>),
    Tuple(Rc<Tuple>),
    List(Rc<Container<Vec<Value>>>),
    /// A dict as its `(key, value)` pairs in insertion order; a repeated key replaces the value.
    Dict(Rc<Container<Vec<(Value, Value)>>>),
    /// A callable named by `GLOBAL`/`STACK_GLOBAL`: `(module, name)`.
    Global(Rc<(String, String)>),
    /// The result of `REDUCE` on an accepted numpy callable, with the state `BUILD` gave it.
    Object(Rc<Object>),
}

#[derive(Debug)]
pub struct Tuple {
    pub items: Vec<Value>,
    depth: u32,
}

/// A mutable container (list or dict) of the machine.
#[derive(Debug)]
pub struct Container<T> {
    pub items: RefCell<T>,
    /// Set once the container is inside another value; it may not change after that.
    frozen: Cell<bool>,
    depth: Cell<u32>,
}

impl<T> Container<T> {
    fn new(items: T, depth: u32) -> Rc<Self> {
        Rc::new(Container {
            items: RefCell::new(items),
            frozen: Cell::new(false),
            depth: Cell::new(depth),
        })
    }
}

/// What an accepted numpy callable builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    /// `numpy.core.multiarray._reconstruct(cls, shape, typecode)`, completed by `BUILD` with the
    /// array's state `(version, shape, dtype, fortran_order, raw_bytes)`.
    Reconstruct,
    /// `numpy.dtype(descr, align, copy)`, with `BUILD` state `(version, byteorder, ...)`.
    Dtype,
    /// `numpy.core.numeric._frombuffer(buffer, dtype, shape, order)` (protocol 5).
    FromBuffer,
}

#[derive(Debug)]
pub struct Object {
    pub kind: ObjectKind,
    pub args: Vec<Value>,
    pub state: RefCell<Option<Value>>,
    frozen: Cell<bool>,
    depth: Cell<u32>,
}

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::Tuple(t) => t.depth,
            Value::List(c) => c.depth.get(),
            Value::Dict(c) => c.depth.get(),
            Value::Object(o) => o.depth.get(),
            _ => 0,
        }
    }

    /// Marks a container as placed inside another value: it may not change any more.
    fn freeze(&self) {
        match self {
            Value::List(c) => c.frozen.set(true),
            Value::Dict(c) => c.frozen.set(true),
            Value::Object(o) => o.frozen.set(true),
            _ => {}
        }
    }

    /// A short description of the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Bytes(_) => "bytes",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Object(o) => match o.kind {
                ObjectKind::Reconstruct | ObjectKind::FromBuffer => "numpy array",
                ObjectKind::Dtype => "numpy dtype",
            },
        }
    }

    /// The type as "found ..." in messages reads it: `an int`, `a list`, `bytes`, `None`.
    pub fn a_type_name(&self) -> String {
        match self.type_name() {
            name @ ("None" | "bytes") => name.into(),
            name if name.starts_with(['a', 'e', 'i', 'o', 'u']) => format!("an {name}"),
            name => format!("a {name}"),
        }
    }

    /// The text of a `str`, or of a byte string that is valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(&**s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// An integer (`bool` counts, as in Python).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    /// The value stored under a key equal to `key` as a `str` or as a byte string.
    pub fn dict_get(&self, key: &str) -> Option<Value> {
        let Value::Dict(d) = self else {
            return None;
        };
        let items = d.items.borrow();
        items
            .iter()
            .rev()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v.clone())
    }

    /// The keys of a dict that are text, for messages.
    pub fn dict_keys(&self) -> Vec<String> {
        let Value::Dict(d) = self else {
            return Vec::new();
        };
        let items = d.items.borrow();
        items
            .iter()
            .map(|(k, _)| match k.as_text() {
                Some(t) => format!("'{t}'"),
                None => format!("<{}>", k.type_name()),
            })
            .collect()
    }
}

/// A numpy array read from a pickle.
#[derive(Debug, Clone)]
pub struct NdArray {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub fortran_order: bool,
    /// Raw bytes, `shape.product() * dtype.itemsize` of them.
    pub data: Rc<Vec<u8>>,
}

/// A numpy dtype of fixed-size numbers: `kind` is numpy's kind character (`u` unsigned int,
/// `i` signed int, `f` float, `b` bool, ...), `byteorder` one of `|` (not applicable), `<`,
/// `>`, `=` (native).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dtype {
    pub descr: String,
    pub kind: char,
    pub itemsize: usize,
    pub byteorder: char,
}

impl Dtype {
    /// numpy's string for the dtype, e.g. `|u1` or `<i8`.
    pub fn str(&self) -> String {
        format!("{}{}{}", self.byteorder, self.kind, self.itemsize)
    }

    /// True if multi-byte values are stored little-endian.
    pub fn little_endian(&self) -> bool {
        match self.byteorder {
            '<' => true,
            '>' => false,
            _ => cfg!(target_endian = "little"),
        }
    }
}

impl NdArray {
    /// Interprets a value as a numpy array (the result of `_reconstruct` + `BUILD`, or of
    /// `_frombuffer`).
    pub fn from_value(v: &Value) -> Result<NdArray, String> {
        let Value::Object(o) = v else {
            return Err(format!("expected a numpy array, found {}", v.a_type_name()));
        };
        match o.kind {
            ObjectKind::Reconstruct => {
                match o.args.first() {
                    Some(Value::Global(g)) if g.0 == "numpy" && g.1 == "ndarray" => {}
                    Some(Value::Global(g)) => {
                        return Err(format!(
                            "expected a numpy.ndarray, found an array of class {}.{}",
                            g.0, g.1
                        ))
                    }
                    _ => return Err("numpy array reconstructed without its class".into()),
                }
                let state = o.state.borrow();
                let Some(Value::Tuple(t)) = state.as_ref() else {
                    return Err("numpy array without its state (no BUILD tuple)".into());
                };
                // (version, shape, dtype, fortran, raw) since numpy 1.0; older ones had no
                // version.
                let s = match t.items.len() {
                    5 => &t.items[1..],
                    4 => &t.items[..],
                    n => {
                        return Err(format!(
                            "numpy array state: expected a tuple of 4 or 5 items, found {n}"
                        ))
                    }
                };
                let shape = shape_of(&s[0])?;
                let dtype = Dtype::from_value(&s[1])?;
                let fortran_order = match &s[2] {
                    Value::Bool(b) => *b,
                    Value::Int(i) => *i != 0,
                    other => {
                        return Err(format!(
                            "numpy array state: expected a bool for the memory order, found {}",
                            other.a_type_name()
                        ))
                    }
                };
                let data = match &s[3] {
                    Value::Bytes(b) => b.clone(),
                    other => {
                        return Err(format!(
                            "numpy array state: expected the raw data as bytes, found {}",
                            other.a_type_name()
                        ))
                    }
                };
                NdArray::checked(shape, dtype, fortran_order, data)
            }
            ObjectKind::FromBuffer => {
                let [buf, dtype, shape, order] = &o.args[..] else {
                    return Err(format!(
                        "numpy _frombuffer: expected 4 arguments, found {}",
                        o.args.len()
                    ));
                };
                let Value::Bytes(data) = buf else {
                    return Err(format!(
                        "numpy _frombuffer: expected the data as bytes, found {}",
                        buf.a_type_name()
                    ));
                };
                let fortran_order = match order.as_text() {
                    Some("C") => false,
                    Some("F") => true,
                    _ => return Err("numpy _frombuffer: expected order 'C' or 'F'".into()),
                };
                NdArray::checked(
                    shape_of(shape)?,
                    Dtype::from_value(dtype)?,
                    fortran_order,
                    data.clone(),
                )
            }
            ObjectKind::Dtype => Err("expected a numpy array, found a numpy dtype".into()),
        }
    }

    fn checked(
        shape: Vec<usize>,
        dtype: Dtype,
        fortran_order: bool,
        data: Rc<Vec<u8>>,
    ) -> Result<NdArray, String> {
        let expected = shape
            .iter()
            .try_fold(dtype.itemsize, |acc, &d| acc.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(format!(
                "numpy array of shape {} and dtype {} needs {} bytes of data, found {}",
                shape_str(&shape),
                dtype.str(),
                expected.map_or_else(|| "more than can be addressed".into(), |n| n.to_string()),
                data.len()
            ));
        }
        Ok(NdArray {
            shape,
            dtype,
            fortran_order,
            data,
        })
    }
}

/// A shape as Python prints it: `(10000, 3072)`, `(5,)`.
pub fn shape_str(shape: &[usize]) -> String {
    match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn shape_of(v: &Value) -> Result<Vec<usize>, String> {
    let Value::Tuple(t) = v else {
        return Err(format!(
            "numpy array: expected a tuple for the shape, found {}",
            v.a_type_name()
        ));
    };
    t.items
        .iter()
        .map(|d| {
            d.as_int()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or_else(|| "numpy array: shape holds something else than sizes".to_string())
        })
        .collect()
}

impl Dtype {
    fn from_value(v: &Value) -> Result<Dtype, String> {
        let o = match v {
            Value::Object(o) if o.kind == ObjectKind::Dtype => o,
            _ => return Err(format!("expected a numpy dtype, found {}", v.a_type_name())),
        };
        let descr = o
            .args
            .first()
            .and_then(Value::as_text)
            .ok_or_else(|| "numpy dtype without its type string".to_string())?
            .to_string();
        // The state (version, byteorder, subarray, names, fields, elsize, alignment, flags).
        let byteorder = match o.state.borrow().as_ref() {
            Some(Value::Tuple(t)) => t
                .items
                .get(1)
                .and_then(Value::as_text)
                .and_then(|s| s.chars().next())
                .unwrap_or('='),
            _ => '=',
        };
        let mut chars = descr.chars();
        let kind = chars.next().unwrap_or('?');
        let itemsize = chars.as_str().parse::<usize>().ok().filter(|&n| n > 0);
        match (kind, itemsize) {
            ('u' | 'i' | 'f' | 'b' | 'c', Some(itemsize)) => Ok(Dtype {
                kind,
                itemsize,
                byteorder,
                descr,
            }),
            _ => Err(format!(
                "numpy dtype '{descr}': only numbers of a fixed size are read"
            )),
        }
    }
}

/// Encodes a str whose characters are all below 256 as latin-1 bytes (how Python 3 pickles
/// `bytes` in protocol 2: `_codecs.encode(text, 'latin1')`).
fn latin1(text: &str) -> Result<Vec<u8>, String> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| "latin-1 text holds a character above U+00FF".to_string())
}

/// The pickle machine's state while it runs.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for messages.
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

type Res<T> = Result<T, PickleError>;

/// Runs the pickle in `data` and returns the value `STOP` pops. Bytes after `STOP` are ignored,
/// as Python's `pickle.load` does.
pub fn run(data: &[u8]) -> Res<Value> {
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        m.op_at = m.pos;
        let op = m.byte()?;
        match op {
            // PROTO
            0x80 => {
                let p = m.byte()?;
                if p > 5 {
                    return m.err(format!("unsupported pickle protocol {p} (expected 0 to 5)"));
                }
            }
            // FRAME: framing only groups opcodes for buffered reading; the data is all here.
            0x95 => {
                m.take(8)?;
            }
            b'.' => {
                let v = m.pop()?;
                return Ok(v);
            }
            b'(' => m.marks.push(m.stack.len()),
            b'0' => {
                // POP: like Python, a mark on top is popped instead.
                if m.marks.last() == Some(&m.stack.len()) {
                    m.marks.pop();
                } else {
                    m.pop()?;
                }
            }
            b'1' => {
                m.pop_mark()?;
            }
            b'2' => {
                let v = m.top()?.clone();
                m.stack.push(v);
            }
            b'N' => m.stack.push(Value::None),
            0x88 => m.stack.push(Value::Bool(true)),
            0x89 => m.stack.push(Value::Bool(false)),
            b'K' => {
                let v = m.byte()?;
                m.stack.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let b = m.take(2)?;
                m.stack
                    .push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
            }
            b'J' => {
                let b = m.take(4)?;
                m.stack.push(Value::Int(i64::from(i32::from_le_bytes([
                    b[0], b[1], b[2], b[3],
                ]))));
            }
            // LONG1, LONG4: little-endian two's complement of n bytes.
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    usize::from(m.byte()?)
                } else {
                    let b = m.take(4)?;
                    let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    usize::try_from(n).map_err(|_| m.error("negative LONG4 length"))?
                };
                let b = m.take(n)?;
                let v = long_le(b).ok_or_else(|| m.error("integer too large (over 64 bits)"))?;
                m.stack.push(Value::Int(v));
            }
            // INT, LONG: decimal text (protocol 0); INT 01/00 are True/False.
            b'I' | b'L' => {
                let line = m.line()?;
                let text = line.strip_suffix('L').unwrap_or(line);
                let v = match (op, text) {
                    (b'I', "01") => Value::Bool(true),
                    (b'I', "00") => Value::Bool(false),
                    _ => Value::Int(
                        text.parse::<i64>()
                            .map_err(|_| m.error(format!("invalid integer '{text}'")))?,
                    ),
                };
                m.stack.push(v);
            }
            b'G' => {
                let b = m.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                m.stack.push(Value::Float(f64::from_be_bytes(a)));
            }
            b'F' => {
                let line = m.line()?;
                let v = line
                    .parse::<f64>()
                    .map_err(|_| m.error(format!("invalid float '{line}'")))?;
                m.stack.push(Value::Float(v));
            }
            // SHORT_BINSTRING, BINSTRING (Python 2 str), SHORT_BINBYTES, BINBYTES, BINBYTES8,
            // BYTEARRAY8: all byte strings here.
            b'U' | b'C' => {
                let n = usize::from(m.byte()?);
                m.push_bytes(n)?;
            }
            b'T' => {
                let b = m.take(4)?;
                let n = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                let n = usize::try_from(n).map_err(|_| m.error("negative BINSTRING length"))?;
                m.push_bytes(n)?;
            }
            b'B' => {
                let n = m.len4()?;
                m.push_bytes(n)?;
            }
            0x8e | 0x96 => {
                let n = m.len8()?;
                m.push_bytes(n)?;
            }
            // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8: UTF-8 text.
            0x8c => {
                let n = usize::from(m.byte()?);
                m.push_str(n)?;
            }
            b'X' => {
                let n = m.len4()?;
                m.push_str(n)?;
            }
            0x8d => {
                let n = m.len8()?;
                m.push_str(n)?;
            }
            b')' => m.stack.push(tuple(Vec::new())),
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if m.stack.len() < m.floor() + n {
                    return m.err("stack underflow");
                }
                let items = m.stack.split_off(m.stack.len() - n);
                let t = m.make_tuple(items)?;
                m.stack.push(t);
            }
            b't' => {
                let items = m.pop_mark()?;
                let t = m.make_tuple(items)?;
                m.stack.push(t);
            }
            b']' => m.stack.push(Value::List(Container::new(Vec::new(), 1))),
            b'}' => m.stack.push(Value::Dict(Container::new(Vec::new(), 1))),
            b'l' => {
                let items = m.pop_mark()?;
                let list = Value::List(Container::new(Vec::new(), 1));
                m.extend_list(&list, items)?;
                m.stack.push(list);
            }
            b'd' => {
                let items = m.pop_mark()?;
                let dict = Value::Dict(Container::new(Vec::new(), 1));
                m.set_items(&dict, items)?;
                m.stack.push(dict);
            }
            b'a' => {
                let v = m.pop()?;
                let list = m.top()?.clone();
                m.extend_list(&list, vec![v])?;
            }
            b'e' => {
                let items = m.pop_mark()?;
                let list = m.top()?.clone();
                m.extend_list(&list, items)?;
            }
            b's' => {
                let v = m.pop()?;
                let k = m.pop()?;
                let dict = m.top()?.clone();
                m.set_items(&dict, vec![k, v])?;
            }
            b'u' => {
                let items = m.pop_mark()?;
                let dict = m.top()?.clone();
                m.set_items(&dict, items)?;
            }
            // Memo: BINPUT, LONG_BINPUT, PUT, MEMOIZE; BINGET, LONG_BINGET, GET.
            b'q' => {
                let i = u32::from(m.byte()?);
                m.put(i)?;
            }
            b'r' => {
                let i = m.u32()?;
                m.put(i)?;
            }
            b'p' => {
                let i = m.decimal_index()?;
                m.put(i)?;
            }
            0x94 => {
                let i = u32::try_from(m.memo.len()).map_err(|_| m.error("memo too large"))?;
                m.put(i)?;
            }
            b'h' => {
                let i = u32::from(m.byte()?);
                m.get(i)?;
            }
            b'j' => {
                let i = m.u32()?;
                m.get(i)?;
            }
            b'g' => {
                let i = m.decimal_index()?;
                m.get(i)?;
            }
            b'c' => {
                let module = m.line()?.to_string();
                let name = m.line()?.to_string();
                m.stack.push(Value::Global(Rc::new((module, name))));
            }
            0x93 => {
                let name = m.pop()?;
                let module = m.pop()?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return m.err("STACK_GLOBAL: expected two str (module and name)");
                };
                m.stack.push(Value::Global(Rc::new((
                    module.to_string(),
                    name.to_string(),
                ))));
            }
            b'R' => {
                let args = m.pop()?;
                let func = m.pop()?;
                let v = m.reduce(func, args)?;
                m.stack.push(v);
            }
            b'b' => {
                let state = m.pop()?;
                let obj = m.top()?.clone();
                m.build(&obj, state)?;
            }
            0x97 | 0x98 => {
                return m.err(format!(
                    "unsupported pickle opcode 0x{op:02x} ({}): out-of-band buffers are not \
                     supported",
                    if op == 0x97 {
                        "NEXT_BUFFER"
                    } else {
                        "READONLY_BUFFER"
                    }
                ))
            }
            _ => {
                let shown = if op.is_ascii_graphic() {
                    format!(" ('{}')", op as char)
                } else {
                    String::new()
                };
                let name = opcode_name(op).map_or(String::new(), |n| format!(" {n}"));
                return m.err(format!(
                    "unsupported pickle opcode 0x{op:02x}{shown}{name} (the CIFAR reader knows \
                     only the opcodes of plain data and numpy arrays)"
                ));
            }
        }
    }
}

/// Names of the standard opcodes this reader does not run, for messages.
fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'S' => "STRING",
        b'V' => "UNICODE",
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        _ => return None,
    })
}

fn tuple(items: Vec<Value>) -> Value {
    let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
    for i in &items {
        i.freeze();
    }
    Value::Tuple(Rc::new(Tuple { items, depth }))
}

/// A little-endian two's complement integer of up to 8 bytes.
fn long_le(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return Some(0);
    }
    if b.len() > 8 {
        // Longer encodings are fine when the extra bytes only extend the sign.
        let (low, high) = b.split_at(8);
        let sign = if low[7] & 0x80 != 0 { 0xff } else { 0x00 };
        if high.iter().any(|&x| x != sign) {
            return None;
        }
        return long_le(low);
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 {
        0xff
    } else {
        0x00
    };
    let mut a = [fill; 8];
    a[..b.len()].copy_from_slice(b);
    Some(i64::from_le_bytes(a))
}

impl<'a> Machine<'a> {
    fn error(&self, message: impl Into<String>) -> PickleError {
        PickleError {
            offset: self.op_at,
            message: message.into(),
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Res<T> {
        Err(self.error(message))
    }

    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let left = data.len() - self.pos;
        if n > left {
            return self.err(format!(
                "data ends early: the opcode needs {n} more bytes, {left} are left"
            ));
        }
        let s = &data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Res<u8> {
        if self.pos >= self.data.len() {
            return self.err("data ends early (no STOP opcode)");
        }
        let b = self.data[self.pos];
        self.pos += 1;
        Ok(b)
    }

    fn u32(&mut self) -> Res<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn len4(&mut self) -> Res<usize> {
        let n = self.u32()?;
        usize::try_from(n).map_err(|_| self.error("length too large"))
    }

    fn len8(&mut self) -> Res<usize> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        usize::try_from(u64::from_le_bytes(a)).map_err(|_| self.error("length too large"))
    }

    /// A text line ending in `\n` (protocol 0 arguments, GLOBAL names), without the newline.
    fn line(&mut self) -> Res<&'a str> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("data ends inside a text argument (no newline)");
        };
        let line = std::str::from_utf8(&rest[..end])
            .map_err(|_| self.error("text argument is not UTF-8"))?;
        self.pos += end + 1;
        Ok(line)
    }

    fn decimal_index(&mut self) -> Res<u32> {
        let line = self.line()?.to_string();
        line.parse::<u32>()
            .map_err(|_| self.error(format!("invalid memo index '{line}'")))
    }

    fn push_bytes(&mut self, n: usize) -> Res<()> {
        let b = self.take(n)?.to_vec();
        self.stack.push(Value::Bytes(Rc::new(b)));
        Ok(())
    }

    fn push_str(&mut self, n: usize) -> Res<()> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b).map_err(|_| self.error("str is not valid UTF-8"))?;
        let v = Value::Str(Rc::from(s));
        self.stack.push(v);
        Ok(())
    }

    /// The lowest stack index the current mark leaves reachable.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Res<Value> {
        if self.stack.len() <= self.floor() {
            return self.err("stack underflow");
        }
        self.stack
            .pop()
            .ok_or_else(|| self.error("stack underflow"))
    }

    fn top(&self) -> Res<&Value> {
        if self.stack.len() <= self.floor() {
            return self.err("stack underflow");
        }
        self.stack
            .last()
            .ok_or_else(|| self.error("stack underflow"))
    }

    fn pop_mark(&mut self) -> Res<Vec<Value>> {
        let Some(mark) = self.marks.pop() else {
            return self.err("no MARK on the stack");
        };
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn make_tuple(&self, items: Vec<Value>) -> Res<Value> {
        let t = tuple(items);
        if t.depth() > MAX_DEPTH {
            return self.err(format!("values nested more than {MAX_DEPTH} deep"));
        }
        Ok(t)
    }

    /// Checks that `child` may go into a container of depth `depth`, freezes it and returns
    /// the container's new depth.
    fn adopt(&self, depth: u32, child: &Value) -> Res<u32> {
        let d = depth.max(child.depth() + 1);
        if d > MAX_DEPTH {
            return self.err(format!("values nested more than {MAX_DEPTH} deep"));
        }
        child.freeze();
        Ok(d)
    }

    fn extend_list(&self, list: &Value, items: Vec<Value>) -> Res<()> {
        let Value::List(l) = list else {
            return self.err(format!("APPEND to {}, expected a list", list.a_type_name()));
        };
        let mut depth = l.depth.get();
        for i in &items {
            depth = self.adopt(depth, i)?;
        }
        if l.frozen.get() {
            return self.err("list changed after it was placed in another value");
        }
        l.depth.set(depth);
        l.items.borrow_mut().extend(items);
        Ok(())
    }

    fn set_items(&self, dict: &Value, items: Vec<Value>) -> Res<()> {
        let Value::Dict(d) = dict else {
            return self.err(format!(
                "SETITEM on {}, expected a dict",
                dict.a_type_name()
            ));
        };
        if !items.len().is_multiple_of(2) {
            return self.err("odd number of items for a dict (keys without values)");
        }
        let mut depth = d.depth.get();
        for i in &items {
            depth = self.adopt(depth, i)?;
        }
        if d.frozen.get() {
            return self.err("dict changed after it was placed in another value");
        }
        d.depth.set(depth);
        let mut map = d.items.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if !matches!(
                k,
                Value::None | Value::Bool(_) | Value::Int(_) | Value::Bytes(_) | Value::Str(_)
            ) {
                return self.err(format!("dict key of type {}", k.type_name()));
            }
            if let Some(slot) = map.iter_mut().find(|(old, _)| same_key(old, &k)) {
                slot.1 = v;
            } else {
                map.push((k, v));
            }
        }
        Ok(())
    }

    fn put(&mut self, i: u32) -> Res<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn get(&mut self, i: u32) -> Res<()> {
        let Some(v) = self.memo.get(&i) else {
            return self.err(format!("memo entry {i} is read before it is written"));
        };
        self.stack.push(v.clone());
        Ok(())
    }

    /// `REDUCE`: calls one of the accepted callables, or fails naming it.
    fn reduce(&self, func: Value, args: Value) -> Res<Value> {
        let Value::Global(g) = &func else {
            return self.err(format!(
                "REDUCE on {}, expected a global",
                func.a_type_name()
            ));
        };
        let Value::Tuple(args) = args else {
            return self.err(format!(
                "REDUCE of {}.{} on {}, expected a tuple of arguments",
                g.0,
                g.1,
                args.a_type_name()
            ));
        };
        let (module, name) = (g.0.as_str(), g.1.as_str());
        let kind = match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
                ObjectKind::Reconstruct
            }
            ("numpy", "dtype") => ObjectKind::Dtype,
            ("numpy.core.numeric" | "numpy._core.numeric", "_frombuffer") => ObjectKind::FromBuffer,
            ("_codecs", "encode") => {
                return match &args.items[..] {
                    [Value::Str(text), enc]
                        if matches!(
                            enc.as_text(),
                            Some("latin1" | "latin-1" | "iso-8859-1" | "iso8859-1")
                        ) =>
                    {
                        Ok(Value::Bytes(Rc::new(
                            latin1(text).map_err(|e| self.error(e))?,
                        )))
                    }
                    _ => self.err("_codecs.encode: expected (str, 'latin1')"),
                };
            }
            ("__builtin__" | "builtins", "bytes" | "bytearray") => {
                return match &args.items[..] {
                    [] => Ok(Value::Bytes(Rc::new(Vec::new()))),
                    [Value::Bytes(b)] => Ok(Value::Bytes(b.clone())),
                    [Value::Str(text), enc]
                        if matches!(enc.as_text(), Some("latin1" | "latin-1")) =>
                    {
                        Ok(Value::Bytes(Rc::new(
                            latin1(text).map_err(|e| self.error(e))?,
                        )))
                    }
                    _ => self.err(format!("{module}.{name}: unsupported arguments")),
                };
            }
            _ => {
                return self.err(format!(
                    "refusing to call {module}.{name}: only numpy arrays and plain Python values \
                     are read (nothing in a pickle is executed)"
                ))
            }
        };
        let depth = Cell::new(args.depth + 1);
        if depth.get() > MAX_DEPTH {
            return self.err(format!("values nested more than {MAX_DEPTH} deep"));
        }
        Ok(Value::Object(Rc::new(Object {
            kind,
            args: args.items.clone(),
            state: RefCell::new(None),
            frozen: Cell::new(false),
            depth,
        })))
    }

    /// `BUILD`: gives a numpy object its state.
    fn build(&self, obj: &Value, state: Value) -> Res<()> {
        let Value::Object(o) = obj else {
            return self.err(format!(
                "BUILD on {}, expected a numpy object",
                obj.a_type_name()
            ));
        };
        // Adopt first, so that an object given itself as state is refused too.
        let depth = self.adopt(o.depth.get(), &state)?;
        if o.frozen.get() || o.state.borrow().is_some() {
            return self.err("BUILD on an object that already has its state");
        }
        o.depth.set(depth);
        *o.state.borrow_mut() = Some(state);
        Ok(())
    }
}

/// Python's key equality for the key types accepted (`1 == True`, `b'a' != 'a'`).
fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Bytes(x), Value::Bytes(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::None, Value::None) => true,
        _ => match (a.as_int(), b.as_int()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}
