//! Reading a cluster's inventory from Proxmox with few requests: `/cluster/resources` names the
//! nodes, the guests on each (placement load), the storages each node reaches (type, shared,
//! content, usage) and which VMs are templates; `/cluster/status` gives node addresses; then one
//! config read per template and one content listing per ISO storage (once for a shared storage,
//! once per node for a local one).

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use labfleet_fleet::backend::{
    InventoryScope, IsoSeen, IsosSeen, NodeSeen, Observation, StorageSeen, TemplateSeen,
    TemplatesSeen,
};
use labfleet_proxmox::{ClusterResource, ProxmoxClient, ProxmoxError};

use self::volumes::{classify, StorageKind};

pub(crate) mod volumes;

/// Config reads in flight at once (a cluster with many templates must not be flooded).
const CONFIG_READS: usize = 4;

fn int<T: TryFrom<u64>>(v: Option<u64>) -> Option<T> {
    v.and_then(|v| T::try_from(v).ok())
}

/// Reads the cluster.
pub(crate) async fn observe(
    client: &ProxmoxClient,
    wanted: InventoryScope,
) -> Result<Observation, ProxmoxError> {
    let resources = client.cluster_resources(None).await?;
    let status = client.cluster_status().await?;
    let ips: HashMap<String, String> = status
        .into_iter()
        .filter(|e| e.kind == "node")
        .filter_map(|e| Some((e.name, e.ip?)))
        .collect();

    let mut guests: HashMap<&str, i32> = HashMap::new();
    for r in resources
        .iter()
        .filter(|r| is_guest(r) && r.template != Some(true))
    {
        if let Some(node) = r.node.as_deref() {
            *guests.entry(node).or_default() += 1;
        }
    }
    let mut nodes: Vec<NodeSeen> = resources
        .iter()
        .filter(|r| r.kind == "node")
        .filter_map(|r| {
            let name = r.node.clone()?;
            Some(NodeSeen {
                online: r.status.as_deref() == Some("online"),
                ip: ips.get(&name).cloned(),
                cpus: r.maxcpu.and_then(|c| i32::try_from(c.round() as i64).ok()),
                max_mem: int(r.maxmem),
                guests: guests.get(name.as_str()).copied().unwrap_or(0),
                name,
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let online: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.online)
        .map(|n| n.name.as_str())
        .collect();

    let mut storages: Vec<StorageSeen> = resources
        .iter()
        .filter(|r| r.kind == "storage")
        .filter_map(|r| {
            Some(StorageSeen {
                node: r.node.clone()?,
                storage: r.storage.clone()?,
                storage_type: r.plugintype.clone().unwrap_or_default(),
                shared: r.shared.unwrap_or(false),
                content: r.content.clone().unwrap_or_default(),
                active: r.status.as_deref() == Some("available"),
                total: int(r.maxdisk),
                used: int(r.disk),
            })
        })
        .collect();
    storages.sort_by(|a, b| (&a.node, &a.storage).cmp(&(&b.node, &b.storage)));

    let templates = match wanted.templates {
        true => Some(read_templates(client, &resources, &storages, &online).await?),
        false => None,
    };
    let isos = match wanted.isos {
        true => Some(read_isos(client, &storages, &online).await?),
        false => None,
    };
    Ok(Observation {
        nodes,
        storages,
        templates,
        isos,
    })
}

fn is_guest(r: &ClusterResource) -> bool {
    r.kind == "qemu" || r.kind == "lxc"
}

/// One config read per template on an online node; templates elsewhere stay as they were.
async fn read_templates(
    client: &ProxmoxClient,
    resources: &[ClusterResource],
    storages: &[StorageSeen],
    online: &HashSet<&str>,
) -> Result<TemplatesSeen, ProxmoxError> {
    // Type and shared-ness are properties of the storage, the same on every node.
    let kinds: HashMap<String, StorageKind> = storages
        .iter()
        .map(|s| {
            (
                s.storage.clone(),
                StorageKind {
                    storage_type: s.storage_type.clone(),
                    shared: s.shared,
                },
            )
        })
        .collect();
    let mut out = TemplatesSeen::default();
    let mut readable = Vec::new();
    for r in resources
        .iter()
        .filter(|r| r.kind == "qemu" && r.template == Some(true))
    {
        let (Some(vmid), Some(node)) = (r.vmid, r.node.clone()) else {
            continue;
        };
        if online.contains(node.as_str()) {
            readable.push((vmid, node, r.name.clone()));
        } else {
            out.unreadable.insert(i64::from(vmid));
        }
    }
    let read: Vec<Option<TemplateSeen>> = futures::stream::iter(readable)
        .map(|(vmid, node, listed_name)| {
            let kinds = &kinds;
            async move {
                let config = match client.qemu_config(&node, vmid, false, None).await {
                    Ok(c) => c,
                    // Destroyed between the listing and the read: it is gone.
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(e),
                };
                let name = config
                    .name()
                    .or(listed_name)
                    .unwrap_or_else(|| format!("VM {vmid}"));
                Ok(Some(TemplateSeen {
                    vmid: i64::from(vmid),
                    name,
                    volumes: classify(&config.drives(), kinds),
                    node,
                }))
            }
        })
        .buffer_unordered(CONFIG_READS)
        .try_collect()
        .await?;
    out.seen = read.into_iter().flatten().collect();
    out.seen.sort_by_key(|t| t.vmid);
    Ok(out)
}

/// Lists ISOs once per shared storage (on the first online node that has it available) and per
/// node for local storages.
async fn read_isos(
    client: &ProxmoxClient,
    storages: &[StorageSeen],
    online: &HashSet<&str>,
) -> Result<IsosSeen, ProxmoxError> {
    let holds_isos = |s: &&StorageSeen| s.content.split(',').any(|c| c.trim() == "iso");
    // (location node, storage) → the node to ask, or None when nobody can list it now.
    let mut locations: BTreeMap<(String, String), Option<String>> = BTreeMap::new();
    for s in storages.iter().filter(holds_isos) {
        let listable = s.active && online.contains(s.node.as_str());
        let location = if s.shared {
            (String::new(), s.storage.clone())
        } else {
            (s.node.clone(), s.storage.clone())
        };
        let ask = locations.entry(location).or_insert(None);
        if ask.is_none() && listable {
            *ask = Some(s.node.clone());
        }
    }
    let mut out = IsosSeen::default();
    for ((node, storage), ask) in locations {
        let Some(ask) = ask else {
            out.unlisted.insert((node, storage));
            continue;
        };
        let shared = node.is_empty();
        for c in client
            .storage_content(&ask, &storage, Some("iso"), None)
            .await?
        {
            let is_iso = c
                .content
                .as_deref()
                .map_or(c.format == "iso", |t| t == "iso");
            if !is_iso || c.volid.is_empty() {
                continue;
            }
            let name = c
                .volid
                .rsplit(['/', ':'])
                .next()
                .unwrap_or(&c.volid)
                .to_string();
            out.seen.push(IsoSeen {
                node: node.clone(),
                storage: storage.clone(),
                name,
                size: i64::try_from(c.size).ok(),
                volid: c.volid,
                shared,
            });
        }
    }
    Ok(out)
}
