//! Discovery against sushy-tools: the system and its virtual CD are found by
//! following links from `/redfish/v1` (sushy's system ids are libvirt
//! UUIDs), Basic auth is used because sushy has no SessionService, and a BMC
//! with several systems needs `systemId`.

mod redfish_common;

use edgeforge::bmc::{AuthKind, BmcError, PowerState, RedfishClient};
use redfish_common::*;

#[tokio::test]
async fn the_system_and_its_virtual_cd_are_found_by_following_links() {
    let lab = lab("disc", 1);
    let machine = &lab.machines[0];
    let cfg = config(&lab, &one_node(&lab, &lab.endpoint(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();
    assert_eq!(client.login().await.unwrap(), AuthKind::Basic);
    let status = client.status().await.unwrap();
    client.logout().await.unwrap();

    assert_eq!(
        status.identity.odata_id,
        format!("/redfish/v1/Systems/{}", machine.uuid)
    );
    assert_eq!(status.identity.uuid.as_deref(), Some(machine.uuid.as_str()));
    assert_eq!(status.identity.name.as_deref(), Some(machine.name.as_str()));
    assert_eq!(
        status.identity.manufacturer.as_deref(),
        Some("Sushy Emulator")
    );
    assert_eq!(status.power, PowerState::Off);
    assert_eq!(machine.domstate().unwrap(), "shut off");
    assert_eq!(status.boot.target.as_deref(), Some("Hdd"));
    assert_eq!(status.boot.mode.as_deref(), Some("UEFI"));
    let slots: Vec<(&str, Vec<&str>)> = status
        .media
        .iter()
        .map(|m| {
            (
                m.id.as_str(),
                m.media_types.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        slots,
        [
            ("Cd", vec!["CD", "DVD"]),
            ("Floppy", vec!["Floppy", "USBStick"])
        ]
    );
    assert!(status.media.iter().all(|m| !m.is_present()));
}

#[tokio::test]
async fn several_systems_need_a_system_id_which_matches_the_id() {
    let lab = lab("multi", 2);
    let (first, second) = (&lab.machines[0], &lab.machines[1]);

    let cfg = config(&lab, &one_node(&lab, &lab.endpoint(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();
    let err = client.login().await.unwrap_err();
    client.logout().await.unwrap();
    let text = err.to_string();
    assert!(
        matches!(err, BmcError::AmbiguousSystem { count: 2, .. }),
        "{text}"
    );
    for m in &lab.machines {
        assert!(
            text.contains(&format!("`{}` ({})", m.uuid, m.name)),
            "{text}"
        );
    }
    assert!(text.contains("set `systemId`"), "{text}");

    let cfg = config(
        &lab,
        &one_node(&lab, &lab.endpoint(), Some(&second.uuid)),
        "metal-1",
    );
    let client = RedfishClient::new(&cfg).unwrap();
    let status = client.status().await.unwrap();
    client.logout().await.unwrap();
    assert_eq!(status.identity.name.as_deref(), Some(second.name.as_str()));

    let cfg = config(
        &lab,
        &one_node(&lab, &lab.endpoint(), Some(&first.name)),
        "metal-1",
    );
    let client = RedfishClient::new(&cfg).unwrap();
    let err = client.login().await.unwrap_err().to_string();
    client.logout().await.unwrap();
    assert!(
        err.contains(&format!("no system has `Id` or `UUID` `{}`", first.name))
            && err.contains(&second.uuid)
            && err.contains("fix `systemId`"),
        "{err}"
    );
}
