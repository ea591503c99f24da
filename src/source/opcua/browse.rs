//! Browsing a server's address space: how an engineer finds the node ids to
//! configure (`usan opcua browse`), and how a source finds an asset's
//! variables under one folder (`browse = [{ root, asset }]`).

use super::{OpcUaSourceConfig, default_pki_dir};
use anyhow::Context as _;
use futures_util::TryStreamExt;
use opcua::client::Session;
use opcua::client::browser::{BrowseFilter, BrowseResultItem};
use opcua::types::{
    AttributeId, BrowseDescription, DataTypeId, Identifier, NodeClass, NodeClassMask, NodeId, ReadValueId,
    ReferenceDescription, TimestampsToReturn, Variant,
};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A node found below the browsed folder.
#[derive(Debug, Clone, PartialEq)]
pub struct Browsed {
    /// Its node id.
    pub node: NodeId,
    /// Browse names from the folder down to the node (the folder excluded).
    pub path: Vec<String>,
    /// Object or variable.
    pub class: NodeClass,
    /// The variable's data type (`Double`, or a node id for types outside namespace 0), once read.
    pub data_type: Option<String>,
}

/// The standard `Server` object (`i=2253`): hundreds of diagnostic nodes
/// nobody maps to an asset, skipped unless browsed on purpose.
const SERVER_OBJECT: u32 = 2253;

fn is_server_object(node: &NodeId) -> bool {
    node.namespace == 0 && node.identifier == Identifier::Numeric(SERVER_OBJECT)
}

/// Objects and variables below `root`, at most `depth` levels down, depth
/// first in the server's order (each node once, however often referenced).
///
/// # Errors
/// The server refuses a browse request or the connection fails.
pub async fn browse(session: &Session, root: &NodeId, depth: usize) -> anyhow::Result<Vec<Browsed>> {
    let filter = BrowseFilter::new_hierarchical().node_class_mask(NodeClassMask::OBJECT | NodeClassMask::VARIABLE);
    let next_filter = filter.clone();
    let policy = move |item: &BrowseResultItem| -> Vec<BrowseDescription> {
        if item.depth() >= depth {
            return Vec::new();
        }
        item.references()
            .iter()
            .filter(|r| r.node_id.server_index == 0 && !is_server_object(&r.node_id.node_id))
            .map(|r| next_filter.new_description_from_node(r.node_id.node_id.clone()))
            .collect()
    };
    let mut children: HashMap<NodeId, Vec<ReferenceDescription>> = HashMap::new();
    let stream = session.browser().handler(policy).run(vec![filter.new_description_from_node(root.clone())]);
    let mut stream = Box::pin(stream);
    while let Some(item) = stream.try_next().await.map_err(|e| anyhow::anyhow!("browsing {root}: {e}"))? {
        if !item.status().is_good() {
            anyhow::bail!("browsing {}: {}", item.parent_id(), item.status());
        }
        let (parent, references) = item.into_results();
        children.entry(parent).or_default().extend(references);
    }
    let mut found = Vec::new();
    let mut seen = HashSet::from([root.clone()]);
    walk(&children, root, &mut Vec::new(), &mut seen, &mut found);
    Ok(found)
}

fn walk(
    children: &HashMap<NodeId, Vec<ReferenceDescription>>,
    parent: &NodeId,
    path: &mut Vec<String>,
    seen: &mut HashSet<NodeId>,
    found: &mut Vec<Browsed>,
) {
    for reference in children.get(parent).map_or(&[][..], Vec::as_slice) {
        let node = &reference.node_id.node_id;
        if is_server_object(node) || !seen.insert(node.clone()) {
            continue;
        }
        path.push(reference.browse_name.name.to_string());
        found.push(Browsed { node: node.clone(), path: path.clone(), class: reference.node_class, data_type: None });
        walk(children, node, path, seen, found);
        path.pop();
    }
}

/// Fill in the data type of every variable (one read per 1,000 variables).
///
/// # Errors
/// The read fails as a whole.
pub async fn read_data_types(session: &Session, nodes: &mut [Browsed]) -> anyhow::Result<()> {
    let mut variables: Vec<&mut Browsed> = nodes.iter_mut().filter(|n| n.class == NodeClass::Variable).collect();
    for chunk in variables.chunks_mut(1000) {
        let reads: Vec<ReadValueId> = chunk
            .iter()
            .map(|n| ReadValueId {
                node_id: n.node.clone(),
                attribute_id: AttributeId::DataType as u32,
                ..Default::default()
            })
            .collect();
        let values = session
            .read(&reads, TimestampsToReturn::Neither, 0.0)
            .await
            .map_err(|e| anyhow::anyhow!("reading data types: {e}"))?;
        for (node, value) in chunk.iter_mut().zip(values) {
            if let Some(Variant::NodeId(id)) = value.value {
                node.data_type = Some(type_name(&id));
            }
        }
    }
    Ok(())
}

/// `Double` for the standard types, the node id for the others.
fn type_name(id: &NodeId) -> String {
    match (&id.identifier, id.namespace) {
        (Identifier::Numeric(n), 0) => DataTypeId::try_from(*n).map_or_else(|()| id.to_string(), |t| format!("{t:?}")),
        _ => id.to_string(),
    }
}

/// Whether values of this type become samples (numbers and booleans).
fn is_numeric(data_type: &str) -> bool {
    matches!(
        data_type,
        "Boolean"
            | "SByte"
            | "Byte"
            | "Int16"
            | "UInt16"
            | "Int32"
            | "UInt32"
            | "Int64"
            | "UInt64"
            | "Float"
            | "Double"
    )
}

/// `usan opcua browse` as typed on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct BrowseCommand {
    /// The server, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// Node to start from (default: the Objects folder).
    #[arg(long, default_value = "i=85")]
    pub root: String,
    /// Levels below the root to browse.
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    /// Security policy: None, Basic256Sha256, Aes128_Sha256_RsaOaep, Aes256_Sha256_RsaPss.
    #[arg(long, default_value = "None")]
    pub security_policy: String,
    /// Security mode: none, sign or sign_and_encrypt.
    #[arg(long, default_value = "none")]
    pub security_mode: String,
    /// User name (anonymous without).
    #[arg(long)]
    pub username: Option<String>,
    /// Environment variable holding the password.
    #[arg(long)]
    pub password_env: Option<String>,
    /// usan's certificate and the trusted server certificates.
    #[arg(long, default_value_os_t = default_pki_dir())]
    pub pki_dir: PathBuf,
    /// Trust the server's certificate without it being in `<pki_dir>/trusted`.
    #[arg(long)]
    pub trust_server_certs: bool,
    /// Print the variables as `nodes` lines of a source for this asset, instead of the tree.
    #[arg(long)]
    pub asset: Option<String>,
}

impl BrowseCommand {
    /// The source settings these arguments mean (no nodes).
    fn source_config(&self) -> OpcUaSourceConfig {
        OpcUaSourceConfig {
            name: "browse".into(),
            endpoint: self.endpoint.clone(),
            security_policy: self.security_policy.clone(),
            security_mode: self.security_mode.clone(),
            username: self.username.clone(),
            password: None,
            password_env: self.password_env.clone(),
            pki_dir: self.pki_dir.clone(),
            trust_server_certs: self.trust_server_certs,
            mode: super::default_opc_mode(),
            publishing_interval: super::default_publishing(),
            sampling_interval: super::default_sampling(),
            deadband: 0.0,
            poll: super::default_poll(),
            nodes: Vec::new(),
            browse: Vec::new(),
        }
    }

    /// Connect, browse, print.
    ///
    /// # Errors
    /// Bad arguments, no connection within 30 s, a refused browse.
    pub async fn run(&self) -> anyhow::Result<()> {
        let root =
            NodeId::from_str(&self.root).map_err(|_| anyhow::anyhow!("`{}` is not an OPC UA node id", self.root))?;
        let config = self.source_config();
        let problems: Vec<String> = config
            .validate(&HashSet::new())
            .into_iter()
            .filter(|p| !p.contains("no nodes and nothing to browse"))
            .collect();
        if !problems.is_empty() {
            anyhow::bail!("{}", problems.join("\n"));
        }
        let mut client = config.client()?;
        let (session, event_loop) = tokio::time::timeout(
            Duration::from_secs(30),
            client.connect_to_matching_endpoint(config.endpoint(), config.identity()?),
        )
        .await
        .with_context(|| format!("no answer from {} within 30 s", self.endpoint))?
        .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", self.endpoint))?;
        let _driver = super::AbortOnDrop(event_loop.spawn());
        tokio::time::timeout(Duration::from_secs(30), session.wait_for_connection())
            .await
            .with_context(|| format!("no session with {} within 30 s", self.endpoint))?;
        let mut nodes = browse(&session, &root, self.depth).await?;
        read_data_types(&session, &mut nodes).await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
        let text = match &self.asset {
            Some(asset) => nodes_toml(&nodes, asset),
            None => tree(&nodes),
        };
        print!("{text}");
        Ok(())
    }
}

/// One line per node, indented by depth: browse name, node id, data type or `Object`.
fn tree(nodes: &[Browsed]) -> String {
    let width = nodes.iter().map(|n| 2 * n.path.len() + n.path.last().map_or(0, String::len)).max().unwrap_or(0);
    let mut text = String::new();
    for n in nodes {
        let name = format!("{}{}", "  ".repeat(n.path.len() - 1), n.path.last().map_or("", String::as_str));
        let kind = match n.class {
            NodeClass::Variable => n.data_type.as_deref().unwrap_or("Variable"),
            _ => "Object",
        };
        text.push_str(&format!("{name:width$}  {:40}  {kind}\n", n.node.to_string()));
    }
    text
}

/// `nodes = [...]` for a source: signals named by browse path; variables
/// whose values are not numbers are commented out.
fn nodes_toml(nodes: &[Browsed], asset: &str) -> String {
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = String::from("nodes = [\n");
    for n in nodes.iter().filter(|n| n.class == NodeClass::Variable) {
        let line = format!(
            "{{ node = {}, asset = {}, signal = {} }},",
            quote(&n.node.to_string()),
            quote(asset),
            quote(&n.path.join("."))
        );
        match n.data_type.as_deref() {
            Some(t) if is_numeric(t) => text.push_str(&format!("  {line}\n")),
            other => text.push_str(&format!("  # {line}  # {}: not a number\n", other.unwrap_or("unknown type"))),
        }
    }
    text.push_str("]\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &[&str], class: NodeClass, data_type: Option<&str>) -> Browsed {
        Browsed {
            node: NodeId::new(2, path.join(".")),
            path: path.iter().map(ToString::to_string).collect(),
            class,
            data_type: data_type.map(str::to_string),
        }
    }

    #[test]
    fn variables_become_paste_ready_node_lines() {
        let nodes = [
            node(&["Motor"], NodeClass::Object, None),
            node(&["Motor", "Current"], NodeClass::Variable, Some("Double")),
            node(&["Mode"], NodeClass::Variable, Some("String")),
        ];
        let text = nodes_toml(&nodes, "pump-1");
        assert_eq!(
            text,
            "nodes = [\n  { node = \"ns=2;s=Motor.Current\", asset = \"pump-1\", signal = \"Motor.Current\" },\n  \
             # { node = \"ns=2;s=Mode\", asset = \"pump-1\", signal = \"Mode\" },  # String: not a number\n]\n"
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(parsed["nodes"].as_array().unwrap().len(), 1);
        let lines: Vec<String> =
            tree(&nodes).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(
            lines,
            ["Motor ns=2;s=Motor Object", "Current ns=2;s=Motor.Current Double", "Mode ns=2;s=Mode String"]
        );
    }

    #[test]
    fn standard_types_are_named_and_others_keep_their_id() {
        assert_eq!(type_name(&NodeId::new(0, 11u32)), "Double");
        assert_eq!(type_name(&NodeId::new(0, 1u32)), "Boolean");
        assert_eq!(type_name(&NodeId::new(3, 3001u32)), "ns=3;i=3001");
        assert!(is_numeric("UInt16") && !is_numeric("String"));
    }
}
