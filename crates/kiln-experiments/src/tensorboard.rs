//! A run's metrics as a TensorBoard event file, so `tensorboard --logdir runs/` plots and
//! compares runs (sweeps too) with the tools people already use.
//!
//! The file is written beside `metrics.jsonl` from the same events: the step events as
//! `step/*` scalars at their optimiser step, the epoch events as `epoch/*` scalars at their
//! epoch, and the experiment's settings (every scalar of `config.toml`, and the backend) as
//! the session of TensorBoard's HParams plugin, with its end status once training ends.
//! `metrics.jsonl` stays the record: a resumed run writes the file again from the events its
//! checkpoint kept, so it never holds the steps a stopped run did after its last checkpoint.
//!
//! The format, written by hand to need no protobuf compiler: a file of records (u64 length,
//! its masked CRC-32C, the bytes, their masked CRC-32C), each a serialised `Event` message of
//! TensorFlow's `event.proto`, the first one naming the format (`brain.Event:2`); HParams
//! data is `HParamsPluginData` of TensorBoard's `plugins/hparams/plugin_data.proto`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use kiln_train::Event;

/// A setting's value, as the HParams plugin takes it (`google.protobuf.Value`).
#[derive(Debug, Clone, PartialEq)]
pub enum HParam {
    /// A number (TOML integers too).
    Number(f64),
    /// A string.
    Text(String),
    /// A boolean.
    Bool(bool),
}

/// The `(name, value)` settings of a spec: its scalar leaves under dotted names
/// (`recipe.optimizer.lr`), arrays and the description left out.
pub fn hparams_of(spec: &toml::Value) -> Vec<(String, HParam)> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut Vec<(String, HParam)>) {
        let value = match value {
            toml::Value::Table(table) => {
                for (key, v) in table {
                    let name = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&name, v, out);
                }
                return;
            }
            toml::Value::Integer(i) => HParam::Number(*i as f64),
            toml::Value::Float(f) => HParam::Number(*f),
            toml::Value::Boolean(b) => HParam::Bool(*b),
            toml::Value::String(s) if prefix != "description" => HParam::Text(s.clone()),
            _ => return,
        };
        out.push((prefix.to_string(), value));
    }
    let mut out = Vec::new();
    walk("", spec, &mut out);
    out
}

/// An event file being written.
pub struct EventFile {
    out: BufWriter<File>,
}

/// How training ended, for the HParams plugin (`Status` of its `api.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Training ran to its end.
    Success = 1,
    /// Training failed (diverged, or a file could not be written).
    Failure = 2,
}

impl EventFile {
    /// Creates (or replaces) `path` with the header, the session's settings and `earlier`
    /// events.
    pub fn create(
        path: &Path,
        hparams: &[(String, HParam)],
        earlier: &[Event],
    ) -> io::Result<Self> {
        let mut file = EventFile {
            out: BufWriter::new(File::create(path)?),
        };
        let now = now();
        let mut header = Message::default();
        header.double(1, now).string(3, "brain.Event:2");
        file.record(&header)?;
        let mut start = Message::default();
        for (name, value) in hparams {
            let mut v = Message::default();
            match value {
                HParam::Number(x) => v.double(2, *x),
                HParam::Text(s) => v.string(3, s),
                HParam::Bool(b) => v.varint(4, u64::from(*b)),
            };
            let mut entry = Message::default();
            entry.string(1, name).message(2, &v);
            start.message(1, &entry);
        }
        start.double(5, now);
        let mut data = Message::default();
        data.varint(1, 0).message(3, &start);
        file.plugin_event("_hparams_/session_start_info", &data)?;
        for event in earlier {
            file.write(event)?;
        }
        file.out.flush()?;
        Ok(file)
    }

    /// Adds one event's scalars, flushed so a running TensorBoard sees them.
    pub fn write(&mut self, event: &Event) -> io::Result<()> {
        let (step, scalars) = match event {
            Event::Step(s) => (
                s.step,
                vec![
                    ("step/loss", Some(s.loss)),
                    ("step/accuracy", Some(s.accuracy)),
                    ("step/lr", Some(s.lr)),
                    ("step/valid_loss", s.valid_loss),
                    ("step/valid_accuracy", s.valid_accuracy),
                ],
            ),
            Event::Epoch(e) => (
                e.epoch,
                vec![
                    ("epoch/train_loss", Some(e.train_loss)),
                    ("epoch/train_accuracy", Some(e.train_accuracy)),
                    ("epoch/valid_loss", e.valid_loss),
                    ("epoch/valid_accuracy", e.valid_accuracy),
                    ("epoch/test_loss", e.test_loss),
                    ("epoch/test_accuracy", e.test_accuracy),
                    ("epoch/lr", Some(e.lr)),
                    ("epoch/seconds", Some(e.seconds)),
                    ("epoch/train_images_per_sec", Some(e.train_images_per_sec)),
                ],
            ),
        };
        let mut summary = Message::default();
        for (tag, value) in scalars {
            if let Some(x) = value {
                let mut v = Message::default();
                v.string(1, tag).float(2, x as f32);
                summary.message(1, &v);
            }
        }
        let mut event = Message::default();
        event
            .double(1, now())
            .varint(2, step as u64)
            .message(5, &summary);
        self.record(&event)?;
        self.out.flush()
    }

    /// Marks the session ended.
    pub fn end(&mut self, how: SessionEnd) -> io::Result<()> {
        let mut end = Message::default();
        end.varint(1, how as u64).double(2, now());
        let mut data = Message::default();
        data.varint(1, 0).message(4, &end);
        self.plugin_event("_hparams_/session_end_info", &data)?;
        self.out.flush()
    }

    /// A summary value of the HParams plugin: its data as metadata, and the empty float tensor
    /// TensorBoard's own writer gives such values.
    fn plugin_event(&mut self, tag: &str, data: &Message) -> io::Result<()> {
        let mut plugin = Message::default();
        plugin.string(1, "hparams").bytes(2, &data.0);
        let mut metadata = Message::default();
        metadata.message(1, &plugin);
        // One dimension of size 0 (the default, so the dimension has no fields).
        let mut shape = Message::default();
        shape.message(2, &Message::default());
        let mut tensor = Message::default();
        tensor.varint(1, 1).message(2, &shape); // DT_FLOAT, shape [0]
        let mut value = Message::default();
        value
            .string(1, tag)
            .message(8, &tensor)
            .message(9, &metadata);
        let mut summary = Message::default();
        summary.message(1, &value);
        let mut event = Message::default();
        event.double(1, now()).message(5, &summary);
        self.record(&event)
    }

    fn record(&mut self, message: &Message) -> io::Result<()> {
        let data = &message.0;
        let len = (data.len() as u64).to_le_bytes();
        self.out.write_all(&len)?;
        self.out.write_all(&masked_crc(&len).to_le_bytes())?;
        self.out.write_all(data)?;
        self.out.write_all(&masked_crc(data).to_le_bytes())
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A protocol-buffer message being encoded, fields in the order added.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn key(&mut self, field: u32, wire: u8) {
        self.raw_varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn varint(&mut self, field: u32, v: u64) -> &mut Self {
        self.key(field, 0);
        self.raw_varint(v);
        self
    }

    fn double(&mut self, field: u32, v: f64) -> &mut Self {
        self.key(field, 1);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn float(&mut self, field: u32, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn bytes(&mut self, field: u32, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }

    fn string(&mut self, field: u32, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }

    fn message(&mut self, field: u32, m: &Message) -> &mut Self {
        self.bytes(field, &m.0)
    }
}

/// CRC-32C (Castagnoli), as TFRecord files check their records.
fn crc32c(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |crc, &b| {
        TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8)
    })
}

/// TFRecord's masking, so that a CRC of data holding CRCs is not degenerate.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn varints_and_fields_encode_as_protobuf_does() {
        let mut m = Message::default();
        // Field 1 = 150 is 08 96 01 in the protobuf encoding guide.
        m.varint(1, 150);
        assert_eq!(m.0, [0x08, 0x96, 0x01]);
        let mut m = Message::default();
        m.string(2, "testing");
        assert_eq!(m.0, b"\x12\x07testing");
    }

    #[test]
    fn settings_are_the_specs_scalar_leaves() {
        let spec: toml::Value = toml::from_str(
            "name = \"x\"\ndescription = \"long\"\n[recipe]\nepochs = 3\n[recipe.optimizer]\n\
             lr = 0.5\nnesterov = true\n[data]\nnormalize = { mean = [0.5], std = [0.5] }\n",
        )
        .unwrap();
        let got = hparams_of(&spec);
        assert_eq!(
            got,
            [
                ("name".to_string(), HParam::Text("x".into())),
                ("recipe.epochs".to_string(), HParam::Number(3.0)),
                ("recipe.optimizer.lr".to_string(), HParam::Number(0.5)),
                ("recipe.optimizer.nesterov".to_string(), HParam::Bool(true)),
            ]
        );
    }
}
