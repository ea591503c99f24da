//! How usan speaks the protocols several parts share: the MQTT broker
//! settings and client (the MQTT source and sink, `usan bench mqtt`) and
//! Sparkplug B payloads. A protocol used by one component alone (Modbus,
//! OPC UA) lives in that component's file.

pub mod mqtt;
pub mod sparkplug;
