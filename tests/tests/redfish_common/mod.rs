//! Helpers shared by the Redfish suites: a sushy-tools lab per test, and
//! BMC settings read the way edgeforge reads them (an inventory file,
//! loaded and checked, then the node's `machine`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgeforge::bmc::BmcConfig;
use edgeforge_tests::sushy::{SushyLab, SushyOptions};

/// Starts a lab of `machines` domains (plain HTTP), panicking with sushy's log.
pub fn lab(tag: &str, machines: usize) -> SushyLab {
    SushyLab::start(
        tag,
        &SushyOptions {
            machines,
            tls: false,
            ..SushyOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting the sushy-tools lab: {e:#}"))
}

/// Writes `inventory` into the lab's directory and returns its path.
pub fn write_inventory(lab: &SushyLab, inventory: &str) -> PathBuf {
    let path = lab.dir().join("inventory.yaml");
    std::fs::write(&path, inventory).expect("writing the inventory");
    path
}

/// The BMC settings of `node` in `inventory`, loaded like `edgeforge` does;
/// status polls every 200 ms.
pub fn config(lab: &SushyLab, inventory: &str, node: &str) -> BmcConfig {
    let path = write_inventory(lab, inventory);
    config_from(&path, node)
}

/// The BMC settings of `node` in the inventory file at `path`.
pub fn config_from(path: &Path, node: &str) -> BmcConfig {
    let loaded = edgeforge::inventory::load(path).unwrap_or_else(|e| panic!("inventory: {e:?}"));
    let view = loaded
        .inventory
        .nodes()
        .find(|v| v.node.name.value == node)
        .expect("the node is in the inventory");
    let mut cfg = BmcConfig::from_machine(node, &view.node.machine)
        .expect("BMC settings")
        .expect("a Redfish node");
    cfg.timeouts.poll = Duration::from_millis(200);
    cfg
}

/// The inventory of one node `metal-1` for `endpoint` (the lab's own, or a
/// proxy's), optionally with a `systemId`.
pub fn one_node(lab: &SushyLab, endpoint: &str, system_id: Option<&str>) -> String {
    lab.inventory(&[("metal-1", endpoint, system_id, None)])
}
