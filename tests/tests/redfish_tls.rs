//! sushy-tools over HTTPS with a certificate from a CA the test made: the
//! CA pinned through `caFile` is trusted (and only it), and without it the
//! BMC is refused with a clear certificate error that says what to set.

mod redfish_common;

use edgeforge::bmc::{BmcError, PowerState, RedfishClient};
use edgeforge_tests::sushy::{SushyLab, SushyOptions};
use redfish_common::*;

fn tls_lab() -> SushyLab {
    SushyLab::start(
        "tls",
        &SushyOptions {
            machines: 1,
            tls: true,
            ..SushyOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting the TLS sushy-tools lab: {e:#}"))
}

#[tokio::test]
async fn the_ca_pinned_in_ca_file_is_trusted_and_without_it_the_bmc_is_refused() {
    let lab = tls_lab();
    let endpoint = lab.endpoint();
    assert!(endpoint.starts_with("https://127.0.0.1:"));
    let ca = lab.ca_file().unwrap();
    let inventory = lab.inventory(&[
        ("pinned", &endpoint, None, Some(ca.as_path())),
        ("unpinned", &endpoint, None, None),
    ]);
    let path = write_inventory(&lab, &inventory);

    let client = RedfishClient::new(&config_from(&path, "pinned")).unwrap();
    let status = client.status().await;
    client.logout().await.unwrap();
    let status = status.unwrap_or_else(|e| panic!("{e}\n{}", lab.log()));
    assert_eq!(status.power, PowerState::Off);
    assert_eq!(
        status.identity.uuid.as_deref(),
        Some(lab.machines[0].uuid.as_str())
    );

    let client = RedfishClient::new(&config_from(&path, "unpinned")).unwrap();
    let err = client.status().await.unwrap_err();
    client.logout().await.unwrap();
    let text = err.to_string();
    assert!(matches!(err, BmcError::Certificate { .. }), "{text}");
    assert!(
        text.starts_with(&format!(
            "the BMC of node `unpinned` ({endpoint}): the BMC's TLS certificate was not accepted ("
        )) && text.contains("UnknownIssuer")
            && text.ends_with("set `caFile` to the CA that signed it"),
        "{text}"
    );
}
