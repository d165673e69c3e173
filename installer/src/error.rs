//! The program's errors gathered in one type, and how an error is shown.
//!
//! Each module has its own thiserror enum; [`Error`] gathers the ones a
//! command can end with and says which exit code each means
//! ([`Error::exit_code`]): 2 for input the user can fix (inventory, playbook,
//! arguments), 1 for what failed while running. [`chain`] prints an error with
//! its sources, each link saying only its own part.

/// Any error a command of the library ends with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The inventory, a playbook or an argument is invalid (already phrased, with where).
    #[error("{0}")]
    Invalid(String),
    /// The inventory could not be read or is invalid.
    #[error(transparent)]
    Inventory(#[from] crate::inventory::LoadError),
    /// The plan could not be built.
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// A playbook is malformed.
    #[error(transparent)]
    Playbook(#[from] crate::playbook::PlaybookError),
    /// A template or expression does not compile.
    #[error(transparent)]
    Render(#[from] crate::render::RenderError),
    /// A data file could not be read.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// The executor could not run.
    #[error(transparent)]
    Exec(#[from] crate::exec::ExecError),
    /// libvirt failed.
    #[error(transparent)]
    Virt(#[from] crate::virt::VirtError),
    /// The lab could not be set up.
    #[error(transparent)]
    Lab(#[from] crate::virt::lab::LabError),
    /// The base image could not be built.
    #[error(transparent)]
    BaseImage(#[from] crate::virt::baseimage::BaseImageError),
    /// An artifact could not be resolved, fetched or verified.
    #[error(transparent)]
    Artifact(#[from] crate::artifacts::ArtifactError),
    /// A secret reference could not be read.
    #[error(transparent)]
    Secret(#[from] crate::transport::TargetError),
    /// A Kubernetes API could not be reached from its kubeconfig.
    #[error(transparent)]
    Kube(#[from] crate::kube::KubeError),
    /// A federation command failed.
    #[error(transparent)]
    Federation(Box<crate::federation::FederationError>),
    /// A local file operation failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: String,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code this error means: 2 invalid input, 1 a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid(_)
            | Error::Plan(_)
            | Error::Playbook(_)
            | Error::Render(_)
            | Error::Secret(_) => 2,
            Error::Inventory(crate::inventory::LoadError::Invalid(_)) => 2,
            Error::Lab(crate::virt::lab::LabError::Invalid(_)) => 2,
            Error::Kube(
                crate::kube::KubeError::Config { .. } | crate::kube::KubeError::Insecure { .. },
            ) => 2,
            Error::Federation(e) => e.exit_code(),
            Error::Artifact(e) => {
                use crate::artifacts::ArtifactError as A;
                match e {
                    A::ManifestSyntax { .. }
                    | A::ManifestInvalid { .. }
                    | A::ManifestRead { .. }
                    | A::NotPinned { .. }
                    | A::UnknownArtifact { .. } => 2,
                    _ => 1,
                }
            }
            Error::Exec(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// An error and its sources, joined with ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Some errors repeat their source's text in their own; say it once.
        if parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Boxed: the federation errors carry the API's URL, kubeconfig and call.
impl From<crate::federation::FederationError> for Error {
    fn from(e: crate::federation::FederationError) -> Self {
        Error::Federation(Box::new(e))
    }
}
