//! TensorBoard scalar event files.
//!
//! An event file is a TFRecord file: each record is the length of the data
//! as a little-endian u64, the masked CRC-32C of those 8 bytes, the data
//! and the masked CRC-32C of the data. Each record's data is one `Event`
//! protobuf. The first event names the file format version
//! (`brain.Event:2`); each later one carries a `Summary` of scalars at one
//! step. The message and field numbers below follow TensorBoard's
//! `event.proto` and `summary.proto`, limited to what scalars need.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

/// Format version that the first event of every file names.
const FILE_VERSION: &str = "brain.Event:2";

/// Constant added to a rotated CRC-32C in TFRecord's masking.
const CRC_MASK_DELTA: u32 = 0xa282_ead8;

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    wall_time: f64,
    #[prost(int64, tag = "2")]
    step: i64,
    #[prost(oneof = "EventContent", tags = "3, 5")]
    content: Option<EventContent>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum EventContent {
    #[prost(string, tag = "3")]
    FileVersion(String),
    #[prost(message, tag = "5")]
    Summary(Summary),
}

#[derive(Clone, PartialEq, prost::Message)]
struct Summary {
    #[prost(message, repeated, tag = "1")]
    value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SummaryValue {
    #[prost(string, tag = "1")]
    tag: String,
    /// A member of a oneof in `summary.proto`, so it is written even when
    /// it is 0; readers skip values without it.
    #[prost(float, optional, tag = "2")]
    simple_value: Option<f32>,
}

/// Returns the CRC-32C of `data`, rotated and offset as TFRecord stores it.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(CRC_MASK_DELTA)
}

/// Seconds since the Unix epoch, or 0 on a clock set before it.
fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// An open event file that scalars are appended to.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: BufWriter<File>,
}

impl EventWriter {
    /// Creates `events.out.tfevents.<seconds>.downpour` in `dir` and writes
    /// its version event. TensorBoard reads every file in a folder whose
    /// name contains `tfevents`.
    ///
    /// # Errors
    ///
    /// Returns the I/O error of creating or writing the file.
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let seconds = now_seconds();
        let path = dir.join(format!("events.out.tfevents.{}.downpour", seconds as u64));
        let file = File::create(&path)?;
        let mut writer = Self {
            path,
            file: BufWriter::new(file),
        };
        writer.write_event(&Event {
            wall_time: seconds,
            step: 0,
            content: Some(EventContent::FileVersion(FILE_VERSION.to_owned())),
        })?;
        Ok(writer)
    }

    /// Returns the path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event with `scalars` at `step` and flushes the file.
    /// TensorBoard stores the values as f32.
    ///
    /// # Errors
    ///
    /// Returns the I/O error of the write.
    pub fn write_scalars(&mut self, step: i64, scalars: &[(String, f64)]) -> std::io::Result<()> {
        let summary = Summary {
            value: scalars
                .iter()
                .map(|(tag, value)| SummaryValue {
                    tag: tag.clone(),
                    simple_value: Some(*value as f32),
                })
                .collect(),
        };
        self.write_event(&Event {
            wall_time: now_seconds(),
            step,
            content: Some(EventContent::Summary(summary)),
        })
    }

    fn write_event(&mut self, event: &Event) -> std::io::Result<()> {
        let data = event.encode_to_vec();
        let length = (data.len() as u64).to_le_bytes();
        self.file.write_all(&length)?;
        self.file.write_all(&masked_crc(&length).to_le_bytes())?;
        self.file.write_all(&data)?;
        self.file.write_all(&masked_crc(&data).to_le_bytes())?;
        self.file.flush()
    }
}

/// Flattens the numbers of a JSON object into scalars named by their path:
/// `{"a": 1, "b": {"c": 2}, "d": [3, 4]}` gives `a`, `b/c`, `d/0` and
/// `d/1`. Booleans count as 0 and 1; strings and nulls are left out.
pub fn scalars_from_json(value: &serde_json::Value) -> Vec<(String, f64)> {
    let mut scalars = Vec::new();
    flatten(value, String::new(), &mut scalars);
    scalars
}

fn flatten(value: &serde_json::Value, path: String, out: &mut Vec<(String, f64)>) {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}/{key}")
        }
    };
    match value {
        serde_json::Value::Number(number) => {
            if let Some(number) = number.as_f64() {
                out.push((path, number));
            }
        }
        serde_json::Value::Bool(flag) => out.push((path, f64::from(u8::from(*flag)))),
        serde_json::Value::Object(map) => {
            for (key, item) in map {
                flatten(item, child(key), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                flatten(item, child(&index.to_string()), out);
            }
        }
        serde_json::Value::Null | serde_json::Value::String(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the events of a TFRecord file, checking both CRCs of every
    /// record.
    fn read_events(path: &Path) -> Vec<Event> {
        let bytes = std::fs::read(path).unwrap();
        let mut events = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let (length, tail) = rest.split_at(8);
            let (length_crc, tail) = tail.split_at(4);
            assert_eq!(
                u32::from_le_bytes(length_crc.try_into().unwrap()),
                masked_crc(length)
            );
            let length = u64::from_le_bytes(length.try_into().unwrap()) as usize;
            let (data, tail) = tail.split_at(length);
            let (data_crc, tail) = tail.split_at(4);
            assert_eq!(
                u32::from_le_bytes(data_crc.try_into().unwrap()),
                masked_crc(data)
            );
            events.push(Event::decode(data).unwrap());
            rest = tail;
        }
        events
    }

    #[test]
    fn masked_crc_matches_tfrecord() {
        // 0xE3069283 is the standard check value of CRC-32C, the CRC of
        // "123456789". Rotated right by 15 bits it is 0x2507C60D, and adding
        // 0xA282EAD8 gives the masked value.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn writer_round_trips_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = EventWriter::create(dir.path()).unwrap();
        let name = writer.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        writer
            .write_scalars(200, &[("loss".to_owned(), 0.5), ("zero".to_owned(), 0.0)])
            .unwrap();
        writer
            .write_scalars(400, &[("loss".to_owned(), 0.25)])
            .unwrap();

        let events = read_events(writer.path());
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[0].content,
            Some(EventContent::FileVersion(FILE_VERSION.to_owned()))
        );
        let Some(EventContent::Summary(first)) = &events[1].content else {
            panic!("the second event contains no summary: {:?}", events[1]);
        };
        assert_eq!(events[1].step, 200);
        assert_eq!(first.value[0].tag, "loss");
        assert_eq!(first.value[0].simple_value, Some(0.5));
        // A zero is written, not dropped as a proto3 default.
        assert_eq!(first.value[1].simple_value, Some(0.0));
        assert_eq!(events[2].step, 400);
    }

    #[test]
    fn json_flattens_to_paths() {
        let value = serde_json::json!({
            "updates": 200,
            "train_loss": null,
            "flagged": true,
            "norm": {"mean": 1.5, "count": 4},
            "series": [3, 4],
            "mode": "async",
        });
        let mut scalars = scalars_from_json(&value);
        scalars.sort_by(|a, b| a.0.cmp(&b.0));
        let expected = [
            ("flagged", 1.0),
            ("norm/count", 4.0),
            ("norm/mean", 1.5),
            ("series/0", 3.0),
            ("series/1", 4.0),
            ("updates", 200.0),
        ];
        let expected: Vec<(String, f64)> = expected
            .iter()
            .map(|(tag, value)| ((*tag).to_owned(), *value))
            .collect();
        assert_eq!(scalars, expected);
    }
}
