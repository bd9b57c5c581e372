//! Where a class's VMs go. The rule of the older lab tool labfleet replaces: rank the online
//! nodes by load (QEMU + LXC guests, ascending) and deal the VMs round-robin over that ranking —
//! nodes [5, 8, 3] get VMs in the order node 3, node 1, node 2, node 3, … Only nodes that can
//! legally hold the clone are ranked: PVE lets a clone leave the template's node only if every
//! volume of the template (disks, cloud-init drive, ISO) is on shared storage, and otherwise
//! refuses with "can't clone VM to node '…' (VM uses local storage)" (`docs/proxmox.md`,
//! "Clones").

/// A node and its load, as `/cluster/resources` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLoad {
    /// Node name.
    pub name: String,
    /// QEMU VMs + LXC containers on it.
    pub guests: u32,
    /// Whether it is online.
    pub online: bool,
}

/// Why no node can take the class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The requested node is unknown.
    #[error("no node `{0}` in this cluster")]
    UnknownNode(String),
    /// The requested node is offline.
    #[error("node `{0}` is offline")]
    NodeOffline(String),
    /// The template's volumes are local to its node and the request names another node.
    #[error(
        "template {template} has volumes on local storage of `{template_node}`; its clones can only go to `{template_node}`, not `{requested}`"
    )]
    LocalTemplate {
        /// Template VMID.
        template: i64,
        /// Its node.
        template_node: String,
        /// The node asked for.
        requested: String,
    },
    /// No online node can hold a clone.
    #[error("no online node can hold a clone of template {0}")]
    NoNode(i64),
}

/// What placement needs to know about the template.
#[derive(Clone, Debug)]
pub struct TemplateSite {
    /// Template VMID.
    pub vmid: i64,
    /// Node holding it.
    pub node: String,
    /// Every volume on shared storage.
    pub all_shared: bool,
}

/// The nodes in the order VMs are dealt to them.
pub fn ranking(
    nodes: &[NodeLoad],
    template: &TemplateSite,
    requested: Option<&str>,
) -> Result<Vec<String>, PlacementError> {
    if let Some(want) = requested {
        let node = nodes
            .iter()
            .find(|n| n.name == want)
            .ok_or_else(|| PlacementError::UnknownNode(want.to_string()))?;
        if !node.online {
            return Err(PlacementError::NodeOffline(want.to_string()));
        }
        if !template.all_shared && want != template.node {
            return Err(PlacementError::LocalTemplate {
                template: template.vmid,
                template_node: template.node.clone(),
                requested: want.to_string(),
            });
        }
        return Ok(vec![want.to_string()]);
    }
    let mut legal: Vec<&NodeLoad> = nodes
        .iter()
        .filter(|n| n.online && (template.all_shared || n.name == template.node))
        .collect();
    if legal.is_empty() {
        return Err(PlacementError::NoNode(template.vmid));
    }
    legal.sort_by(|a, b| a.guests.cmp(&b.guests).then_with(|| a.name.cmp(&b.name)));
    Ok(legal.into_iter().map(|n| n.name.clone()).collect())
}

/// The node of each of `count` VMs, dealt round-robin over `ranking`.
pub fn deal(ranking: &[String], count: usize) -> Vec<String> {
    (0..count)
        .map(|i| ranking[i % ranking.len()].clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, guests: u32) -> NodeLoad {
        NodeLoad {
            name: name.into(),
            guests,
            online: true,
        }
    }

    fn shared() -> TemplateSite {
        TemplateSite {
            vmid: 104,
            node: "node1".into(),
            all_shared: true,
        }
    }

    #[test]
    fn follows_the_seeds_example() {
        let nodes = [load("node1", 5), load("node2", 8), load("node3", 3)];
        let order = ranking(&nodes, &shared(), None).unwrap();
        assert_eq!(order, ["node3", "node1", "node2"]);
        assert_eq!(
            deal(&order, 5),
            ["node3", "node1", "node2", "node3", "node1"]
        );
    }

    #[test]
    fn offline_nodes_get_nothing() {
        let mut nodes = vec![load("a", 0), load("b", 1)];
        nodes[0].online = false;
        assert_eq!(ranking(&nodes, &shared(), None).unwrap(), ["b"]);
    }

    #[test]
    fn a_template_on_local_storage_keeps_its_clones_on_its_node() {
        let local = TemplateSite {
            all_shared: false,
            ..shared()
        };
        let nodes = [load("node1", 50), load("node2", 0)];
        assert_eq!(ranking(&nodes, &local, None).unwrap(), ["node1"]);
        assert!(matches!(
            ranking(&nodes, &local, Some("node2")),
            Err(PlacementError::LocalTemplate { .. })
        ));
    }

    #[test]
    fn a_requested_node_must_exist_and_be_online() {
        let mut nodes = vec![load("node1", 0)];
        assert_eq!(
            ranking(&nodes, &shared(), Some("nope")),
            Err(PlacementError::UnknownNode("nope".into()))
        );
        nodes[0].online = false;
        assert_eq!(
            ranking(&nodes, &shared(), Some("node1")),
            Err(PlacementError::NodeOffline("node1".into()))
        );
    }
}
