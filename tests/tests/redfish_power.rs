//! Power against sushy-tools, read back from libvirt too (`virsh
//! domstate`): on, off and cycle, with the ResetType chosen from what sushy
//! advertises, and no action at all when the machine is already in the
//! requested state (seen in the request log of a pass-through proxy).

mod redfish_common;

use edgeforge::bmc::{PowerChange, PowerState, RedfishClient};
use edgeforge_tests::fault_proxy::FaultProxy;
use redfish_common::*;

fn resets(proxy: &FaultProxy) -> usize {
    proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && r.ends_with("/Actions/ComputerSystem.Reset"))
        .count()
}

#[tokio::test]
async fn power_on_off_and_cycle_reach_libvirt_and_nothing_is_sent_when_already_there() {
    let lab = lab("power", 1);
    let machine = &lab.machines[0];
    let proxy = FaultProxy::start(lab.addr()).unwrap();
    let cfg = config(&lab, &one_node(&lab, &proxy.url(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();

    let on = client.power_on().await;
    let on_again = client.power_on().await;
    let after_on = machine.domstate();
    let resets_after_on = resets(&proxy);
    let cycle = client.power_cycle().await;
    let after_cycle = machine.domstate();
    let off = client.power_off().await;
    let after_off = machine.domstate();
    let off_again = client.power_off().await;
    client.logout().await.unwrap();

    assert!(
        matches!(
            on.unwrap(),
            PowerChange::Changed {
                reset_type: "On",
                from: PowerState::Off,
                to: PowerState::On,
                ..
            }
        ),
        "{}",
        lab.log()
    );
    assert_eq!(on_again.unwrap(), PowerChange::Unchanged(PowerState::On));
    assert_eq!(after_on.unwrap(), "running");
    assert_eq!(resets_after_on, 1, "{:?}", proxy.requests());

    let cycle = cycle.unwrap();
    assert!(
        matches!(
            cycle.as_slice(),
            [
                PowerChange::Changed {
                    reset_type: "ForceOff",
                    to: PowerState::Off,
                    ..
                },
                PowerChange::Changed {
                    reset_type: "On",
                    to: PowerState::On,
                    ..
                }
            ]
        ),
        "{cycle:?}"
    );
    assert_eq!(after_cycle.unwrap(), "running");

    assert!(matches!(
        off.unwrap(),
        PowerChange::Changed {
            reset_type: "ForceOff",
            from: PowerState::On,
            to: PowerState::Off,
            ..
        }
    ));
    assert_eq!(after_off.unwrap(), "shut off");
    assert_eq!(off_again.unwrap(), PowerChange::Unchanged(PowerState::Off));
    assert_eq!(resets(&proxy), 4, "{:?}", proxy.requests());
}
