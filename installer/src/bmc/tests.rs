//! Layouts sushy-tools does not have, against the in-test server in
//! [`super::fake`]: Dell-style ids and paged collections, Manager
//! VirtualMedia, sessions, ETags with a 412, task monitors, ResetType and
//! boot mode choices, and the BMC's messages in errors. The sushy-tools
//! suites in `tests/tests/redfish_*.rs` are the main evidence.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::fake::{Answer, FakeBmc, Seen};
use super::*;

const PASSWORD: &str = "pw-Sup3r-S3cret";

fn config(url: &str) -> BmcConfig {
    BmcConfig {
        node: "metal-1".into(),
        endpoint: url::Url::parse(url).unwrap(),
        system_id: None,
        username: "admin".into(),
        password: Secret::new(PASSWORD),
        password_source: "environment variable BMC_PW".into(),
        ca_file: None,
        insecure: false,
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            operation: Duration::from_secs(10),
            media_insert: Duration::from_secs(10),
            power_wait: Duration::from_secs(10),
            poll: Duration::from_millis(10),
        },
    }
}

fn root() -> Value {
    json!({"@odata.id": "/redfish/v1", "Systems": {"@odata.id": "/redfish/v1/Systems"}})
}

fn collection(id: &str, members: &[&str], next: Option<&str>) -> Value {
    let mut c = json!({
        "@odata.id": id,
        "Members": members.iter().map(|m| json!({"@odata.id": m})).collect::<Vec<_>>(),
    });
    if let Some(n) = next {
        c["Members@odata.nextLink"] = json!(n);
    }
    c
}

/// A Dell-style system: `System.Embedded.N`, reset action with allowable values.
fn dell_system(n: u32, power: &str, reset_types: &[&str]) -> Value {
    let id = format!("/redfish/v1/Systems/System.Embedded.{n}");
    json!({
        "@odata.id": id,
        "Id": format!("System.Embedded.{n}"),
        "Name": "System",
        "UUID": format!("4c4c4544-0000-0000-0000-00000000000{n}"),
        "Manufacturer": "Dell Inc.",
        "Model": "PowerEdge R650",
        "SerialNumber": format!("SN{n}"),
        "PowerState": power,
        "Boot": {
            "BootSourceOverrideTarget": "None",
            "BootSourceOverrideEnabled": "Disabled",
            "BootSourceOverrideMode": "UEFI",
            "BootSourceOverrideTarget@Redfish.AllowableValues": ["None", "Pxe", "Cd", "Hdd"],
        },
        "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/iDRAC.Embedded.1"}]},
        "Actions": {"#ComputerSystem.Reset": {
            "target": format!("{id}/Actions/ComputerSystem.Reset"),
            "ResetType@Redfish.AllowableValues": reset_types,
        }},
    })
}

fn not_found() -> Answer {
    Answer::json(
        404,
        json!({"error": {"code": "Base.1.8.GeneralError", "message": "not here"}}),
    )
}

fn posts(bmc: &FakeBmc) -> Vec<Seen> {
    bmc.seen()
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect()
}

#[tokio::test]
async fn paged_systems_are_followed_and_system_id_picks_by_id_or_uuid() {
    let bmc = FakeBmc::start(|req| match req.path.as_str() {
        "/redfish/v1/" => Answer::json(200, root()),
        "/redfish/v1/Systems" => Answer::json(
            200,
            collection(
                "/redfish/v1/Systems",
                &["/redfish/v1/Systems/System.Embedded.1"],
                Some("/redfish/v1/Systems?$skip=1"),
            ),
        ),
        "/redfish/v1/Systems?$skip=1" => Answer::json(
            200,
            collection(
                "/redfish/v1/Systems",
                &["/redfish/v1/Systems/System.Embedded.2"],
                None,
            ),
        ),
        "/redfish/v1/Systems/System.Embedded.1" => {
            Answer::json(200, dell_system(1, "Off", &["On", "ForceOff"]))
        }
        "/redfish/v1/Systems/System.Embedded.2" => {
            Answer::json(200, dell_system(2, "Off", &["On", "ForceOff"]))
        }
        _ => not_found(),
    })
    .await;

    let mut cfg = config(&bmc.url());
    cfg.system_id = Some("System.Embedded.2".into());
    let client = RedfishClient::new(&cfg).unwrap();
    assert_eq!(client.login().await.unwrap(), AuthKind::Basic);
    assert_eq!(
        client.system_link().await.unwrap(),
        "/redfish/v1/Systems/System.Embedded.2"
    );

    cfg.system_id = Some("4C4C4544-0000-0000-0000-000000000001".into());
    let client = RedfishClient::new(&cfg).unwrap();
    assert_eq!(
        client.system_link().await.unwrap(),
        "/redfish/v1/Systems/System.Embedded.1"
    );

    cfg.system_id = None;
    let err = RedfishClient::new(&cfg)
        .unwrap()
        .login()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "lists 2 systems (`System.Embedded.1` (System), `System.Embedded.2` (System))"
        ) && err.contains("set `systemId`"),
        "{err}"
    );

    cfg.system_id = Some("System.Embedded.9".into());
    let err = RedfishClient::new(&cfg)
        .unwrap()
        .login()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no system has `Id` or `UUID` `System.Embedded.9`")
            && err.contains("`System.Embedded.2`"),
        "{err}"
    );
    // Every path requested came from a link (or is the service root).
    for line in bmc.lines() {
        assert!(
            [
                "GET /redfish/v1/",
                "GET /redfish/v1/Systems",
                "GET /redfish/v1/Systems?$skip=1",
                "GET /redfish/v1/Systems/System.Embedded.1",
                "GET /redfish/v1/Systems/System.Embedded.2",
            ]
            .contains(&line.as_str()),
            "{line}"
        );
    }
}

#[tokio::test]
async fn manager_virtual_media_is_found_through_managed_by_and_the_cd_slot_chosen() {
    let inserted = Arc::new(AtomicUsize::new(0));
    let flag = inserted.clone();
    let bmc = FakeBmc::start(move |req| {
        let cd_state = if flag.load(Ordering::SeqCst) > 0 {
            json!({"Inserted": true, "Image": "http://10.0.0.1/live.iso"})
        } else {
            json!({"Inserted": false, "Image": null})
        };
        match (req.method.as_str(), req.path.as_str()) {
            (_, "/redfish/v1/") => Answer::json(200, root()),
            (_, "/redfish/v1/Systems") => Answer::json(
                200,
                collection(
                    "/redfish/v1/Systems",
                    &["/redfish/v1/Systems/System.Embedded.1"],
                    None,
                ),
            ),
            (_, "/redfish/v1/Systems/System.Embedded.1") => {
                Answer::json(200, dell_system(1, "On", &["On", "ForceOff"]))
            }
            (_, "/redfish/v1/Managers/iDRAC.Embedded.1") => Answer::json(
                200,
                json!({"Id": "iDRAC.Embedded.1",
                       "VirtualMedia": {"@odata.id": "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia"}}),
            ),
            (_, "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia") => Answer::json(
                200,
                collection(
                    "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia",
                    &[
                        "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/RemovableDisk",
                        "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD",
                    ],
                    None,
                ),
            ),
            (_, "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/RemovableDisk") => {
                Answer::json(
                    200,
                    json!({"Id": "RemovableDisk", "MediaTypes": ["USBStick"], "Inserted": false}),
                )
            }
            ("GET", "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD") => {
                let mut slot = json!({
                    "Id": "CD", "Name": "Virtual CD", "MediaTypes": ["CD", "DVD"],
                    "Actions": {
                        "#VirtualMedia.InsertMedia": {"target": "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia"},
                        "#VirtualMedia.EjectMedia": {"target": "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD/Actions/VirtualMedia.EjectMedia"},
                    },
                });
                slot["Inserted"] = cd_state["Inserted"].clone();
                slot["Image"] = cd_state["Image"].clone();
                Answer::json(200, slot)
            }
            (
                "POST",
                "/redfish/v1/Managers/iDRAC.Embedded.1/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia",
            ) => {
                flag.fetch_add(1, Ordering::SeqCst);
                Answer::empty(204)
            }
            _ => not_found(),
        }
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    let slots = client.media_slots().await.unwrap();
    let ids: Vec<&str> = slots.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["RemovableDisk", "CD"]);

    let ejected = client
        .insert_media("http://10.0.0.1/live.iso")
        .await
        .unwrap();
    assert_eq!(ejected, None, "the slot was empty: nothing to eject");
    assert_eq!(inserted.load(Ordering::SeqCst), 1);
    let post = &posts(&bmc)[0];
    assert!(
        post.path
            .ends_with("/VirtualMedia/CD/Actions/VirtualMedia.InsertMedia")
    );
    assert_eq!(
        post.json(),
        json!({"Image": "http://10.0.0.1/live.iso", "Inserted": true, "WriteProtected": true})
    );
    assert_eq!(post.header("if-match"), None, "never If-Match on actions");
}

#[tokio::test]
async fn a_session_is_opened_used_and_deleted_on_logout_even_after_an_error() {
    let bmc = FakeBmc::start(|req| {
        let authed = req.header("x-auth-token") == Some("tok-123");
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/redfish/v1/") => Answer::json(
                200,
                json!({"Systems": {"@odata.id": "/redfish/v1/Systems"},
                       "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
                       "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}}}),
            ),
            ("POST", "/redfish/v1/SessionService/Sessions") => {
                let body = req.json();
                if body["UserName"] == "admin" && body["Password"] == PASSWORD {
                    Answer::json(201, json!({"Id": "7"}))
                        .with("X-Auth-Token", "tok-123")
                        .with("Location", "/redfish/v1/SessionService/Sessions/7")
                } else {
                    Answer::json(401, json!({}))
                }
            }
            _ if !authed => Answer::json(401, json!({})),
            ("GET", "/redfish/v1/Systems") => Answer::json(
                200,
                collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
            ),
            ("GET", "/redfish/v1/Systems/1") => {
                let mut s = dell_system(1, "Off", &["On", "ForceOff"]);
                s["Actions"]["#ComputerSystem.Reset"]["target"] =
                    json!("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
                Answer::json(200, s)
            }
            ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => Answer::json(
                409,
                json!({"error": {"code": "Base.1.8.GeneralError", "message": "see ExtendedInfo",
                    "@Message.ExtendedInfo": [{"MessageId": "IDRAC.2.8.PSU501", "Message": "Unable to power on: the PSU is missing."}]}}),
            ),
            ("DELETE", "/redfish/v1/SessionService/Sessions/7") => Answer::empty(204),
            _ => not_found(),
        }
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    assert_eq!(client.login().await.unwrap(), AuthKind::Session);
    let err = client.power_on().await.unwrap_err().to_string();
    assert!(
        err.contains("IDRAC.2.8.PSU501: Unable to power on: the PSU is missing.")
            && err.contains("HTTP 409")
            && err.contains("power on"),
        "{err}"
    );
    client.logout().await.unwrap();
    assert_eq!(client.auth(), AuthKind::Basic);
    let seen = bmc.seen();
    let delete = seen.last().unwrap();
    assert_eq!(
        (delete.method.as_str(), delete.path.as_str()),
        ("DELETE", "/redfish/v1/SessionService/Sessions/7")
    );
    assert_eq!(delete.header("x-auth-token"), Some("tok-123"));
    // Only the session request carries the password, and no request after
    // it uses Basic auth.
    for s in &seen[2..] {
        assert_eq!(s.header("authorization"), None, "{} {}", s.method, s.path);
        assert!(!s.body.contains(PASSWORD));
    }
}

#[tokio::test]
async fn a_patch_carries_if_match_and_a_412_refreshes_the_etag_once() {
    let version = Arc::new(AtomicUsize::new(1));
    let v = version.clone();
    let bmc = FakeBmc::start(move |req| {
        let current = v.load(Ordering::SeqCst);
        match (req.method.as_str(), req.path.as_str()) {
            (_, "/redfish/v1/") => Answer::json(200, root()),
            (_, "/redfish/v1/Systems") => Answer::json(
                200,
                collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
            ),
            ("GET", "/redfish/v1/Systems/1") => {
                let mut s = dell_system(1, "Off", &["On", "ForceOff"]);
                if current >= 3 {
                    s["Boot"]["BootSourceOverrideTarget"] = json!("Pxe");
                    s["Boot"]["BootSourceOverrideEnabled"] = json!("Once");
                }
                // Someone else changes the system between our GET and PATCH.
                if current == 1 {
                    v.store(2, Ordering::SeqCst);
                }
                Answer::json(200, s).with("ETag", &format!("W/\"{}\"", current.min(2)))
            }
            ("PATCH", "/redfish/v1/Systems/1") => {
                if req.header("if-match") == Some("W/\"2\"") {
                    v.store(3, Ordering::SeqCst);
                    Answer::empty(204)
                } else {
                    Answer::json(412, json!({}))
                }
            }
            _ => not_found(),
        }
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    let got = client.boot_once(BootTarget::Pxe, None).await.unwrap();
    assert_eq!(got.target.as_deref(), Some("Pxe"));
    let patches: Vec<Seen> = bmc
        .seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .collect();
    let tags: Vec<Option<&str>> = patches.iter().map(|p| p.header("if-match")).collect();
    assert_eq!(tags, [Some("W/\"1\""), Some("W/\"2\"")]);
    assert_eq!(
        patches[0].json(),
        json!({"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Once"}})
    );
}

#[tokio::test]
async fn a_202_task_monitor_is_followed_honouring_retry_after() {
    let polls = Arc::new(AtomicUsize::new(0));
    let p = polls.clone();
    let on = Arc::new(AtomicUsize::new(0));
    let o = on.clone();
    let bmc = FakeBmc::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        (_, "/redfish/v1/") => Answer::json(200, root()),
        (_, "/redfish/v1/Systems") => Answer::json(
            200,
            collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
        ),
        ("GET", "/redfish/v1/Systems/1") => {
            let power = if o.load(Ordering::SeqCst) > 0 {
                "On"
            } else {
                "Off"
            };
            let mut s = dell_system(1, power, &["On", "ForceOff"]);
            s["Actions"]["#ComputerSystem.Reset"]["target"] =
                json!("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
            Answer::json(200, s)
        }
        ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
            Answer::json(202, json!({"TaskState": "New"}))
                .with("Location", "/redfish/v1/TaskService/TaskMonitors/9")
                .with("Retry-After", "0")
        }
        ("GET", "/redfish/v1/TaskService/TaskMonitors/9") => {
            if p.fetch_add(1, Ordering::SeqCst) < 2 {
                Answer::json(202, json!({"TaskState": "Running"})).with("Retry-After", "0")
            } else {
                o.store(1, Ordering::SeqCst);
                Answer::json(200, json!({"TaskState": "Completed", "TaskStatus": "OK"}))
            }
        }
        _ => not_found(),
    })
    .await;
    let mut cfg = config(&bmc.url());
    // Without Retry-After the client would wait an hour between polls and
    // the operation limit would end the test with an error.
    cfg.timeouts.poll = Duration::from_secs(3600);
    cfg.timeouts.operation = Duration::from_secs(20);
    let client = RedfishClient::new(&cfg).unwrap();
    let change = client.power_on().await.unwrap();
    assert!(
        matches!(
            change,
            PowerChange::Changed {
                reset_type: "On",
                from: PowerState::Off,
                to: PowerState::On,
                ..
            }
        ),
        "{change:?}"
    );
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failed_task_reports_its_messages() {
    let bmc = FakeBmc::start(|req| match (req.method.as_str(), req.path.as_str()) {
        (_, "/redfish/v1/") => Answer::json(200, root()),
        (_, "/redfish/v1/Systems") => Answer::json(
            200,
            collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
        ),
        ("GET", "/redfish/v1/Systems/1") => {
            let mut s = dell_system(1, "On", &["ForceOff"]);
            s["Actions"]["#ComputerSystem.Reset"]["target"] =
                json!("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
            Answer::json(200, s)
        }
        ("POST", _) => Answer::empty(202).with("Location", "/redfish/v1/TaskService/Tasks/4"),
        ("GET", "/redfish/v1/TaskService/Tasks/4") => Answer::json(
            200,
            json!({"TaskState": "Exception", "TaskStatus": "Critical",
                   "Messages": [{"MessageId": "Base.1.8.InternalError", "Message": "The power controller did not respond."}]}),
        ),
        _ => not_found(),
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    let err = client.power_off().await.unwrap_err().to_string();
    assert!(
        err.contains("task ended Exception (Critical): Base.1.8.InternalError: The power controller did not respond."),
        "{err}"
    );
}

#[tokio::test]
async fn reset_types_come_from_the_allowable_values_and_no_action_when_already_there() {
    let power = Arc::new(std::sync::Mutex::new("On".to_string()));
    let state = power.clone();
    let bmc = FakeBmc::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        (_, "/redfish/v1/") => Answer::json(200, root()),
        (_, "/redfish/v1/Systems") => Answer::json(
            200,
            collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
        ),
        ("GET", "/redfish/v1/Systems/1") => {
            let now = state.lock().unwrap().clone();
            let mut s = dell_system(1, &now, &["GracefulShutdown", "GracefulRestart", "ForceOn"]);
            s["Actions"]["#ComputerSystem.Reset"]["target"] =
                json!("/redfish/v1/Systems/1/Actions/ComputerSystem.Reset");
            Answer::json(200, s)
        }
        ("POST", "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset") => {
            let next = match req.json()["ResetType"].as_str() {
                Some("GracefulShutdown") => "Off",
                _ => "On",
            };
            *state.lock().unwrap() = next.to_string();
            Answer::empty(204)
        }
        _ => not_found(),
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    assert_eq!(
        client.power_on().await.unwrap(),
        PowerChange::Unchanged(PowerState::On)
    );
    assert!(posts(&bmc).is_empty(), "already On: no action sent");
    assert!(matches!(
        client.power_off().await.unwrap(),
        PowerChange::Changed {
            reset_type: "GracefulShutdown",
            ..
        }
    ));
    assert!(matches!(
        client.power_on().await.unwrap(),
        PowerChange::Changed {
            reset_type: "ForceOn",
            ..
        }
    ));
    let sent: Vec<String> = posts(&bmc)
        .iter()
        .map(|p| p.json()["ResetType"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(sent, ["GracefulShutdown", "ForceOn"]);
}

/// A system whose Boot advertises `modes` (or nothing), PATCHes recorded.
async fn boot_bmc(modes: Option<Vec<&'static str>>) -> FakeBmc {
    FakeBmc::start(move |req| match (req.method.as_str(), req.path.as_str()) {
        (_, "/redfish/v1/") => Answer::json(200, root()),
        (_, "/redfish/v1/Systems") => Answer::json(
            200,
            collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
        ),
        ("GET", "/redfish/v1/Systems/1") => {
            let mut s = dell_system(1, "Off", &["On", "ForceOff"]);
            s["Boot"]["BootSourceOverrideTarget"] = json!("Cd");
            s["Boot"]["BootSourceOverrideEnabled"] = json!("Once");
            if let Some(m) = &modes {
                s["Boot"]["BootSourceOverrideMode@Redfish.AllowableValues"] = json!(m);
            }
            Answer::json(200, s)
        }
        ("PATCH", "/redfish/v1/Systems/1") => Answer::empty(204),
        _ => not_found(),
    })
    .await
}

fn patches(bmc: &FakeBmc) -> Vec<Value> {
    bmc.seen()
        .into_iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| s.json())
        .collect()
}

#[tokio::test]
async fn a_boot_mode_is_sent_only_when_advertised() {
    let bmc = boot_bmc(Some(vec!["UEFI"])).await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    let err = client
        .boot_once(BootTarget::Cd, Some(BootMode::Legacy))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("boot mode `Legacy` is not offered by the BMC; it allows UEFI"),
        "{err}"
    );
    assert!(patches(&bmc).is_empty(), "refused before sending anything");
    client
        .boot_once(BootTarget::Cd, Some(BootMode::Uefi))
        .await
        .unwrap();
    assert_eq!(
        patches(&bmc)[0]["Boot"]["BootSourceOverrideMode"],
        json!("UEFI")
    );
    let err = client
        .boot_once(BootTarget::Pxe, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "accepted the request to set the boot override but reads back Cd (Once, mode UEFI)"
        ),
        "{err}"
    );

    // Not advertised: the current mode is fine (and not sent), another is refused.
    let bmc = boot_bmc(None).await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    client
        .boot_once(BootTarget::Cd, Some(BootMode::Uefi))
        .await
        .unwrap();
    assert_eq!(patches(&bmc)[0]["Boot"].get("BootSourceOverrideMode"), None);
    let err = client
        .boot_once(BootTarget::Cd, Some(BootMode::Legacy))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("it advertises no `BootSourceOverrideMode@Redfish.AllowableValues` and its current mode is UEFI"),
        "{err}"
    );
    let err = client
        .boot_once(BootTarget::Pxe, None)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, BmcError::NotApplied { .. }), "{err}");
}

#[tokio::test]
async fn a_rejected_patch_shows_the_bmc_message_ids() {
    let bmc = FakeBmc::start(|req| match (req.method.as_str(), req.path.as_str()) {
        (_, "/redfish/v1/") => Answer::json(200, root()),
        (_, "/redfish/v1/Systems") => Answer::json(
            200,
            collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
        ),
        ("GET", "/redfish/v1/Systems/1") => Answer::json(200, dell_system(1, "Off", &["On"])),
        ("PATCH", _) => Answer::json(
            400,
            json!({"error": {"code": "Base.1.8.GeneralError", "message": "A general error has occurred.",
                "@Message.ExtendedInfo": [
                    {"MessageId": "Base.1.8.PropertyValueNotInList", "Message": "The value Hdd for the property BootSourceOverrideTarget is not in the list of acceptable values."},
                    {"MessageId": "IDRAC.2.8.SYS403", "Message": "Unable to complete the operation."}]}}),
        ),
        _ => not_found(),
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    let err = client
        .boot_once(BootTarget::Hdd, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("PATCH /redfish/v1/Systems/1 answered HTTP 400: Base.1.8.PropertyValueNotInList: The value Hdd for the property BootSourceOverrideTarget is not in the list of acceptable values.; IDRAC.2.8.SYS403: Unable to complete the operation."),
        "{err}"
    );
}

#[tokio::test]
async fn wrong_credentials_name_the_reference_never_the_password() {
    let bmc = FakeBmc::start(|req| match req.path.as_str() {
        "/redfish/v1/" => Answer::json(200, root()),
        _ => Answer::json(401, json!({"error": {"message": "Unauthorized"}})),
    })
    .await;
    let cfg = config(&bmc.url());
    assert!(!format!("{cfg:?}").contains(PASSWORD));
    let err = RedfishClient::new(&cfg)
        .unwrap()
        .login()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the BMC of node `metal-1` (http://127.0.0.1:")
            && err.contains("refused the credentials of user `admin` (HTTP 401)")
            && err.contains(
                "check `username` and the password reference (environment variable BMC_PW)"
            ),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");
}

#[tokio::test]
async fn a_link_that_leaves_the_bmc_is_not_followed() {
    let bmc = FakeBmc::start(|req| match req.path.as_str() {
        "/redfish/v1/" => Answer::json(
            200,
            json!({"Systems": {"@odata.id": "http://192.0.2.1/redfish/v1/Systems"}}),
        ),
        _ => not_found(),
    })
    .await;
    let err = RedfishClient::new(&config(&bmc.url()))
        .unwrap()
        .login()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("leads away from the BMC (http://192.0.2.1)"),
        "{err}"
    );
    assert_eq!(bmc.lines(), ["GET /redfish/v1/"]);
}

#[tokio::test]
async fn a_bmc_that_never_answers_hits_the_operation_limit() {
    let bmc = FakeBmc::start(|_| Answer::Hang).await;
    let mut cfg = config(&bmc.url());
    cfg.timeouts.operation = Duration::from_millis(300);
    let err = RedfishClient::new(&cfg)
        .unwrap()
        .power_state()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the BMC of node `metal-1`")
            && err.contains("gave up trying to read the power state after 0.3 s"),
        "{err}"
    );
}

#[test]
fn machine_settings_become_a_config_with_the_password_read() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let machine = |endpoint: &str, password: SecretRef| Machine::Redfish {
        endpoint: endpoint.into(),
        system_id: Some("1".into()),
        username: "root".into(),
        password,
        ca_file: None,
        insecure: true,
        install: None,
    };
    let cfg = BmcConfig::from_machine(
        "n1",
        &machine("https://10.0.0.9:8443", SecretRef::File(pw.clone())),
    )
    .unwrap()
    .unwrap();
    assert_eq!(cfg.password.expose(), PASSWORD);
    assert!(cfg.insecure);
    assert_eq!(cfg.label(), "the BMC of node `n1` (https://10.0.0.9:8443)");
    assert_eq!(cfg.password_source, format!("file {}", pw.display()));

    let err = BmcConfig::from_machine(
        "n1",
        &machine("https://root:x@10.0.0.9", SecretRef::File(pw)),
    )
    .unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("carries credentials"),
        "{err}"
    );
    let err = BmcConfig::from_machine(
        "n1",
        &machine(
            "https://10.0.0.9",
            SecretRef::Env("EF_TEST_BMC_PW_UNSET".into()),
        ),
    )
    .unwrap_err();
    assert!(err.is_input_error());
    assert!(format!("{:#}", anyhow::Error::from(err)).contains("EF_TEST_BMC_PW_UNSET is not set"),);
    assert!(
        BmcConfig::from_machine("n1", &Machine::Existing)
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn retried_5xx_answers_recover_and_a_ca_file_without_certificates_is_refused() {
    let failures = Arc::new(AtomicUsize::new(0));
    let f = failures.clone();
    let bmc = FakeBmc::start(move |req| {
        if f.fetch_add(1, Ordering::SeqCst) < 2 {
            return Answer::json(503, json!({})).with("Retry-After", "0");
        }
        match req.path.as_str() {
            "/redfish/v1/" => Answer::json(200, root()),
            "/redfish/v1/Systems" => Answer::json(
                200,
                collection("/redfish/v1/Systems", &["/redfish/v1/Systems/1"], None),
            ),
            _ => Answer::json(200, dell_system(1, "Paused", &[])),
        }
    })
    .await;
    let client = RedfishClient::new(&config(&bmc.url())).unwrap();
    assert_eq!(client.power_state().await.unwrap(), PowerState::Paused);
    assert_eq!(bmc.lines()[..3], ["GET /redfish/v1/"; 3]);

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let mut cfg = config("https://127.0.0.1:1");
    cfg.ca_file = Some(ca);
    let err = RedfishClient::new(&cfg).map(|_| ()).unwrap_err();
    assert!(
        matches!(err, BmcError::CaPem { .. }) && err.is_input_error(),
        "{err}"
    );
}
