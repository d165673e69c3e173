//! `Status` failures as the apiserver reports them: HTTP code, `reason`,
//! message and `details` in the shapes client-go and kube-rs decode.

use serde_json::{Value, json};

/// A Kubernetes API failure, carried as a `Status` body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// The HTTP status code (also `code` in the body).
    pub code: u16,
    /// The machine-readable `reason` (`NotFound`, `Conflict`, ...).
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details`, when the reason has them.
    pub details: Option<Value>,
}

/// Who a failure is about: the `details` of a Status.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Subject<'a> {
    /// API group ("" for core).
    pub group: &'a str,
    /// Resource plural (NotFound, AlreadyExists, Conflict, Forbidden) or Kind (Invalid).
    pub kind: &'a str,
    /// Object name ("" when there is none).
    pub name: &'a str,
}

impl<'a> Subject<'a> {
    fn details(&self) -> Value {
        let mut details = json!({ "kind": self.kind });
        if !self.name.is_empty() {
            details["name"] = json!(self.name);
        }
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }

    /// `configmaps "x"` or `deployments.apps "x"`, as messages name objects.
    fn qualified(&self) -> String {
        let resource = if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        };
        if self.name.is_empty() {
            resource
        } else {
            format!("{resource} \"{}\"", self.name)
        }
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404 NotFound for a named object.
    pub(crate) fn not_found(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} not found", subject.qualified()),
            )
        }
    }

    /// 404 NotFound for a path that names no resource.
    pub(crate) fn no_route() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        }
    }

    /// 409 AlreadyExists.
    pub(crate) fn already_exists(subject: Subject<'_>) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{} already exists", subject.qualified()),
            )
        }
    }

    /// 409 Conflict (stale resourceVersion and the like).
    pub(crate) fn conflict(subject: Subject<'_>, why: &str) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}: {why}",
                    subject.qualified()
                ),
            )
        }
    }

    /// 409 Conflict from server-side apply: `causes` lists each conflicting field and its manager.
    pub(crate) fn apply_conflict(conflicts: &[(String, String)]) -> ApiError {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for (manager, field) in conflicts {
            match by_manager.iter_mut().find(|(m, _)| m == manager) {
                Some((_, fields)) => fields.push(field.clone()),
                None => by_manager.push((manager.clone(), vec![field.clone()])),
            }
        }
        let parts: Vec<String> = by_manager
            .iter()
            .map(|(manager, fields)| {
                if fields.len() == 1 {
                    format!("conflict with {manager}: {}", fields[0])
                } else {
                    let list: Vec<String> = fields.iter().map(|f| format!("- {f}")).collect();
                    format!("conflicts with {manager}:\n{}", list.join("\n"))
                }
            })
            .collect();
        let n = conflicts.len();
        let message = format!(
            "Apply failed with {n} conflict{}: {}",
            if n == 1 { "" } else { "s" },
            parts.join("\n")
        );
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {manager}"),
                    "field": field,
                })
            })
            .collect();
        ApiError {
            details: Some(json!({ "causes": causes })),
            ..ApiError::new(409, "Conflict", message)
        }
    }

    /// 422 Invalid with one cause on `field`.
    pub(crate) fn invalid(subject: Subject<'_>, field: &str, value: &Value, why: &str) -> ApiError {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            Value::Null => "null".into(),
            other => other.to_string(),
        };
        let cause = format!("Invalid value: {shown}: {why}");
        ApiError::invalid_causes(
            subject,
            vec![(field.to_string(), "FieldValueInvalid", cause)],
        )
    }

    /// 422 Invalid because a required field is missing.
    pub(crate) fn required(subject: Subject<'_>, field: &str, why: &str) -> ApiError {
        let cause = format!("Required value: {why}");
        ApiError::invalid_causes(
            subject,
            vec![(field.to_string(), "FieldValueRequired", cause)],
        )
    }

    fn invalid_causes(subject: Subject<'_>, causes: Vec<(String, &str, String)>) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|(field, _, message)| format!("{field}: {message}"))
            .collect();
        let mut details = subject.details();
        details["causes"] = causes
            .iter()
            .map(|(field, reason, message)| {
                json!({"reason": reason, "message": message, "field": field})
            })
            .collect();
        let object = if subject.name.is_empty() {
            subject.kind.to_string()
        } else {
            format!("{} \"{}\"", subject.kind, subject.name)
        };
        ApiError {
            details: Some(details),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{object} is invalid: {}", summary.join(", ")),
            )
        }
    }

    /// 400 BadRequest.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub(crate) fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden, with the message built by the authorizer.
    pub(crate) fn forbidden(subject: Subject<'_>, message: String) -> ApiError {
        ApiError {
            details: Some(subject.details()),
            ..ApiError::new(403, "Forbidden", message)
        }
    }

    /// 405 MethodNotAllowed.
    pub(crate) fn method_not_allowed() -> ApiError {
        ApiError {
            details: Some(json!({})),
            ..ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        }
    }

    /// 406 NotAcceptable (an Accept header the emulator cannot serve, e.g. protobuf only).
    pub(crate) fn not_acceptable() -> ApiError {
        ApiError::new(
            406,
            "NotAcceptable",
            "only the following media types are accepted: application/json, application/yaml",
        )
    }

    /// 415 UnsupportedMediaType.
    pub(crate) fn unsupported_media_type(content_type: &str) -> ApiError {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// 410 Gone with reason Expired (a watch or list from a compacted resourceVersion).
    pub(crate) fn expired(requested: u64, oldest: u64) -> ApiError {
        ApiError::new(
            410,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 500 InternalError.
    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            details: Some(
                json!({ "causes": [{ "message": "injected by the emulator's fault hooks" }] }),
            ),
            ..ApiError::new(
                500,
                "InternalError",
                format!("Internal error occurred: {}", message.into()),
            )
        }
    }

    /// 503 ServiceUnavailable.
    pub(crate) fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}
