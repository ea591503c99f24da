//! Sparkplug B: the Eclipse Tahu payload and the host side of its state machine.
//!
//! An edge node announces itself with NBIRTH (every metric's name, alias,
//! type and current value), its devices with DBIRTH, then sends only changes
//! (NDATA/DDATA), often by alias alone. Every message carries a sequence
//! number 0–255 that runs on across the node and its devices. A host must
//! keep the alias table per node, notice a sequence gap or an alias it never
//! saw, and then ask the node to be born again (an NCMD with
//! `Node Control/Rebirth = true`). NDEATH/DDEATH mark a node or device
//! offline until its next birth.
//!
//! This file is IO-free: [`Host::handle`] takes a topic and payload bytes and
//! says which values arrived and whether to request a rebirth; the MQTT
//! source does the publishing.

use prost::Message as _;
use std::collections::HashMap;

/// The Sparkplug B payload (the subset of `sparkplug_b.proto` a host reads;
/// unknown fields are skipped by the decoder).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the epoch when the message was made.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// Sequence number, 0–255.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
}

/// One metric of a [`Payload`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// Name; only required in births.
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// Alias standing for the name after the birth.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the epoch when the value was measured.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// Data type code (see [`datatype`]).
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// Historical values do not update the live value.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Explicitly no value.
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "Value", tags = "10, 11, 12, 13, 14, 15")]
    pub value: Option<Value>,
}

/// The value field of a [`Metric`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    /// Int8/16/32 (two's complement in 32 bits), UInt8/16/32.
    #[prost(uint32, tag = "10")]
    Int(u32),
    /// Int64 (two's complement), UInt64, DateTime.
    #[prost(uint64, tag = "11")]
    Long(u64),
    /// Float.
    #[prost(float, tag = "12")]
    Float(f32),
    /// Double.
    #[prost(double, tag = "13")]
    Double(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    Boolean(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    String(String),
}

/// Sparkplug B data type codes.
pub mod datatype {
    /// Int8.
    pub const INT8: u32 = 1;
    /// Int16.
    pub const INT16: u32 = 2;
    /// Int32.
    pub const INT32: u32 = 3;
    /// Int64.
    pub const INT64: u32 = 4;
    /// Boolean.
    pub const BOOLEAN: u32 = 11;
}

/// The metric a host writes to ask a node for a rebirth.
pub const REBIRTH_METRIC: &str = "Node Control/Rebirth";

/// The metric carrying the birth/death sequence.
const BD_SEQ: &str = "bdSeq";

/// A numeric reading of a metric's value, by its declared type; `None` for
/// text, null and absent values.
#[must_use]
pub fn numeric(value: Option<&Value>, datatype: Option<u32>) -> Option<f64> {
    match (value?, datatype) {
        (Value::Int(v), Some(datatype::INT8)) => Some(f64::from(*v as u8 as i8)),
        (Value::Int(v), Some(datatype::INT16)) => Some(f64::from(*v as u16 as i16)),
        (Value::Int(v), Some(datatype::INT32)) => Some(f64::from(*v as i32)),
        (Value::Int(v), _) => Some(f64::from(*v)),
        (Value::Long(v), Some(datatype::INT64)) => Some(*v as i64 as f64),
        (Value::Long(v), _) => Some(*v as f64),
        (Value::Float(v), _) => Some(f64::from(*v)),
        (Value::Double(v), _) => Some(*v),
        (Value::Boolean(v), _) => Some(f64::from(u8::from(*v))),
        (Value::String(_), _) => None,
    }
}

/// Handle `payload` as each kind of node and device message in turn; the
/// readings found. The fuzz target's entry point (`fuzz/`): must never panic.
#[doc(hidden)]
#[must_use]
pub fn handle_for_fuzzing(payload: &[u8]) -> usize {
    let mut host = Host::default();
    let mut found = 0;
    for topic in
        ["spBv1.0/g/NBIRTH/n", "spBv1.0/g/DBIRTH/n/d", "spBv1.0/g/NDATA/n", "spBv1.0/g/DDATA/n/d", "spBv1.0/g/NDEATH/n"]
    {
        if let Some(topic) = Topic::parse(topic) {
            found += host.handle(&topic, payload, 0).readings.len();
        }
    }
    found
}

/// The parts of a Sparkplug B topic `spBv1.0/group/TYPE/node[/device]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic<'a> {
    /// Group id.
    pub group: &'a str,
    /// Message type (`NBIRTH`, `DDATA`, ...).
    pub kind: &'a str,
    /// Edge node id.
    pub node: &'a str,
    /// Device id, for device messages.
    pub device: Option<&'a str>,
}

impl<'a> Topic<'a> {
    /// Parse a topic; `None` when it is not a Sparkplug B node or device topic
    /// (e.g. `spBv1.0/STATE/host`).
    #[must_use]
    pub fn parse(topic: &'a str) -> Option<Topic<'a>> {
        let mut parts = topic.split('/');
        if parts.next()? != "spBv1.0" {
            return None;
        }
        let group = parts.next()?;
        let kind = parts.next()?;
        let node = parts.next()?;
        let device = parts.next();
        if parts.next().is_some() {
            return None;
        }
        Some(Topic { group, kind, node, device })
    }

    /// The topic of a node command to this topic's node.
    #[must_use]
    pub fn node_command(&self) -> String {
        format!("spBv1.0/{}/NCMD/{}", self.group, self.node)
    }
}

/// One value that arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Device id, or `None` for a node's own metric.
    pub device: Option<String>,
    /// Metric name.
    pub metric: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// The value.
    pub value: f64,
}

/// What one message meant.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Values that arrived, in payload order.
    pub readings: Vec<Reading>,
    /// Problems worth counting, by cause (each becomes a malformed-message count).
    pub problems: Vec<Problem>,
    /// Ask the node for a rebirth (a sequence gap, an unknown alias, data before birth).
    pub request_rebirth: bool,
    /// Metrics skipped because their value is text, null or absent.
    pub skipped: usize,
}

/// Why a message was not taken whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Problem {
    /// Bytes that are not a Sparkplug B payload.
    BadProtobuf,
    /// A sequence number that did not follow the previous one.
    SequenceGap,
    /// A metric by alias the node never declared.
    UnknownAlias,
    /// Data from a node that has not been born (or has died).
    NotBorn,
    /// A metric with neither name nor alias.
    Nameless,
}

impl Problem {
    /// A short name for logs and metrics.
    #[must_use]
    pub fn cause(self) -> &'static str {
        match self {
            Problem::BadProtobuf => "bad protobuf",
            Problem::SequenceGap => "sequence gap",
            Problem::UnknownAlias => "unknown alias",
            Problem::NotBorn => "data before birth",
            Problem::Nameless => "metric without name or alias",
        }
    }
}

/// What the host knows of one edge node.
#[derive(Debug, Default)]
struct Node {
    online: bool,
    /// The sequence number the next message should carry.
    next_seq: Option<u64>,
    /// Alias to metric name (aliases are unique across a node and its devices).
    aliases: HashMap<u64, String>,
    /// Devices born since the node's birth.
    devices: HashMap<String, bool>,
}

/// The host application's view of every edge node it has heard from.
#[derive(Debug, Default)]
pub struct Host {
    nodes: HashMap<(String, String), Node>,
}

impl Host {
    /// Interpret one message; `now_ms` stamps metrics without a timestamp.
    pub fn handle(&mut self, topic: &Topic<'_>, bytes: &[u8], now_ms: i64) -> Outcome {
        let mut outcome = Outcome::default();
        if matches!(topic.kind, "NCMD" | "DCMD" | "STATE") {
            return outcome;
        }
        let payload = match Payload::decode(bytes) {
            Ok(p) => p,
            Err(_) => {
                outcome.problems.push(Problem::BadProtobuf);
                return outcome;
            }
        };
        let node = self.nodes.entry((topic.group.to_string(), topic.node.to_string())).or_default();
        let device = topic.device.map(str::to_string);
        match topic.kind {
            "NBIRTH" => {
                *node = Node { online: true, ..Node::default() };
                node.next_seq = payload.seq.map(|s| (s + 1) % 256);
                node.learn_aliases(&payload.metrics);
            }
            "NDEATH" => {
                node.online = false;
                node.next_seq = None;
                return outcome;
            }
            "DBIRTH" | "DDATA" | "NDATA" | "DDEATH" => {
                if !node.online {
                    outcome.problems.push(Problem::NotBorn);
                    outcome.request_rebirth = true;
                    return outcome;
                }
                if let (Some(seq), Some(expected)) = (payload.seq, node.next_seq)
                    && seq != expected
                {
                    outcome.problems.push(Problem::SequenceGap);
                    outcome.request_rebirth = true;
                }
                node.next_seq = payload.seq.map(|s| (s + 1) % 256);
                match (topic.kind, &device) {
                    ("DBIRTH", Some(d)) => {
                        node.devices.insert(d.clone(), true);
                        node.learn_aliases(&payload.metrics);
                    }
                    ("DDEATH", Some(d)) => {
                        node.devices.insert(d.clone(), false);
                        return outcome;
                    }
                    ("DDATA", Some(d)) if node.devices.get(d) != Some(&true) => {
                        outcome.problems.push(Problem::NotBorn);
                        outcome.request_rebirth = true;
                        return outcome;
                    }
                    _ => {}
                }
            }
            _ => return outcome,
        }
        let default_ts = payload.timestamp.map_or(now_ms, |t| t as i64);
        for metric in &payload.metrics {
            let name = match (&metric.name, metric.alias) {
                (Some(name), _) => name.clone(),
                (None, Some(alias)) => match node.aliases.get(&alias) {
                    Some(name) => name.clone(),
                    None => {
                        outcome.problems.push(Problem::UnknownAlias);
                        outcome.request_rebirth = true;
                        continue;
                    }
                },
                (None, None) => {
                    outcome.problems.push(Problem::Nameless);
                    continue;
                }
            };
            if name == BD_SEQ || name.starts_with("Node Control/") || name.starts_with("Device Control/") {
                continue;
            }
            let value =
                if metric.is_null == Some(true) { None } else { numeric(metric.value.as_ref(), metric.datatype) };
            let Some(value) = value else {
                outcome.skipped += 1;
                continue;
            };
            let ts = metric.timestamp.map_or(default_ts, |t| t as i64);
            outcome.readings.push(Reading { device: device.clone(), metric: name, ts, value });
        }
        outcome
    }
}

impl Node {
    fn learn_aliases(&mut self, metrics: &[Metric]) {
        for m in metrics {
            if let (Some(name), Some(alias)) = (&m.name, m.alias) {
                self.aliases.insert(alias, name.clone());
            }
        }
    }
}

/// The payload of a rebirth request.
#[must_use]
pub fn rebirth_request(now_ms: i64) -> Vec<u8> {
    Payload {
        timestamp: Some(now_ms.max(0) as u64),
        metrics: vec![Metric {
            name: Some(REBIRTH_METRIC.to_string()),
            datatype: Some(datatype::BOOLEAN),
            value: Some(Value::Boolean(true)),
            timestamp: Some(now_ms.max(0) as u64),
            ..Metric::default()
        }],
        seq: None,
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: Option<&str>, alias: Option<u64>, datatype: u32, value: Value) -> Metric {
        Metric {
            name: name.map(str::to_string),
            alias,
            datatype: Some(datatype),
            value: Some(value),
            ..Metric::default()
        }
    }

    fn payload(seq: u64, metrics: Vec<Metric>) -> Vec<u8> {
        Payload { timestamp: Some(1_000), metrics, seq: Some(seq) }.encode_to_vec()
    }

    fn topic(kind: &str, device: Option<&'static str>) -> Topic<'static> {
        let kind: &'static str = Box::leak(kind.to_string().into_boxed_str());
        Topic { group: "plant", kind, node: "edge1", device }
    }

    /// Bytes of a payload written by hand from the protobuf wire format:
    /// timestamp = 5 (field 1 varint), seq = 0 (field 3), one metric
    /// {name "t" (field 1), alias 7 (field 2), datatype 10 (field 4), double 2.5 (field 13)}.
    #[test]
    fn decodes_the_wire_format_written_by_hand() {
        let mut metric = vec![0x0a, 0x01, b't', 0x10, 0x07, 0x20, 0x0a, 0x69];
        metric.extend_from_slice(&2.5f64.to_le_bytes());
        let mut bytes = vec![0x08, 0x05, 0x18, 0x00, 0x12, metric.len() as u8];
        bytes.extend_from_slice(&metric);
        let p = Payload::decode(&bytes[..]).unwrap();
        assert_eq!(p.timestamp, Some(5));
        assert_eq!(p.seq, Some(0));
        assert_eq!(p.metrics[0].name.as_deref(), Some("t"));
        assert_eq!(p.metrics[0].alias, Some(7));
        assert_eq!(numeric(p.metrics[0].value.as_ref(), p.metrics[0].datatype), Some(2.5));
    }

    #[test]
    fn numeric_values_follow_the_declared_type() {
        let cases: &[(Value, u32, Option<f64>)] = &[
            (Value::Int(0xFF), datatype::INT8, Some(-1.0)),
            (Value::Int(0xFFFE), datatype::INT16, Some(-2.0)),
            (Value::Int(u32::MAX), datatype::INT32, Some(-1.0)),
            (Value::Int(u32::MAX), 7, Some(4_294_967_295.0)),
            (Value::Long(u64::MAX), datatype::INT64, Some(-1.0)),
            (Value::Long(5), 8, Some(5.0)),
            (Value::Float(1.5), 9, Some(1.5)),
            (Value::Double(-3.25), 10, Some(-3.25)),
            (Value::Boolean(true), datatype::BOOLEAN, Some(1.0)),
            (Value::String("on".into()), 12, None),
        ];
        for (value, datatype, expected) in cases {
            assert_eq!(numeric(Some(value), Some(*datatype)), *expected, "{value:?} as {datatype}");
        }
    }

    #[test]
    fn topics_parse_and_name_their_command_topic() {
        let t = Topic::parse("spBv1.0/plant/DDATA/edge1/pump-1").unwrap();
        assert_eq!((t.group, t.kind, t.node, t.device), ("plant", "DDATA", "edge1", Some("pump-1")));
        assert_eq!(t.node_command(), "spBv1.0/plant/NCMD/edge1");
        assert_eq!(Topic::parse("spBv1.0/STATE/host"), None);
        assert_eq!(Topic::parse("plant/x/y/z"), None);
        assert_eq!(Topic::parse("spBv1.0/a/b/c/d/e"), None);
    }

    #[test]
    fn aliases_resolve_after_birth_and_gaps_ask_for_rebirth() {
        let mut host = Host::default();
        let birth = payload(0, vec![metric(Some("bdSeq"), None, datatype::INT64, Value::Long(0))]);
        assert_eq!(host.handle(&topic("NBIRTH", None), &birth, 0), Outcome::default());
        let dbirth = payload(1, vec![metric(Some("temp"), Some(3), 10, Value::Double(20.0))]);
        let out = host.handle(&topic("DBIRTH", Some("pump")), &dbirth, 0);
        assert_eq!(out.readings.len(), 1);
        assert_eq!(out.readings[0].metric, "temp");
        assert!(!out.request_rebirth);

        let data = payload(2, vec![metric(None, Some(3), 10, Value::Double(21.0))]);
        let out = host.handle(&topic("DDATA", Some("pump")), &data, 0);
        assert_eq!(
            out.readings,
            vec![Reading { device: Some("pump".into()), metric: "temp".into(), ts: 1_000, value: 21.0 }]
        );
        assert!(out.problems.is_empty());

        // seq 3 skipped: the data still counts, and a rebirth is asked for.
        let gap = payload(4, vec![metric(None, Some(3), 10, Value::Double(22.0))]);
        let out = host.handle(&topic("DDATA", Some("pump")), &gap, 0);
        assert_eq!(out.problems, vec![Problem::SequenceGap]);
        assert!(out.request_rebirth);
        assert_eq!(out.readings.len(), 1);

        let unknown = payload(5, vec![metric(None, Some(99), 10, Value::Double(1.0))]);
        let out = host.handle(&topic("DDATA", Some("pump")), &unknown, 0);
        assert_eq!(out.problems, vec![Problem::UnknownAlias]);
        assert!(out.request_rebirth && out.readings.is_empty());

        // The sequence wraps at 256.
        let mut host = Host::default();
        host.handle(&topic("NBIRTH", None), &payload(255, vec![]), 0);
        let out = host.handle(&topic("NDATA", None), &payload(0, vec![]), 0);
        assert!(out.problems.is_empty());
    }

    #[test]
    fn death_and_garbage_are_reported_not_fatal() {
        let mut host = Host::default();
        let out = host.handle(&topic("NDATA", None), &payload(0, vec![]), 0);
        assert_eq!(out.problems, vec![Problem::NotBorn]);
        assert!(out.request_rebirth);
        host.handle(&topic("NBIRTH", None), &payload(0, vec![]), 0);
        host.handle(&topic("NDEATH", None), &payload(0, vec![]), 0);
        let out = host.handle(&topic("NDATA", None), &payload(1, vec![]), 0);
        assert_eq!(out.problems, vec![Problem::NotBorn]);
        let out = host.handle(&topic("NDATA", None), b"\xff\xff\xff not protobuf", 0);
        assert_eq!(out.problems, vec![Problem::BadProtobuf]);
        // Device data before its DBIRTH.
        host.handle(&topic("NBIRTH", None), &payload(0, vec![]), 0);
        let out = host.handle(&topic("DDATA", Some("x")), &payload(1, vec![]), 0);
        assert_eq!(out.problems, vec![Problem::NotBorn]);
    }

    #[test]
    fn a_rebirth_request_is_the_standard_metric() {
        let p = Payload::decode(&rebirth_request(42)[..]).unwrap();
        assert_eq!(p.metrics[0].name.as_deref(), Some(REBIRTH_METRIC));
        assert_eq!(p.metrics[0].value, Some(Value::Boolean(true)));
        assert_eq!(p.metrics[0].datatype, Some(datatype::BOOLEAN));
    }
}
