//! Modbus TCP: poll a PLC's registers and coils at a fixed rate.
//!
//! ```toml
//! [[sources]]
//! type = "modbus"
//! name = "press-plc"
//! address = "192.168.0.10:502"
//! unit = 1                      # the slave / unit id
//! asset = "press-1"             # default asset of every register
//! poll = "1s"
//! timeout = "500ms"
//! retries = 2                   # per request, before the connection is dropped and redialled
//!
//! [[sources.registers]]
//! signal = "oil_temp"
//! kind = "holding"              # holding, input, coil, discrete
//! address = 100                 # 0-based protocol address
//! type = "float32"              # int16, uint16, int32, uint32, float32, float64 (coils: bool)
//! word_order = "big"            # most significant word first ("little": last)
//! byte_order = "big"            # within a word
//! scale = 1.0                   # value = raw · scale + offset
//! offset = 0.0
//! ```
//!
//! Registers of one kind that lie close together are read with one request
//! (at most 125 registers or 2,000 coils); each poll's values share one
//! timestamp, so they form one frame. Only reads are ever sent: usan writes
//! nothing to equipment. An exception response (e.g. an address the device
//! does not have) or a value that decodes to NaN is counted by cause in
//! `usan_source_malformed_total` and logged once a minute; the rest of the
//! poll goes on. A request that times out after its retries drops the
//! connection; it is redialled after `reconnect_delay`, doubling up to `reconnect_max_delay`, and the outage is
//! counted like any source's.

use super::{BoxFuture, Source, SourceContext, SourceKind};
use crate::common::CauseLog;
use crate::common::HumanDuration;
use crate::plant::Plant;
use crate::telemetry::LinkStats;
use anyhow::Context as _;
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::slave::Slave;
use usan_core::model::{Quality, Sample, Timestamp};

/// `[[sources]] type = "modbus"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSourceConfig {
    /// Source name.
    pub name: String,
    /// `host:port` of the device or gateway.
    pub address: String,
    /// Unit (slave) id.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Asset of registers that do not name one.
    #[serde(default)]
    pub asset: Option<String>,
    /// Poll period.
    #[serde(default = "default_poll")]
    pub poll: HumanDuration,
    /// Per-request timeout.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Retries of a failed request before the connection is dropped.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait after the first failed connection attempt; doubled after each
    /// further failure up to `reconnect_max_delay`.
    #[serde(default = "default_reconnect_delay")]
    pub reconnect_delay: HumanDuration,
    /// Longest wait between connection attempts.
    #[serde(default = "default_reconnect_max_delay")]
    pub reconnect_max_delay: HumanDuration,
    /// Largest gap (in registers or coils) bridged to read neighbours in one request.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// The points to read.
    pub registers: Vec<RegisterConfig>,
}

fn default_unit() -> u8 {
    1
}
fn default_poll() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_retries() -> u32 {
    2
}
fn default_reconnect_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_reconnect_max_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_max_gap() -> u16 {
    8
}

/// One point read from the device.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterConfig {
    /// Signal name.
    pub signal: String,
    /// Asset; the source's `asset` by default.
    #[serde(default)]
    pub asset: Option<String>,
    /// Register table.
    pub kind: RegisterKind,
    /// 0-based protocol address of the first register or coil.
    pub address: u16,
    /// How the registers encode the value; `bool` for coils and discrete inputs.
    #[serde(rename = "type", default)]
    pub data_type: Option<DataType>,
    /// Order of the 16-bit words of a multi-register value.
    #[serde(default)]
    pub word_order: Endian,
    /// Order of the two bytes within each word.
    #[serde(default)]
    pub byte_order: Endian,
    /// Multiplier of the raw value.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
}

fn default_scale() -> f64 {
    1.0
}

/// Modbus tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegisterKind {
    /// Read/write 16-bit registers (function 3).
    Holding,
    /// Read-only 16-bit registers (function 4).
    Input,
    /// Read/write bits (function 1).
    Coil,
    /// Read-only bits (function 2).
    Discrete,
}

impl RegisterKind {
    fn is_bit(self) -> bool {
        matches!(self, RegisterKind::Coil | RegisterKind::Discrete)
    }

    /// Most points one request may read.
    fn max_count(self) -> u16 {
        if self.is_bit() { 2000 } else { 125 }
    }
}

/// Encodings of a value in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// One register, two's complement.
    Int16,
    /// One register.
    Uint16,
    /// Two registers, two's complement.
    Int32,
    /// Two registers.
    Uint32,
    /// Two registers, IEEE 754 single.
    Float32,
    /// Four registers, IEEE 754 double.
    Float64,
    /// A coil or discrete input: 0 or 1.
    Bool,
}

impl DataType {
    /// Registers (or bits) the value spans.
    fn width(self) -> u16 {
        match self {
            DataType::Int16 | DataType::Uint16 | DataType::Bool => 1,
            DataType::Int32 | DataType::Uint32 | DataType::Float32 => 2,
            DataType::Float64 => 4,
        }
    }
}

/// Byte or word order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endian {
    /// Most significant first (the Modbus convention).
    #[default]
    Big,
    /// Least significant first.
    Little,
}

impl RegisterConfig {
    fn data_type(&self) -> DataType {
        self.data_type.unwrap_or(if self.kind.is_bit() { DataType::Bool } else { DataType::Uint16 })
    }
}

/// Decode `data` (as big-endian register words) as every type and order at
/// every offset, sliced as a poll slices a response; the finite values. The
/// fuzz target's entry point (`fuzz/`): must never panic.
#[doc(hidden)]
#[must_use]
pub fn decode_for_fuzzing(data: &[u8]) -> usize {
    let words: Vec<u16> = data.chunks(2).map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])).collect();
    let types = [
        DataType::Bool,
        DataType::Int16,
        DataType::Uint16,
        DataType::Int32,
        DataType::Uint32,
        DataType::Float32,
        DataType::Float64,
    ];
    let mut finite = 0;
    for at in 0..words.len().min(64) {
        for data_type in types {
            let Some(span) = words.get(at..at + usize::from(data_type.width())) else { continue };
            for (word_order, byte_order) in
                [(Endian::Big, Endian::Big), (Endian::Big, Endian::Little), (Endian::Little, Endian::Big), (Endian::Little, Endian::Little)]
            {
                finite += usize::from(decode(span, data_type, word_order, byte_order).is_finite());
            }
        }
    }
    finite
}

/// The value of `words` (already the register's span) as the configured type.
fn decode(words: &[u16], data_type: DataType, word_order: Endian, byte_order: Endian) -> f64 {
    let mut ordered: Vec<u16> = words.to_vec();
    if word_order == Endian::Little {
        ordered.reverse();
    }
    let mut bytes = [0u8; 8];
    for (i, w) in ordered.iter().enumerate().take(4) {
        let pair = match byte_order {
            Endian::Big => w.to_be_bytes(),
            Endian::Little => w.to_le_bytes(),
        };
        bytes[2 * i..2 * i + 2].copy_from_slice(&pair);
    }
    match data_type {
        DataType::Int16 => f64::from(i16::from_be_bytes([bytes[0], bytes[1]])),
        DataType::Uint16 | DataType::Bool => f64::from(u16::from_be_bytes([bytes[0], bytes[1]])),
        DataType::Int32 => f64::from(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        DataType::Uint32 => f64::from(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        DataType::Float32 => f64::from(f32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
        DataType::Float64 => f64::from_be_bytes(bytes),
    }
}

impl SourceKind for ModbusSourceConfig {
    const NAME: &'static str = "modbus";
    const SUMMARY: &'static str = "Polls Modbus TCP devices' registers.";

    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self, assets: &HashSet<&str>) -> Vec<String> {
        let at = format!("source `{}`", self.name);
        let mut problems = Vec::new();
        if self.address.parse::<SocketAddr>().is_err() && !self.address.contains(':') {
            problems.push(format!("{at}: address `{}` is not host:port", self.address));
        }
        if self.registers.is_empty() {
            problems.push(format!("{at}: no registers"));
        }
        let ms = Duration::from_millis;
        let ranges = [
            self.poll.out_of("poll", ms(10), ms(86_400_000)),
            self.timeout.out_of("timeout", ms(10), ms(600_000)),
            self.reconnect_delay.out_of("reconnect_delay", ms(10), ms(3_600_000)),
            crate::common::backoff_problem(&self.reconnect_delay, &self.reconnect_max_delay),
            crate::common::out_of_range("retries", self.retries, 0, 100),
            crate::common::out_of_range("max_gap", self.max_gap, 0, 125),
        ];
        problems.extend(ranges.into_iter().flatten().map(|p| format!("{at}: {p}")));
        for (i, r) in self.registers.iter().enumerate() {
            let here = format!("{at}, registers[{i}] (`{}`)", r.signal);
            match r.asset.as_ref().or(self.asset.as_ref()) {
                None => problems.push(format!("{here}: no asset (set `asset` on the source or the register)")),
                Some(a) if !assets.contains(a.as_str()) => {
                    problems.push(format!("{here}: asset `{a}` is not configured"))
                }
                Some(_) => {}
            }
            let data_type = r.data_type();
            if r.kind.is_bit() != (data_type == DataType::Bool) {
                problems.push(format!(
                    "{here}: {:?} points take type {}",
                    r.kind,
                    if r.kind.is_bit() { "bool" } else { "int16, uint16, int32, uint32, float32 or float64" }
                ));
            }
            if u32::from(r.address) + u32::from(data_type.width()) > 65_536 {
                problems.push(format!("{here}: runs past address 65535"));
            }
            if !r.scale.is_finite() || !r.offset.is_finite() {
                problems.push(format!("{here}: scale and offset must be finite"));
            }
        }
        problems
    }

    fn build(&self, plant: &Plant) -> anyhow::Result<Option<Box<dyn Source>>> {
        Ok(Some(Box::new(ModbusSource::new(self, plant)?)))
    }
}

/// One request: `count` points of `kind` from `start`, feeding `points`.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    kind: RegisterKind,
    start: u16,
    count: u16,
    /// Indices into the configured registers.
    points: Vec<usize>,
}

/// Group the registers into as few requests as the limits allow.
fn plan(registers: &[RegisterConfig], max_gap: u16) -> Vec<Request> {
    let mut order: Vec<usize> = (0..registers.len()).collect();
    order.sort_by_key(|&i| (registers[i].kind, registers[i].address));
    let mut requests: Vec<Request> = Vec::new();
    for i in order {
        let r = &registers[i];
        let end = u32::from(r.address) + u32::from(r.data_type().width());
        if let Some(last) = requests.last_mut()
            && last.kind == r.kind
        {
            let last_end = u32::from(last.start) + u32::from(last.count);
            let new_count = end.max(last_end) - u32::from(last.start);
            if u32::from(r.address) <= last_end + u32::from(max_gap) && new_count <= u32::from(r.kind.max_count()) {
                last.count = new_count as u16;
                last.points.push(i);
                continue;
            }
        }
        requests.push(Request { kind: r.kind, start: r.address, count: r.data_type().width(), points: vec![i] });
    }
    requests
}

/// A running Modbus TCP poller.
pub struct ModbusSource {
    config: ModbusSourceConfig,
    requests: Vec<Request>,
    /// Per register: asset index and signal index.
    targets: Vec<(usize, usize)>,
}

impl ModbusSource {
    /// Prepare the poller.
    ///
    /// # Errors
    /// A register whose asset or signal is not configured.
    pub fn new(config: &ModbusSourceConfig, plant: &Plant) -> anyhow::Result<ModbusSource> {
        let mut targets = Vec::with_capacity(config.registers.len());
        for r in &config.registers {
            let asset_id = r.asset.as_ref().or(config.asset.as_ref()).context("a register has no asset")?;
            let asset =
                *plant.asset_index.get(asset_id).with_context(|| format!("asset `{asset_id}` is not configured"))?;
            let signal = *plant.assets[asset]
                .signal_index
                .get(&r.signal)
                .with_context(|| format!("asset `{asset_id}` has no signal `{}`", r.signal))?;
            targets.push((asset, signal));
        }
        Ok(ModbusSource { requests: plan(&config.registers, config.max_gap), config: config.clone(), targets })
    }
}

impl Source for ModbusSource {
    fn run(self: Box<Self>, context: SourceContext) -> BoxFuture<anyhow::Result<()>> {
        Box::pin(async move { self.run_until_shutdown(context).await })
    }
}

/// Why a poll stopped.
enum PollEnd {
    Done,
    ConnectionLost(String),
    Shutdown,
}

impl ModbusSource {
    async fn run_until_shutdown(self, mut context: SourceContext) -> anyhow::Result<()> {
        let stats = context.metrics.source(&self.config.name);
        let mut log = CauseLog::new(&self.config.name);
        let mut down_since = Instant::now();
        let mut backoff =
            crate::common::Backoff::new(self.config.reconnect_delay.0, self.config.reconnect_max_delay.0);
        loop {
            if *context.shutdown.borrow() {
                return Ok(());
            }
            match self.connect().await {
                Ok(mut ctx) => {
                    backoff.reset();
                    stats.connected.store(true, Ordering::Relaxed);
                    if stats.disconnects.get() > 0 {
                        stats.outage_ms.inc_by(down_since.elapsed().as_millis() as u64);
                    }
                    let reason = self.poll_until_lost(&mut ctx, &context, &stats, &mut log).await;
                    stats.connected.store(false, Ordering::Relaxed);
                    match reason {
                        Some(reason) => {
                            stats.disconnects.inc_by(1);
                            down_since = Instant::now();
                            tracing::warn!(source = %self.config.name, "Modbus connection lost: {reason}; redialling from {:?} on, backing off to {:?}", self.config.reconnect_delay.0, self.config.reconnect_max_delay.0);
                        }
                        None => return Ok(()),
                    }
                }
                Err(e) => {
                    stats.connect_failed("cannot connect");
                    log.note("cannot connect", &format!("{}: {e}", self.config.address));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                _ = context.shutdown.changed() => {}
            }
        }
    }

    async fn connect(&self) -> anyhow::Result<Context> {
        let address = tokio::net::lookup_host(&self.config.address)
            .await?
            .next()
            .with_context(|| format!("`{}` resolves to no address", self.config.address))?;
        let connecting = tokio_modbus::client::tcp::connect_slave(address, Slave(self.config.unit));
        Ok(tokio::time::timeout(self.config.timeout.0, connecting).await.context("timed out")??)
    }

    /// Poll at the configured rate until the connection fails (its reason) or shutdown (`None`).
    async fn poll_until_lost(
        &self,
        ctx: &mut Context,
        context: &SourceContext,
        stats: &Arc<LinkStats>,
        log: &mut CauseLog,
    ) -> Option<String> {
        let mut shutdown = context.shutdown.clone();
        let mut ticker = tokio::time::interval(self.config.poll.0);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return None,
            }
            match self.poll_once(ctx, context, stats, log).await {
                PollEnd::Done => {}
                PollEnd::ConnectionLost(reason) => return Some(reason),
                PollEnd::Shutdown => return None,
            }
        }
    }

    async fn poll_once(
        &self,
        ctx: &mut Context,
        context: &SourceContext,
        stats: &Arc<LinkStats>,
        log: &mut CauseLog,
    ) -> PollEnd {
        let ts = Timestamp(chrono::Utc::now().timestamp_millis());
        let mut per_asset: std::collections::BTreeMap<usize, Vec<Sample>> = std::collections::BTreeMap::new();
        for request in &self.requests {
            let words = match self.read(ctx, request).await {
                Ok(Ok(words)) => words,
                Ok(Err(exception)) => {
                    let cause = exception_cause(exception);
                    stats.malformed(cause);
                    log.note(
                        cause,
                        &format!("{:?} {}..{}", request.kind, request.start, request.start + request.count),
                    );
                    continue;
                }
                Err(reason) => return PollEnd::ConnectionLost(reason),
            };
            stats.messages.inc_by(1);
            for &i in &request.points {
                let r = &self.config.registers[i];
                let at = usize::from(r.address - request.start);
                let Some(span) = words.get(at..at + usize::from(r.data_type().width())) else {
                    stats.malformed("short response");
                    log.note("short response", &r.signal);
                    continue;
                };
                let raw = decode(span, r.data_type(), r.word_order, r.byte_order);
                if !raw.is_finite() {
                    stats.malformed("value is not a finite number");
                    log.note("value is not a finite number", &r.signal);
                    continue;
                }
                let (asset, signal) = self.targets[i];
                per_asset.entry(asset).or_default().push(Sample {
                    signal,
                    ts,
                    value: raw * r.scale + r.offset,
                    quality: Quality::Good,
                });
            }
        }
        if super::send_per_asset(&context.router, per_asset).await { PollEnd::Done } else { PollEnd::Shutdown }
    }

    /// One request with its retries: the words (bits as 0/1), an exception
    /// code from the device, or the reason the connection is given up.
    async fn read(
        &self,
        ctx: &mut Context,
        request: &Request,
    ) -> Result<Result<Vec<u16>, tokio_modbus::ExceptionCode>, String> {
        let mut last_error = String::new();
        for _ in 0..=self.config.retries {
            let (start, count) = (request.start, request.count);
            let reply = match request.kind {
                RegisterKind::Holding => {
                    tokio::time::timeout(self.config.timeout.0, ctx.read_holding_registers(start, count)).await
                }
                RegisterKind::Input => {
                    tokio::time::timeout(self.config.timeout.0, ctx.read_input_registers(start, count)).await
                }
                RegisterKind::Coil => tokio::time::timeout(self.config.timeout.0, ctx.read_coils(start, count))
                    .await
                    .map(|r| r.map(|r| r.map(bits_to_words))),
                RegisterKind::Discrete => {
                    tokio::time::timeout(self.config.timeout.0, ctx.read_discrete_inputs(start, count))
                        .await
                        .map(|r| r.map(|r| r.map(bits_to_words)))
                }
            };
            match reply {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = format!("no reply within {:?}", self.config.timeout.0),
            }
        }
        Err(last_error)
    }
}

fn bits_to_words(bits: Vec<bool>) -> Vec<u16> {
    bits.into_iter().map(u16::from).collect()
}

fn exception_cause(code: tokio_modbus::ExceptionCode) -> &'static str {
    use tokio_modbus::ExceptionCode as E;
    match code {
        E::IllegalFunction => "modbus exception: illegal function",
        E::IllegalDataAddress => "modbus exception: illegal data address",
        E::IllegalDataValue => "modbus exception: illegal data value",
        E::ServerDeviceFailure => "modbus exception: server device failure",
        E::ServerDeviceBusy => "modbus exception: server device busy",
        E::GatewayPathUnavailable => "modbus exception: gateway path unavailable",
        E::GatewayTargetDevice => "modbus exception: gateway target device failed to respond",
        _ => "modbus exception: other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_in_every_byte_and_word_order() {
        // 123.456 as float32 is 0x42F6E979: words AB=0x42F6, CD=0xE979.
        let f32_words = |order: &str| -> Vec<u16> {
            match order {
                "ABCD" => vec![0x42F6, 0xE979],
                "CDAB" => vec![0xE979, 0x42F6],
                "BADC" => vec![0xF642, 0x79E9],
                _ => vec![0x79E9, 0xF642], // DCBA
            }
        };
        let cases = [
            ("ABCD", Endian::Big, Endian::Big),
            ("CDAB", Endian::Little, Endian::Big),
            ("BADC", Endian::Big, Endian::Little),
            ("DCBA", Endian::Little, Endian::Little),
        ];
        for (order, word, byte) in cases {
            let v = decode(&f32_words(order), DataType::Float32, word, byte);
            assert_eq!(v, f64::from(123.456f32), "{order}");
        }
        let table: &[(&[u16], DataType, f64)] = &[
            (&[0xFFFF], DataType::Int16, -1.0),
            (&[0xFFFF], DataType::Uint16, 65535.0),
            (&[0xFFFF, 0xFFFE], DataType::Int32, -2.0),
            (&[0x0001, 0x0000], DataType::Uint32, 65536.0),
            (&[0x4009, 0x21FB, 0x5444, 0x2D18], DataType::Float64, std::f64::consts::PI),
            (&[1], DataType::Bool, 1.0),
        ];
        for (words, data_type, want) in table {
            assert_eq!(decode(words, *data_type, Endian::Big, Endian::Big), *want, "{data_type:?}");
        }
    }

    fn register(kind: RegisterKind, address: u16, data_type: DataType) -> RegisterConfig {
        RegisterConfig {
            signal: format!("s{address}"),
            asset: None,
            kind,
            address,
            data_type: Some(data_type),
            word_order: Endian::Big,
            byte_order: Endian::Big,
            scale: 1.0,
            offset: 0.0,
        }
    }

    #[test]
    fn neighbours_share_a_request_within_the_limits() {
        use DataType::*;
        use RegisterKind::*;
        let registers = vec![
            register(Holding, 10, Float32),
            register(Holding, 0, Uint16),
            register(Holding, 200, Int16), // too far: its own request
            register(Input, 0, Int16),     // another table
            register(Coil, 5, Bool),
            register(Coil, 7, Bool),
            register(Holding, 124, Float64), // fits 0..128? no: 128 > 125 registers
        ];
        let requests = plan(&registers, 10);
        let summary: Vec<(RegisterKind, u16, u16, Vec<usize>)> =
            requests.into_iter().map(|r| (r.kind, r.start, r.count, r.points)).collect();
        assert_eq!(
            summary,
            vec![
                (Holding, 0, 12, vec![1, 0]),
                (Holding, 124, 4, vec![6]),
                (Holding, 200, 1, vec![2]),
                (Input, 0, 1, vec![3]),
                (Coil, 5, 3, vec![4, 5]),
            ]
        );
    }

    #[test]
    fn settings_are_checked_together() {
        let config: ModbusSourceConfig = toml::from_str(
            r#"
            name = "plc"
            address = "nowhere"
            asset = "press"
            [[registers]]
            signal = "a"
            kind = "coil"
            address = 0
            type = "float32"
            [[registers]]
            signal = "b"
            kind = "holding"
            address = 65535
            type = "float64"
            asset = "ghost"
            "#,
        )
        .unwrap();
        let problems = config.validate(&HashSet::from(["press"])).join("\n");
        for expected in ["not host:port", "take type bool", "past address 65535", "`ghost` is not configured"] {
            assert!(problems.contains(expected), "missing {expected:?} in\n{problems}");
        }
        assert!(
            toml::from_str::<RegisterConfig>("signal = \"x\"\nkind = \"holding\"\naddress = 1\ntype = \"float16\"")
                .is_err()
        );
    }
}
