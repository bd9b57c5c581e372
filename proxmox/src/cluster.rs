//! Cluster- and node-level calls: version, nodes, node status, cluster resources and status,
//! next free VMID, storages and their content, containers.

use serde::Serialize;

use crate::client::{pairs, ProxmoxClient};
use crate::endpoints;
use crate::error::ProxmoxError;
use crate::params::StorageListParams;
use crate::types::{
    ClusterResource, ClusterStatusEntry, GuestStatus, NodeInfo, NodeStatus, ResourceType,
    StorageContent, StorageInfo, VersionInfo,
};

#[derive(Serialize)]
struct ResourcesQuery {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
}

#[derive(Serialize)]
struct NextIdQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    vmid: Option<u32>,
}

#[derive(Serialize)]
struct ContentQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vmid: Option<u32>,
}

impl ProxmoxClient {
    /// `GET /version`.
    pub async fn version(&self) -> Result<VersionInfo, ProxmoxError> {
        self.call(&endpoints::VERSION, &[], vec![]).await
    }

    /// `GET /nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ProxmoxError> {
        self.call(&endpoints::NODES, &[], vec![]).await
    }

    /// `GET /nodes/{node}/status`.
    pub async fn node_status(&self, node: &str) -> Result<NodeStatus, ProxmoxError> {
        self.call(&endpoints::NODE_STATUS, &[("node", node)], vec![])
            .await
    }

    /// `GET /cluster/resources[?type=…]`.
    pub async fn cluster_resources(
        &self,
        kind: Option<ResourceType>,
    ) -> Result<Vec<ClusterResource>, ProxmoxError> {
        let ep = &endpoints::CLUSTER_RESOURCES;
        let q = ResourcesQuery {
            kind: kind.map(ResourceType::as_str),
        };
        self.call(ep, &[], pairs(ep, &q)?).await
    }

    /// `GET /cluster/status`.
    pub async fn cluster_status(&self) -> Result<Vec<ClusterStatusEntry>, ProxmoxError> {
        self.call(&endpoints::CLUSTER_STATUS, &[], vec![]).await
    }

    /// `GET /cluster/nextid`: the lowest free VMID now (reserves nothing; racy), or with
    /// `Some(vmid)` a check that `vmid` is free (HTTP 400 "VM N already exists" if not).
    pub async fn next_id(&self, vmid: Option<u32>) -> Result<u32, ProxmoxError> {
        #[derive(serde::Deserialize)]
        struct Id(#[serde(deserialize_with = "crate::types::lenient::u32")] u32);
        let ep = &endpoints::NEXTID;
        let Id(id) = self
            .call(ep, &[], pairs(ep, &NextIdQuery { vmid })?)
            .await?;
        Ok(id)
    }

    /// `GET /nodes/{node}/storage`.
    pub async fn storage_list(
        &self,
        node: &str,
        filter: &StorageListParams,
    ) -> Result<Vec<StorageInfo>, ProxmoxError> {
        let ep = &endpoints::STORAGE_LIST;
        self.call(ep, &[("node", node)], pairs(ep, filter)?).await
    }

    /// `GET /nodes/{node}/storage/{storage}/content[?content=iso][&vmid=N]`.
    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        content: Option<&str>,
        vmid: Option<u32>,
    ) -> Result<Vec<StorageContent>, ProxmoxError> {
        let ep = &endpoints::STORAGE_CONTENT;
        let q = ContentQuery { content, vmid };
        self.call(ep, &[("node", node), ("storage", storage)], pairs(ep, &q)?)
            .await
    }

    /// `GET /nodes/{node}/lxc`.
    pub async fn lxc_list(&self, node: &str) -> Result<Vec<GuestStatus>, ProxmoxError> {
        self.call(&endpoints::LXC_LIST, &[("node", node)], vec![])
            .await
    }
}
