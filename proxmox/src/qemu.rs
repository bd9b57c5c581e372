//! QEMU VM calls: list, create, destroy, clone, config, power, snapshots, template, resize,
//! RRD data. Calls that start a worker task return its [`Upid`]; wait with `wait_task`.

use serde::Serialize;

use crate::client::{pairs, ProxmoxClient};
use crate::endpoints::{self, Endpoint};
use crate::error::ProxmoxError;
use crate::params::{
    CloneParams, ConfigUpdate, Consolidation, CreateVmParams, DestroyParams, ResizeParams,
    RrdParams, ShutdownParams, SnapshotParams, StartParams, StopParams, Timeframe,
};
use crate::tasks::Upid;
use crate::types::{GuestStatus, RrdPoint, SnapshotInfo, VmConfig};

#[derive(Serialize)]
struct FullQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    full: Option<bool>,
}

#[derive(Serialize)]
struct ConfigQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    snapshot: Option<&'a str>,
}

#[derive(Serialize)]
struct Flag {
    #[serde(skip_serializing_if = "Option::is_none")]
    force: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk: Option<String>,
}

impl ProxmoxClient {
    async fn start_task(
        &self,
        ep: &Endpoint,
        args: &[(&str, &str)],
        params: Vec<(String, String)>,
    ) -> Result<Upid, ProxmoxError> {
        let upid: String = self.call(ep, args, params).await?;
        Upid::parse(&upid)
    }

    /// Starts a task on one VM (`{node}`/`{vmid}` path) with typed parameters.
    async fn vm_task<P: serde::Serialize>(
        &self,
        ep: &Endpoint,
        node: &str,
        vmid: u32,
        params: &P,
    ) -> Result<Upid, ProxmoxError> {
        let id = vmid.to_string();
        self.start_task(ep, &[("node", node), ("vmid", &id)], pairs(ep, params)?)
            .await
    }

    /// `GET /nodes/{node}/qemu[?full=1]`.
    pub async fn qemu_list(
        &self,
        node: &str,
        full: bool,
    ) -> Result<Vec<GuestStatus>, ProxmoxError> {
        let ep = &endpoints::QEMU_LIST;
        let q = FullQuery {
            full: full.then_some(true),
        };
        self.call(ep, &[("node", node)], pairs(ep, &q)?).await
    }

    /// `POST /nodes/{node}/qemu` (task `qmcreate`).
    pub async fn qemu_create(
        &self,
        node: &str,
        params: &CreateVmParams,
    ) -> Result<Upid, ProxmoxError> {
        let ep = &endpoints::QEMU_CREATE;
        self.start_task(ep, &[("node", node)], pairs(ep, params)?)
            .await
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` (task `qmdestroy`).
    pub async fn qemu_delete(
        &self,
        node: &str,
        vmid: u32,
        params: &DestroyParams,
    ) -> Result<Upid, ProxmoxError> {
        self.vm_task(&endpoints::QEMU_DELETE, node, vmid, params)
            .await
    }

    /// `POST /nodes/{node}/qemu/{vmid}/clone` (task `qmclone`; the UPID's id is `vmid`, the source).
    pub async fn qemu_clone(
        &self,
        node: &str,
        vmid: u32,
        params: &CloneParams,
    ) -> Result<Upid, ProxmoxError> {
        self.vm_task(&endpoints::QEMU_CLONE, node, vmid, params)
            .await
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config` (pending values applied unless `current`).
    pub async fn qemu_config(
        &self,
        node: &str,
        vmid: u32,
        current: bool,
        snapshot: Option<&str>,
    ) -> Result<VmConfig, ProxmoxError> {
        let ep = &endpoints::QEMU_CONFIG_GET;
        let id = vmid.to_string();
        let q = ConfigQuery {
            current: current.then_some(true),
            snapshot,
        };
        self.call(ep, &[("node", node), ("vmid", &id)], pairs(ep, &q)?)
            .await
    }

    /// `POST /nodes/{node}/qemu/{vmid}/config`: asynchronous update (task `qmconfig`).
    pub async fn qemu_update_config_async(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<Upid, ProxmoxError> {
        let ep = &endpoints::QEMU_CONFIG_POST;
        let id = vmid.to_string();
        self.start_task(ep, &[("node", node), ("vmid", &id)], pairs(ep, update)?)
            .await
    }

    /// `PUT /nodes/{node}/qemu/{vmid}/config`: synchronous update (takes the config lock in
    /// the request; contention is a transient 500 "can't lock file … got timeout").
    pub async fn qemu_update_config(
        &self,
        node: &str,
        vmid: u32,
        update: &ConfigUpdate,
    ) -> Result<(), ProxmoxError> {
        let ep = &endpoints::QEMU_CONFIG_PUT;
        let id = vmid.to_string();
        let _: serde_json::Value = self
            .call(ep, &[("node", node), ("vmid", &id)], pairs(ep, update)?)
            .await?;
        Ok(())
    }

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`.
    pub async fn qemu_status(&self, node: &str, vmid: u32) -> Result<GuestStatus, ProxmoxError> {
        let id = vmid.to_string();
        self.call(
            &endpoints::QEMU_STATUS,
            &[("node", node), ("vmid", &id)],
            vec![],
        )
        .await
    }

    /// `POST …/status/start` (task `qmstart`).
    pub async fn qemu_start(
        &self,
        node: &str,
        vmid: u32,
        params: &StartParams,
    ) -> Result<Upid, ProxmoxError> {
        self.vm_task(&endpoints::QEMU_START, node, vmid, params)
            .await
    }

    /// `POST …/status/stop` (task `qmstop`; a stopped VM ends `OK`).
    pub async fn qemu_stop(
        &self,
        node: &str,
        vmid: u32,
        params: &StopParams,
    ) -> Result<Upid, ProxmoxError> {
        self.vm_task(&endpoints::QEMU_STOP, node, vmid, params)
            .await
    }

    /// `POST …/status/shutdown` (task `qmshutdown`); `force_stop` stops it after `timeout`.
    pub async fn qemu_shutdown(
        &self,
        node: &str,
        vmid: u32,
        params: &ShutdownParams,
    ) -> Result<Upid, ProxmoxError> {
        self.vm_task(&endpoints::QEMU_SHUTDOWN, node, vmid, params)
            .await
    }

    /// `POST …/status/reboot` (task `qmreboot`; 500 "VM N not running" if stopped).
    pub async fn qemu_reboot(
        &self,
        node: &str,
        vmid: u32,
        timeout_secs: Option<u32>,
    ) -> Result<Upid, ProxmoxError> {
        let ep = &endpoints::QEMU_REBOOT;
        let id = vmid.to_string();
        let p = Flag {
            force: None,
            start: None,
            timeout: timeout_secs,
            disk: None,
        };
        self.start_task(ep, &[("node", node), ("vmid", &id)], pairs(ep, &p)?)
            .await
    }

    /// `GET …/snapshot` (includes the pseudo-snapshot `current`).
    pub async fn snapshot_list(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<Vec<SnapshotInfo>, ProxmoxError> {
        let id = vmid.to_string();
        self.call(
            &endpoints::SNAPSHOT_LIST,
            &[("node", node), ("vmid", &id)],
            vec![],
        )
        .await
    }

    /// `POST …/snapshot` (task `qmsnapshot`).
    pub async fn snapshot_create(
        &self,
        node: &str,
        vmid: u32,
        params: &SnapshotParams,
    ) -> Result<Upid, ProxmoxError> {
        self.vm_task(&endpoints::SNAPSHOT_CREATE, node, vmid, params)
            .await
    }

    /// `DELETE …/snapshot/{snapname}` (task `qmdelsnapshot`).
    pub async fn snapshot_delete(
        &self,
        node: &str,
        vmid: u32,
        snapname: &str,
        force: bool,
    ) -> Result<Upid, ProxmoxError> {
        let ep = &endpoints::SNAPSHOT_DELETE;
        let id = vmid.to_string();
        let p = Flag {
            force: force.then_some(true),
            start: None,
            timeout: None,
            disk: None,
        };
        self.start_task(
            ep,
            &[("node", node), ("vmid", &id), ("snapname", snapname)],
            pairs(ep, &p)?,
        )
        .await
    }

    /// `POST …/snapshot/{snapname}/rollback` (task `qmrollback`).
    pub async fn snapshot_rollback(
        &self,
        node: &str,
        vmid: u32,
        snapname: &str,
        start: bool,
    ) -> Result<Upid, ProxmoxError> {
        let ep = &endpoints::SNAPSHOT_ROLLBACK;
        let id = vmid.to_string();
        let p = Flag {
            force: None,
            start: start.then_some(true),
            timeout: None,
            disk: None,
        };
        self.start_task(
            ep,
            &[("node", node), ("vmid", &id), ("snapname", snapname)],
            pairs(ep, &p)?,
        )
        .await
    }

    /// `POST …/template` (task `qmtemplate`); `disk` converts only that disk.
    pub async fn qemu_template(
        &self,
        node: &str,
        vmid: u32,
        disk: Option<&str>,
    ) -> Result<Upid, ProxmoxError> {
        let ep = &endpoints::QEMU_TEMPLATE;
        let id = vmid.to_string();
        let p = Flag {
            force: None,
            start: None,
            timeout: None,
            disk: disk.map(str::to_string),
        };
        self.start_task(ep, &[("node", node), ("vmid", &id)], pairs(ep, &p)?)
            .await
    }

    /// `PUT …/resize`: a task on PVE ≥ 8 (`Some(upid)`), synchronous before (`None`).
    pub async fn qemu_resize(
        &self,
        node: &str,
        vmid: u32,
        params: &ResizeParams,
    ) -> Result<Option<Upid>, ProxmoxError> {
        let ep = &endpoints::QEMU_RESIZE;
        let id = vmid.to_string();
        let upid: Option<String> = self
            .call(ep, &[("node", node), ("vmid", &id)], pairs(ep, params)?)
            .await?;
        upid.map(|u| Upid::parse(&u)).transpose()
    }

    /// `GET …/rrddata?timeframe=…&cf=…`.
    pub async fn qemu_rrddata(
        &self,
        node: &str,
        vmid: u32,
        timeframe: Timeframe,
        cf: Option<Consolidation>,
    ) -> Result<Vec<RrdPoint>, ProxmoxError> {
        let ep = &endpoints::QEMU_RRDDATA;
        let id = vmid.to_string();
        let p = RrdParams { timeframe, cf };
        self.call(ep, &[("node", node), ("vmid", &id)], pairs(ep, &p)?)
            .await
    }
}
