//! An OPC UA server from the Rust crate usan's client comes from
//! (async-opcua, `server` feature, a dev-dependency only), run in process:
//! `assets` folders `Line.A<a>` under Objects, each with Double variables
//! `s0..s<signals>` (node ids `ns=<ns>;s=A<a>.S<s>`). Used by the OPC UA
//! test and by `cargo bench --bench opcua`.
#![allow(dead_code)] // each of the two users needs a part

use opcua::server::address_space::Variable;
use opcua::server::diagnostics::NamespaceMetadata;
use opcua::server::node_manager::memory::{SimpleNodeManager, simple_node_manager};
use opcua::server::{Limits, ServerBuilder, ServerHandle};
use opcua::types::{DataValue, DateTime, NodeId};
use std::path::Path;
use std::sync::Arc;

/// The namespace of the simulated plant.
pub const NAMESPACE: &str = "urn:usan:rust-opcua-server";

/// A running server; stopped by [`RustOpcServer::stop`] or when the runtime ends.
pub struct RustOpcServer {
    handle: ServerHandle,
    manager: Arc<SimpleNodeManager>,
    /// The namespace index of [`NAMESPACE`].
    pub namespace: u16,
    /// Per asset, its variables in signal order.
    pub variables: Vec<Vec<NodeId>>,
}

impl RustOpcServer {
    /// Build the address space and start serving on `127.0.0.1:port`
    /// (anonymous, security None); call inside a tokio runtime.
    pub fn start(port: u16, pki_dir: &Path, assets: usize, signals: usize) -> RustOpcServer {
        RustOpcServer::start_with(port, pki_dir, assets, signals, true)
    }

    /// [`RustOpcServer::start`], optionally a server that refuses every subscription
    /// (as small embedded servers do), so that clients must read.
    pub fn start_with(port: u16, pki_dir: &Path, assets: usize, signals: usize, subscriptions: bool) -> RustOpcServer {
        let mut limits = Limits::default();
        if !subscriptions {
            limits.subscriptions.max_subscriptions_per_session = 0;
        }
        limits.subscriptions.max_monitored_items_per_sub = 1_000_000;
        limits.subscriptions.max_monitored_item_queue_size = 1_000;
        limits.subscriptions.max_notifications_per_publish = 1_000_000;
        limits.subscriptions.max_queued_notifications = 1_000_000;
        limits.operational.max_monitored_items_per_call = 1_000_000;
        limits.operational.max_nodes_per_read = 1_000_000;
        // Sample as fast as values change (the crate's default floor is 100 ms).
        limits.subscriptions.min_sampling_interval_ms = 1.0;
        limits.subscriptions.min_publishing_interval_ms = 10.0;
        let (server, handle) = ServerBuilder::new_anonymous("usan test server (async-opcua)")
            .application_uri("urn:usan:rust-opcua-server:application")
            .host("127.0.0.1")
            .port(port)
            .pki_dir(pki_dir)
            .create_sample_keypair(true)
            .trust_client_certs(true)
            .limits(limits)
            .subscription_poll_interval_ms(10)
            .with_node_manager(simple_node_manager(
                NamespaceMetadata { namespace_uri: NAMESPACE.to_string(), ..Default::default() },
                "usan",
            ))
            .build()
            .expect("server settings");
        let manager = handle.node_managers().get_of_type::<SimpleNodeManager>().expect("the simple node manager");
        let namespace = handle.get_namespace_index(NAMESPACE).expect("the namespace is registered");
        let mut variables = Vec::new();
        {
            let mut space = manager.address_space().write();
            for a in 0..assets {
                let folder = NodeId::new(namespace, format!("Line.A{a}"));
                space.add_folder(&folder, format!("A{a}"), format!("A{a}"), &NodeId::objects_folder_id());
                let ids: Vec<NodeId> = (0..signals).map(|s| NodeId::new(namespace, format!("A{a}.S{s}"))).collect();
                let nodes = ids
                    .iter()
                    .enumerate()
                    .map(|(s, id)| Variable::new(id, format!("s{s}"), format!("s{s}"), 0.0))
                    .collect();
                space.add_variables(nodes, &folder);
                variables.push(ids);
            }
        }
        tokio::spawn(async move {
            let _ = server.run().await;
        });
        RustOpcServer { handle, manager, namespace, variables }
    }

    /// Give every variable a new value with source time `at`, notifying subscriptions.
    pub fn set_all(&self, value: impl Fn(usize, usize) -> f64, at: DateTime) {
        let updates = self.variables.iter().enumerate().flat_map(|(a, ids)| {
            let value = &value;
            ids.iter().enumerate().map(move |(s, id)| (id, None, DataValue::new_at(value(a, s), at)))
        });
        self.manager.set_values(self.handle.subscriptions(), updates).expect("variables exist");
    }

    /// Stop serving (sessions end; the port is released).
    pub fn stop(&self) {
        self.handle.cancel();
    }
}
