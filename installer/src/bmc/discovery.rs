//! Finding things on a BMC by following links, never by building paths:
//! collection members (with `Members@odata.nextLink` paging), the computer
//! system (the inventory's `systemId`, or the only one listed), and the
//! virtual media slots (on the system first, then on the managers in its
//! `Links.ManagedBy`, since Manager VirtualMedia is deprecated but still
//! common).

use std::collections::HashSet;

use serde_json::Value;

use super::BmcError;
use super::client::MediaSlot;
use super::http::Http;

/// Pages followed in one collection before giving up on a looping `nextLink`.
const MAX_PAGES: usize = 1000;

/// The system chosen on a BMC.
#[derive(Debug, Clone)]
pub(super) struct SystemRef {
    /// Its `@odata.id`.
    pub(super) odata_id: String,
}

/// `v[key]["@odata.id"]`: the link a resource gives under `key`.
pub(super) fn link(v: &Value, key: &str) -> Option<String> {
    v.get(key)?
        .get("@odata.id")?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// `v[a][b]...` as a string, when it is one.
pub(super) fn text<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str()
}

/// `v[a][b]...` as a list of strings (empty when absent).
pub(super) fn strings(v: &Value, path: &[&str]) -> Option<Vec<String>> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    Some(
        cur.as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
    )
}

/// The `@odata.id` of every member of the collection at `collection`,
/// following `Members@odata.nextLink` across pages.
pub(super) async fn members(
    http: &Http,
    operation: &'static str,
    collection: &str,
) -> Result<Vec<String>, BmcError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut page = Some(collection.to_string());
    while let Some(path) = page.take() {
        if !seen.insert(path.clone()) || seen.len() > MAX_PAGES {
            return Err(http.protocol(
                operation,
                &format!("the collection {collection} pages in a loop (`Members@odata.nextLink` {path} again)"),
            ));
        }
        let (json, _) = http.get(operation, &path).await?;
        let list = json
            .get("Members")
            .and_then(Value::as_array)
            .ok_or_else(|| http.protocol(operation, &format!("{path} has no `Members` list")))?;
        out.extend(
            list.iter()
                .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
                .map(str::to_string),
        );
        page = json
            .get("Members@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    Ok(out)
}

/// The system to act on: among the members of the service root's
/// `Systems`, the one whose `Id` or `UUID` is `wanted` (its link's last
/// segment is tried first, to avoid reading every member), or the only one.
pub(super) async fn find_system(
    http: &Http,
    operation: &'static str,
    root: &Value,
    wanted: Option<&str>,
) -> Result<SystemRef, BmcError> {
    let systems = link(root, "Systems")
        .ok_or_else(|| http.protocol(operation, "the service root has no `Systems` link"))?;
    let listed = members(http, operation, &systems).await?;
    if listed.is_empty() {
        return Err(BmcError::NoSystem {
            bmc: http.bmc.clone(),
        });
    }
    let Some(wanted) = wanted else {
        if let [only] = listed.as_slice() {
            return Ok(SystemRef {
                odata_id: only.clone(),
            });
        }
        return Err(BmcError::AmbiguousSystem {
            bmc: http.bmc.clone(),
            count: listed.len(),
            available: describe_systems(http, operation, &listed).await?,
        });
    };
    if let Some(hit) = listed.iter().find(|m| last_segment(m) == wanted) {
        return Ok(SystemRef {
            odata_id: hit.clone(),
        });
    }
    for member in &listed {
        let (json, _) = http.get(operation, member).await?;
        let id = text(&json, &["Id"]).unwrap_or("");
        let uuid = text(&json, &["UUID"]).unwrap_or("");
        if id == wanted || (!uuid.is_empty() && uuid.eq_ignore_ascii_case(wanted)) {
            return Ok(SystemRef {
                odata_id: member.clone(),
            });
        }
    }
    Err(BmcError::SystemNotFound {
        bmc: http.bmc.clone(),
        wanted: wanted.to_string(),
        available: describe_systems(http, operation, &listed).await?,
    })
}

/// `Id (Name), ...` of the listed systems, for messages.
async fn describe_systems(
    http: &Http,
    operation: &'static str,
    listed: &[String],
) -> Result<String, BmcError> {
    let mut out = Vec::new();
    for member in listed {
        let (json, _) = http.get(operation, member).await?;
        let id =
            text(&json, &["Id"]).map_or_else(|| last_segment(member).to_string(), str::to_string);
        out.push(match text(&json, &["Name"]) {
            Some(name) if !name.is_empty() && name != id => format!("`{id}` ({name})"),
            _ => format!("`{id}`"),
        });
    }
    Ok(out.join(", "))
}

/// Every virtual media slot of the system: those under its own
/// `VirtualMedia`, or when it has none, those of its managers.
pub(super) async fn media_slots(
    http: &Http,
    operation: &'static str,
    system: &Value,
) -> Result<Vec<MediaSlot>, BmcError> {
    if let Some(collection) = link(system, "VirtualMedia") {
        let slots = read_slots(http, operation, &collection).await?;
        if !slots.is_empty() {
            return Ok(slots);
        }
    }
    let managers: Vec<String> = system
        .get("Links")
        .and_then(|l| l.get("ManagedBy"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| m.get("@odata.id").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let mut slots = Vec::new();
    for manager in managers {
        let (json, _) = http.get(operation, &manager).await?;
        if let Some(collection) = link(&json, "VirtualMedia") {
            slots.extend(read_slots(http, operation, &collection).await?);
        }
    }
    Ok(slots)
}

/// The slot for an installer image: the first whose `MediaTypes` has CD or DVD.
pub(super) fn cd_slot(http: &Http, slots: Vec<MediaSlot>) -> Result<MediaSlot, BmcError> {
    let found = if slots.is_empty() {
        "none".to_string()
    } else {
        slots
            .iter()
            .map(|s| format!("{} [{}]", s.id, s.media_types.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    slots
        .into_iter()
        .find(|s| s.media_types.iter().any(|t| t == "CD" || t == "DVD"))
        .ok_or_else(|| BmcError::NoVirtualMedia {
            bmc: http.bmc.clone(),
            found,
        })
}

async fn read_slots(
    http: &Http,
    operation: &'static str,
    collection: &str,
) -> Result<Vec<MediaSlot>, BmcError> {
    let mut slots = Vec::new();
    for member in members(http, operation, collection).await? {
        let (json, _) = http.get(operation, &member).await?;
        slots.push(MediaSlot::from_json(&member, &json));
    }
    Ok(slots)
}

/// The last non-empty segment of a link: `System.Embedded.1` of
/// `/redfish/v1/Systems/System.Embedded.1/`.
fn last_segment(link: &str) -> &str {
    link.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(link)
}
