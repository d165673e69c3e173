//! One-time boot override against sushy-tools: Cd and Hdd are set and read
//! back (sushy keeps overrides `Continuous`, which the read-back accepts),
//! the change lands in the inactive libvirt domain (the device boots first),
//! and a boot mode sushy does not advertise is refused before anything is
//! sent (seen in the request log of a pass-through proxy).

mod redfish_common;

use edgeforge::bmc::{BmcError, BootMode, BootTarget, RedfishClient};
use edgeforge_tests::fault_proxy::FaultProxy;
use redfish_common::*;

/// The `<disk ...>` element of the inactive XML whose `device` is `device`.
fn disk_element(xml: &str, device: &str) -> String {
    let start = xml
        .find(&format!("device='{device}'"))
        .unwrap_or_else(|| panic!("no {device} disk in\n{xml}"));
    let end = xml[start..].find("</disk>").expect("disk end") + start;
    xml[start..end].to_string()
}

#[tokio::test]
async fn cd_and_hdd_overrides_are_set_and_read_back() {
    let lab = lab("boot", 1);
    let machine = &lab.machines[0];
    let cfg = config(&lab, &one_node(&lab, &lab.endpoint(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();

    let cd = client.boot_once(BootTarget::Cd, None).await;
    let xml_cd = machine.inactive_xml().unwrap();
    let hdd = client
        .boot_once(BootTarget::Hdd, Some(BootMode::Uefi))
        .await;
    let xml_hdd = machine.inactive_xml().unwrap();
    let status = client.status().await;
    client.logout().await.unwrap();

    let cd = cd.unwrap_or_else(|e| panic!("{e}\n{}", lab.log()));
    assert_eq!(cd.target.as_deref(), Some("Cd"));
    assert_eq!(
        cd.enabled.as_deref(),
        Some("Continuous"),
        "sushy ignores Once"
    );
    assert!(
        disk_element(&xml_cd, "cdrom").contains("<boot order='1'/>"),
        "{xml_cd}"
    );
    assert!(!disk_element(&xml_cd, "disk").contains("<boot order='1'/>"));

    let hdd = hdd.unwrap();
    assert_eq!(hdd.target.as_deref(), Some("Hdd"));
    assert_eq!(hdd.mode.as_deref(), Some("UEFI"));
    assert!(disk_element(&xml_hdd, "disk").contains("<boot order='1'/>"));
    assert_eq!(status.unwrap().boot.target.as_deref(), Some("Hdd"));
}

#[tokio::test]
async fn a_boot_mode_the_bmc_does_not_offer_is_refused_before_sending() {
    let lab = lab("bootmode", 1);
    let machine = &lab.machines[0];
    let proxy = FaultProxy::start(lab.addr()).unwrap();
    let cfg = config(&lab, &one_node(&lab, &proxy.url(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();
    let err = client
        .boot_once(BootTarget::Cd, Some(BootMode::Legacy))
        .await
        .unwrap_err();
    client.logout().await.unwrap();

    let text = err.to_string();
    assert!(matches!(err, BmcError::ModeNotAdvertised { .. }), "{text}");
    assert!(
        text.contains("boot mode `Legacy` is not offered by the BMC")
            && text.contains("its current mode is UEFI")
            && text.contains(&format!("the BMC of node `metal-1` ({})", proxy.url())),
        "{text}"
    );
    let sent: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .collect();
    assert!(sent.is_empty(), "only reads were sent: {sent:?}");
    let xml = machine.inactive_xml().unwrap();
    assert!(
        xml.contains("<loader readonly='yes' type='pflash'") && !xml.contains("firmware='bios'"),
        "{xml}"
    );
}
