//! Seeds a new data dir: template 104 (qcow2 on the shared NFS storage, cloud-init drive there
//! too, clonable to any node), template 105 (raw on pve1's local-lvm, clonable on pve1 only), ISOs.

use crate::conf::{format_size, VmConf};
use crate::sim::{Sim, Vm};
use crate::storage::{self, Volume, SHARED_NFS};

/// Virtual size of the seeded template disks (sparse: a few hundred KiB on disk).
pub const TEMPLATE_DISK: u64 = 2 << 30;

const ISOS: [(&str, u64); 3] = [
    ("ubuntu-24.04.1-live-server-amd64.iso", 2_773_874_688),
    ("debian-12.7.0-amd64-netinst.iso", 661_651_456),
    ("virtio-win-0.1.262.iso", 708_104_192),
];

async fn make_volume(
    sim: &Sim,
    node: &str,
    id: &str,
    volname: &str,
    format: &str,
    size: u64,
    vmid: u32,
) -> Result<(), String> {
    let path = storage::volume_path(&sim.data_dir, node, id, volname);
    crate::disks::create(&path, format, size, None, sim.real_files(id)).await?;
    sim.add_volume(
        node,
        id,
        volname,
        Volume {
            size,
            format: format.to_string(),
            vmid: Some(vmid),
            parent: None,
            ctime: chrono::Utc::now().timestamp(),
        },
    );
    Ok(())
}

fn make_iso(sim: &Sim, node: &str, id: &str, name: &str, size: u64) -> Result<(), String> {
    let volname = format!("iso/{name}");
    let path = storage::volume_path(&sim.data_dir, node, id, &volname);
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
    }
    let f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    f.set_len(size).map_err(|e| e.to_string())?; // sparse
    sim.add_volume(
        node,
        id,
        &volname,
        Volume {
            size,
            format: "iso".into(),
            vmid: None,
            parent: None,
            ctime: chrono::Utc::now().timestamp(),
        },
    );
    Ok(())
}

fn template_conf(sim: &Sim, name: &str, disk: &str, cloudinit: &str) -> VmConf {
    let mut c = VmConf::default();
    let p = &mut c.props;
    let mut set = |k: &str, v: String| {
        p.insert(k.to_string(), v);
    };
    set("agent", "1".into());
    set("boot", "order=scsi0".into());
    set("cores", "2".into());
    set("cpu", "x86-64-v2-AES".into());
    set("ciuser", "student".into());
    set("ide2", format!("{cloudinit},media=cdrom"));
    set("ipconfig0", "ip=dhcp".into());
    set("memory", "2048".into());
    set("meta", "creation-qemu=9.0.2,ctime=1730000000".into());
    set("name", name.into());
    set(
        "net0",
        format!("virtio={},bridge=vmbr0,firewall=1", sim.random_mac()),
    );
    set("ostype", "l26".into());
    set(
        "scsi0",
        format!("{disk},size={}", format_size(TEMPLATE_DISK)),
    );
    set("scsihw", "virtio-scsi-single".into());
    set("serial0", "socket".into());
    set("smbios1", format!("uuid={}", sim.random_uuid()));
    set("template", "1".into());
    set("vga", "serial0".into());
    set("vmgenid", sim.random_uuid());
    c
}

pub async fn seed(sim: &Sim) -> Result<(), String> {
    let first = sim.nodes.first().cloned().unwrap_or_else(|| "pve1".into());
    let nfs = storage::def(SHARED_NFS).ok_or("no nfs storage")?;
    let lvm = storage::def("local-lvm").ok_or("no lvm storage")?;

    let disk104 = storage::disk_volname(nfs, 104, 0, "qcow2", true);
    let ci104 = storage::cloudinit_volname(nfs, 104);
    make_volume(
        sim,
        &first,
        SHARED_NFS,
        &disk104,
        "qcow2",
        TEMPLATE_DISK,
        104,
    )
    .await?;
    make_volume(sim, &first, SHARED_NFS, &ci104, "qcow2", 4 << 20, 104).await?;
    let c104 = template_conf(
        sim,
        "ubuntu-2404-cloud",
        &format!("{SHARED_NFS}:{disk104}"),
        &format!("{SHARED_NFS}:{ci104}"),
    );

    let disk105 = storage::disk_volname(lvm, 105, 0, "raw", true);
    let ci105 = storage::cloudinit_volname(lvm, 105);
    make_volume(
        sim,
        &first,
        "local-lvm",
        &disk105,
        "raw",
        TEMPLATE_DISK,
        105,
    )
    .await?;
    make_volume(sim, &first, "local-lvm", &ci105, "raw", 4 << 20, 105).await?;
    let c105 = template_conf(
        sim,
        "debian-12-lab",
        &format!("local-lvm:{disk105}"),
        &format!("local-lvm:{ci105}"),
    );

    for (vmid, conf) in [(104u32, c104), (105u32, c105)] {
        let vm = Vm::new(vmid, &first, conf);
        sim.write_conf(&vm);
        sim.state().vms.insert(vmid, vm);
    }
    for (name, size) in ISOS {
        make_iso(sim, &first, SHARED_NFS, name, size)?;
        for node in &sim.nodes {
            make_iso(sim, node, "local", name, size)?;
        }
    }
    Ok(())
}
