//! Browsing a server's address space: how a source finds an asset's
//! variables under one folder (`browse = [{ root, asset }]`), and how an
//! engineer finds the node ids to configure (`usan opcua browse`).

use futures_util::TryStreamExt;
use opcua::client::Session;
use opcua::client::browser::{BrowseFilter, BrowseResultItem};
use opcua::types::{
    AttributeId, BrowseDescription, DataTypeId, Identifier, NodeClass, NodeClassMask, NodeId, ReadValueId,
    ReferenceDescription, TimestampsToReturn, Variant,
};
use std::collections::{HashMap, HashSet};

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
pub(crate) fn is_numeric(data_type: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_types_are_named_and_others_keep_their_id() {
        assert_eq!(type_name(&NodeId::new(0, 11u32)), "Double");
        assert_eq!(type_name(&NodeId::new(0, 1u32)), "Boolean");
        assert_eq!(type_name(&NodeId::new(3, 3001u32)), "ns=3;i=3001");
        assert!(is_numeric("UInt16") && !is_numeric("String"));
    }
}
