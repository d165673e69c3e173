//! BMCs that refuse or misbehave, with sushy-tools as the BMC: wrong
//! credentials (a real 401 from sushy's bcrypt htpasswd), a BMC that hangs
//! and one that answers 503 a few times and then recovers (both through the
//! fault proxy in front of sushy), and one that never recovers.

mod redfish_common;

use std::time::Duration;

use edgeforge::bmc::{BmcError, PowerState, RedfishClient};
use edgeforge_tests::fault_proxy::{FaultProxy, ProxyFault};
use redfish_common::*;

#[tokio::test]
async fn wrong_credentials_name_the_bmc_and_the_reference_not_the_password() {
    let lab = lab("badpw", 1);
    let wrong = lab.dir().join("wrong-password");
    let wrong_password = "not-the-Right-0ne";
    std::fs::write(&wrong, format!("{wrong_password}\n")).unwrap();
    let inventory = one_node(&lab, &lab.endpoint(), None).replace(
        &lab.password_file().display().to_string(),
        &wrong.display().to_string(),
    );
    let cfg = config(&lab, &inventory, "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();
    let err = client.power_state().await.unwrap_err();
    client.logout().await.unwrap();

    let text = err.to_string();
    assert!(matches!(err, BmcError::Unauthorized { .. }), "{text}");
    assert_eq!(
        text,
        format!(
            "the BMC of node `metal-1` ({}): the BMC refused the credentials of user `admin` \
             (HTTP 401); check `username` and the password reference (file {})",
            lab.endpoint(),
            wrong.display()
        )
    );
    assert!(!text.contains(wrong_password) && !text.contains(lab.password().trim()));
    assert!(!format!("{cfg:?}").contains(wrong_password));
}

#[tokio::test]
async fn a_bmc_that_hangs_hits_the_operation_timeout() {
    let lab = lab("hang", 1);
    let proxy = FaultProxy::start(lab.addr()).unwrap();
    let mut cfg = config(&lab, &one_node(&lab, &proxy.url(), None), "metal-1");
    cfg.timeouts.operation = Duration::from_secs(3);
    let client = RedfishClient::new(&cfg).unwrap();
    assert_eq!(client.power_state().await.unwrap(), PowerState::Off);

    proxy.set_fault(ProxyFault::Hang);
    let err = client.status().await.unwrap_err();
    proxy.set_fault(ProxyFault::None);
    client.logout().await.unwrap();

    let text = err.to_string();
    assert!(matches!(err, BmcError::Timeout { .. }), "{text}");
    assert_eq!(
        text,
        format!(
            "the BMC of node `metal-1` ({}): gave up trying to read the system status after 3 s; \
             check that the BMC answers, or allow more time",
            proxy.url()
        )
    );
}

#[tokio::test]
async fn a_bmc_answering_503_is_retried_until_it_recovers() {
    let lab = lab("unavail", 1);
    let proxy = FaultProxy::start(lab.addr()).unwrap();
    let cfg = config(&lab, &one_node(&lab, &proxy.url(), None), "metal-1");

    proxy.set_fault(ProxyFault::Unavailable(3));
    let client = RedfishClient::new(&cfg).unwrap();
    let state = client.power_state().await;
    assert_eq!(state.unwrap(), PowerState::Off);
    assert_eq!(proxy.unavailable_sent(), 3);
    let roots = proxy
        .requests()
        .iter()
        .filter(|r| *r == "GET /redfish/v1/")
        .count();
    assert_eq!(
        roots,
        4,
        "three 503s, then the answer: {:?}",
        proxy.requests()
    );

    // One that does not recover: the last answer is reported with the BMC's message.
    proxy.set_fault(ProxyFault::Unavailable(100));
    let err = client.status().await.unwrap_err();
    client.logout().await.unwrap();
    let text = err.to_string();
    assert!(
        matches!(err, BmcError::Status { status: 503, .. }),
        "{text}"
    );
    assert!(
        text.contains("cannot read the system status")
            && text.contains("answered HTTP 503: Base.1.8.ServiceTemporarilyUnavailable: The service is temporarily unavailable."),
        "{text}"
    );
    assert_eq!(proxy.unavailable_sent(), 3 + 6, "six attempts in all");
}
