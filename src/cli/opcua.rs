//! `usan opcua browse ENDPOINT`: an OPC UA server's address space, printed
//! as a tree or (with `--asset`) as `nodes` lines to paste into a source.

use crate::source::SourceKind;
use crate::source::opcua::browse::{Browsed, browse, is_numeric, read_data_types};
use crate::source::opcua::{AbortOnDrop, OpcUaSourceConfig, default_pki_dir};
use anyhow::Context as _;
use opcua::types::{NodeClass, NodeId};
use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// `usan opcua` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Print the objects and variables below a node, with node ids and data types.
    Browse(BrowseCommand),
}

/// Run `usan opcua`.
///
/// # Errors
/// As [`BrowseCommand::run`].
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Browse(browse) => super::runtime()?.block_on(browse.run()),
    }
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
            mode: crate::source::opcua::default_opc_mode(),
            publishing_interval: crate::source::opcua::default_publishing(),
            sampling_interval: crate::source::opcua::default_sampling(),
            deadband: 0.0,
            poll: crate::source::opcua::default_poll(),
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
        let _driver = AbortOnDrop(event_loop.spawn());
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
    use opcua::types::NodeId;

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
}
