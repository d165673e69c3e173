//! Virtual media against sushy-tools: an insert makes sushy download the
//! image from the harness's HTTP server on 127.0.0.1 inside the POST and
//! attach it to the domain as a write-protected CD; a second insert ejects
//! the first image before; eject detaches it; an image URL that 404s fails
//! with the BMC's own MessageId and message.

mod redfish_common;

use edgeforge::bmc::{BmcError, EjectOutcome, RedfishClient};
use edgeforge_tests::fault_proxy::FaultProxy;
use edgeforge_tests::http::{Fault, HttpServer};
use redfish_common::*;

/// Bytes standing in for an ISO: sushy copies them, it does not read them.
fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[tokio::test]
async fn insert_downloads_from_our_server_a_second_insert_ejects_first_and_eject_detaches() {
    let lab = lab("media", 1);
    let machine = &lab.machines[0];
    let http = HttpServer::start().unwrap();
    http.add_bytes("/live.iso", image(600_000, 1));
    http.add_bytes("/rescue.iso", image(300_000, 2));
    let proxy = FaultProxy::start(lab.addr()).unwrap();
    let cfg = config(&lab, &one_node(&lab, &proxy.url(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();

    let first = client.insert_media(&http.url("/live.iso")).await;
    let slots_after_first = client.media_slots().await;
    let xml_after_first = machine.inactive_xml().unwrap();
    let second = client.insert_media(&http.url("/rescue.iso")).await;
    let eject = client.eject_media().await;
    let xml_after_eject = machine.inactive_xml().unwrap();
    let eject_again = client.eject_media().await;
    client.logout().await.unwrap();

    assert_eq!(first.unwrap_or_else(|e| panic!("{e}\n{}", lab.log())), None);
    let served: Vec<(String, u16)> = http
        .served()
        .iter()
        .map(|s| (s.path.clone(), s.status))
        .collect();
    assert_eq!(
        served,
        [
            ("/live.iso".to_string(), 200),
            ("/rescue.iso".to_string(), 200)
        ]
    );
    let cd = slots_after_first
        .unwrap()
        .into_iter()
        .find(|s| s.id == "Cd")
        .unwrap();
    assert_eq!(cd.image.as_deref(), Some(http.url("/live.iso").as_str()));
    assert!(cd.inserted);
    assert_eq!(cd.write_protected, Some(true));
    let pool_dir = lab.dir().join("pool");
    assert!(
        xml_after_first.contains(&format!("<source file='{}/live-iso-", pool_dir.display())),
        "{xml_after_first}"
    );

    assert_eq!(
        second.unwrap(),
        Some(EjectOutcome::Ejected {
            slot: "Cd".into(),
            image: Some(http.url("/live.iso")),
        })
    );
    let actions: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST "))
        .map(|r| r.rsplit('.').next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions,
        ["InsertMedia", "EjectMedia", "InsertMedia", "EjectMedia"]
    );

    assert_eq!(
        eject.unwrap(),
        EjectOutcome::Ejected {
            slot: "Cd".into(),
            image: Some(http.url("/rescue.iso")),
        }
    );
    assert!(!xml_after_eject.contains("rescue-iso"), "{xml_after_eject}");
    assert_eq!(eject_again.unwrap(), EjectOutcome::Empty("Cd".into()));
}

#[tokio::test]
async fn an_image_url_that_404s_fails_with_the_bmc_message() {
    let lab = lab("media404", 1);
    let http = HttpServer::start().unwrap();
    http.add_bytes("/gone.iso", image(1000, 3));
    http.set_fault("/gone.iso", Some(Fault::NotFound));
    let cfg = config(&lab, &one_node(&lab, &lab.endpoint(), None), "metal-1");
    let client = RedfishClient::new(&cfg).unwrap();
    let err = client
        .insert_media(&http.url("/gone.iso"))
        .await
        .unwrap_err();
    let slots = client.media_slots().await.unwrap();
    client.logout().await.unwrap();

    let text = err.to_string();
    assert!(
        matches!(err, BmcError::Status { status: 400, .. }),
        "{text}"
    );
    assert!(
        text.contains("cannot insert the virtual media")
            && text.contains("/Actions/VirtualMedia.InsertMedia answered HTTP 400: Base.1.0.GeneralError: Cannot download virtual media: got error 404 from the server"),
        "{text}"
    );
    assert_eq!(http.served()[0].status, 404);
    assert!(slots.iter().all(|s| !s.is_present()));
}
