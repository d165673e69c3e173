//! The artifact manifest (`images/manifest.yaml`): every file the stack
//! places on nodes, by name, version and architecture, with its download
//! URLs and its pinned sha256. Pure: parsing, validation and resolution only.
//!
//! URL templates may use `{version}` (URL-encoded, so `+` becomes `%2B`),
//! `{file}` (the file name for the architecture), `{arch}` and `{name}`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{Arch, ArtifactError, ArtifactRef, Result};
use crate::inventory::Inventory;

/// The parsed manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Versions used when an inventory does not say.
    #[serde(default)]
    pub defaults: ManifestDefaults,
    /// Artifacts by name.
    pub artifacts: BTreeMap<String, ArtifactSpec>,
    /// Where the manifest was read from, for error messages.
    #[serde(skip)]
    pub source: String,
}

/// Default versions of components.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestDefaults {
    /// The k3s release used when the inventory has no `versions.k3s`.
    #[serde(default)]
    pub k3s: Option<Spanned<String>>,
}

/// Which inventory version an artifact follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    /// The artifact's version is the inventory's `versions.k3s`.
    K3s,
}

/// One artifact: how to name, find and check each of its builds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactSpec {
    /// What the file is, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The inventory version this artifact follows; without one it is only
    /// fetched when asked for by name.
    #[serde(default)]
    pub component: Option<Component>,
    /// The release file name for each architecture.
    pub files: BTreeMap<Arch, String>,
    /// URL templates, tried in order.
    pub urls: Vec<Spanned<String>>,
    /// URL template of the release's checksum file (`sha256sum` format), for `images pin`.
    #[serde(default)]
    pub checksums: Option<Spanned<String>>,
    /// Pinned hashes by version, then architecture.
    #[serde(default)]
    pub pins: BTreeMap<String, BTreeMap<Arch, Pin>>,
}

/// The pinned identity of one build.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Lowercase hex sha256 of the file.
    pub sha256: Spanned<String>,
    /// Size in bytes, if known.
    #[serde(default)]
    pub size: Option<u64>,
}

/// Everything needed to fetch and check one artifact build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedArtifact {
    /// Name, version and architecture.
    pub artifact: ArtifactRef,
    /// Release file name (also the name in a mirror directory).
    pub file: String,
    /// Download URLs, tried in order.
    pub urls: Vec<String>,
    /// Pinned lowercase hex sha256.
    pub sha256: String,
    /// Pinned size, if known.
    pub size: Option<u64>,
}

const PLACEHOLDERS: [&str; 4] = ["version", "file", "arch", "name"];

impl Manifest {
    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|source| ArtifactError::ManifestRead {
            path: path.to_path_buf(),
            source,
        })?;
        Manifest::parse(&text, &path.display().to_string())
    }

    /// Parses and validates manifest text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Manifest> {
        let mut manifest: Manifest = serde_saphyr::from_str(text).map_err(|e| {
            let (line, col, message) = yaml_error_parts(&e);
            ArtifactError::ManifestSyntax {
                path: source.to_string(),
                line,
                col,
                message,
            }
        })?;
        manifest.source = source.to_string();
        manifest.validate()?;
        Ok(manifest)
    }

    /// The manifest built into the binary (`images/manifest.yaml` at build time).
    pub fn builtin() -> Result<Manifest> {
        Manifest::from_data(&crate::data::DataDir::Embedded)
    }

    /// The manifest `images/manifest.yaml` of a data directory.
    pub fn from_data(data: &crate::data::DataDir) -> Result<Manifest> {
        let rel = "images/manifest.yaml";
        let text = data
            .read_text(rel)
            .map_err(|e| ArtifactError::ManifestRead {
                path: std::path::PathBuf::from(rel),
                source: std::io::Error::other(e.to_string()),
            })?;
        Manifest::parse(&text, &format!("{rel} in {}", data.describe()))
    }

    /// Looks up the pin of one artifact build and expands its URLs.
    pub fn resolve(&self, artifact: &ArtifactRef) -> Result<ResolvedArtifact> {
        let spec = self.spec(&artifact.name)?;
        let pin = spec
            .pins
            .get(&artifact.version)
            .and_then(|by_arch| by_arch.get(&artifact.arch));
        let (Some(pin), Some(file)) = (pin, spec.files.get(&artifact.arch)) else {
            let known: Vec<&str> = spec
                .pins
                .iter()
                .filter(|(_, by_arch)| by_arch.contains_key(&artifact.arch))
                .map(|(v, _)| v.as_str())
                .collect();
            return Err(ArtifactError::NotPinned {
                artifact: Box::new(artifact.clone()),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        };
        let urls = spec
            .urls
            .iter()
            .map(|t| expand(&t.value, artifact, file))
            .collect();
        Ok(ResolvedArtifact {
            artifact: artifact.clone(),
            file: file.clone(),
            urls,
            sha256: pin.sha256.value.clone(),
            size: pin.size,
        })
    }

    /// What an inventory needs: every artifact that follows a component, at the
    /// inventory's version of it (the manifest default when the inventory has
    /// none), for each architecture asked. `only` restricts to one name; a name
    /// that follows no component is then taken at every pinned version.
    pub fn needs(
        &self,
        inventory: Option<&Inventory>,
        arches: &[Arch],
        only: Option<&str>,
    ) -> Result<Vec<ResolvedArtifact>> {
        if let Some(name) = only {
            self.spec(name)?;
        }
        let mut out = Vec::new();
        for (name, spec) in &self.artifacts {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let versions: Vec<String> = match spec.component {
                Some(Component::K3s) => vec![self.k3s_version(inventory)?],
                None if only.is_some() => spec.pins.keys().cloned().collect(),
                None => continue,
            };
            for version in versions {
                for &arch in arches {
                    out.push(self.resolve(&ArtifactRef::new(name, &version, arch))?);
                }
            }
        }
        Ok(out)
    }

    /// The k3s version an inventory asks for, else the manifest default.
    pub fn k3s_version(&self, inventory: Option<&Inventory>) -> Result<String> {
        if let Some(v) = inventory.and_then(|i| i.versions.k3s.as_ref()) {
            return Ok(v.value.clone());
        }
        match &self.defaults.k3s {
            Some(v) => Ok(v.value.clone()),
            None => Err(ArtifactError::ManifestInvalid {
                path: self.source.clone(),
                line: 0,
                col: 0,
                message: "no k3s version: set `versions.k3s` in the inventory or \
                          `defaults.k3s` in the manifest"
                    .into(),
            }),
        }
    }

    /// The spec of one artifact by name.
    pub fn spec(&self, name: &str) -> Result<&ArtifactSpec> {
        self.artifacts
            .get(name)
            .ok_or_else(|| ArtifactError::UnknownArtifact {
                name: name.to_string(),
                known: self
                    .artifacts
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn validate(&self) -> Result<()> {
        let invalid = |line: u64, col: u64, message: String| ArtifactError::ManifestInvalid {
            path: self.source.clone(),
            line,
            col,
            message,
        };
        if let Some(v) = &self.defaults.k3s {
            let pinned = self.artifacts.values().any(|s| {
                s.component == Some(Component::K3s) && s.pins.contains_key(v.value.as_str())
            });
            if !pinned {
                return Err(invalid(
                    v.referenced.line(),
                    v.referenced.column(),
                    format!("defaults.k3s is `{}`, which no k3s artifact pins", v.value),
                ));
            }
        }
        for (name, spec) in &self.artifacts {
            if spec.urls.is_empty() {
                return Err(invalid(
                    0,
                    0,
                    format!("artifact `{name}` has no urls; give at least one URL template"),
                ));
            }
            for t in spec.urls.iter().chain(&spec.checksums) {
                if let Some(bad) = unknown_placeholder(&t.value) {
                    return Err(invalid(
                        t.referenced.line(),
                        t.referenced.column(),
                        format!(
                            "unknown placeholder `{{{bad}}}` in `{}`; known: {{version}}, {{file}}, {{arch}}, {{name}}",
                            t.value
                        ),
                    ));
                }
            }
            for (version, by_arch) in &spec.pins {
                for (arch, pin) in by_arch {
                    let h = &pin.sha256;
                    if !is_sha256_hex(&h.value) {
                        return Err(invalid(
                            h.referenced.line(),
                            h.referenced.column(),
                            format!(
                                "sha256 of {name} {version} ({arch}) must be 64 lowercase hex digits, not `{}`",
                                h.value
                            ),
                        ));
                    }
                    if !spec.files.contains_key(arch) {
                        return Err(invalid(
                            h.referenced.line(),
                            h.referenced.column(),
                            format!(
                                "{name} {version} pins {arch}, but `files` names no {arch} file"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Expands a URL template for one artifact build.
pub fn expand(template: &str, artifact: &ArtifactRef, file: &str) -> String {
    template
        .replace("{version}", &artifact.version.replace('+', "%2B"))
        .replace("{file}", file)
        .replace("{arch}", artifact.arch.as_str())
        .replace("{name}", &artifact.name)
}

/// Line, column and message of a YAML error, the message without the
/// position it would otherwise repeat.
pub(crate) fn yaml_error_parts(e: &serde_saphyr::Error) -> (u64, u64, String) {
    let (line, col) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let text = e.without_snippet().to_string();
    let suffix = format!(" at line {line}, column {col}");
    let message = text.strip_suffix(&suffix).unwrap_or(&text).to_string();
    (line, col, message)
}

/// Whether `s` is a lowercase hex sha256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn unknown_placeholder(template: &str) -> Option<String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after.find('}')?;
        let name = &after[..end];
        if !PLACEHOLDERS.contains(&name) {
            return Some(name.to_string());
        }
        rest = &after[end + 1..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
defaults:
  k3s: v1.0.0+k3s1
artifacts:
  k3s:
    component: k3s
    files: {amd64: k3s, arm64: k3s-arm64}
    urls: [\"https://example.invalid/{version}/{file}\"]
    pins:
      v1.0.0+k3s1:
        amd64: {sha256: 0000000000000000000000000000000000000000000000000000000000000001}
";

    #[test]
    fn resolves_urls_with_encoded_version() {
        let m = Manifest::parse(GOOD, "m.yaml").unwrap();
        let r = m
            .resolve(&ArtifactRef::new("k3s", "v1.0.0+k3s1", Arch::Amd64))
            .unwrap();
        assert_eq!(r.urls, vec!["https://example.invalid/v1.0.0%2Bk3s1/k3s"]);
        assert_eq!(r.file, "k3s");
    }

    #[test]
    fn unpinned_arch_names_the_pin_command() {
        let m = Manifest::parse(GOOD, "m.yaml").unwrap();
        let err = m
            .resolve(&ArtifactRef::new("k3s", "v1.0.0+k3s1", Arch::Arm64))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("edgeforge images pin k3s v1.0.0+k3s1"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_reports_file_line_col() {
        let text = GOOD.replace(
            "    component: k3s\n",
            "    component: k3s\n    colour: red\n",
        );
        let err = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(err.starts_with("m.yaml:6:5: "), "{err}");
        assert!(err.contains("colour"), "{err}");
        assert!(!err.contains("at line"), "position repeated: {err}");
    }

    #[test]
    fn bad_hash_reports_its_position() {
        let text = GOOD.replace(
            "0000000000000000000000000000000000000000000000000000000000000001",
            "XYZ",
        );
        let err = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(err.starts_with("m.yaml:10:25: "), "{err}");
        assert!(err.contains("64 lowercase hex"), "{err}");
    }

    #[test]
    fn unknown_placeholder_is_refused() {
        let text = GOOD.replace("{file}", "{flie}");
        let err = Manifest::parse(&text, "m.yaml").unwrap_err().to_string();
        assert!(err.contains("{flie}"), "{err}");
        assert!(err.starts_with("m.yaml:7:12: "), "{err}");
    }

    #[test]
    fn builtin_manifest_pins_the_default_k3s_for_both_arches() {
        let m = Manifest::builtin().unwrap();
        let needs = m.needs(None, &Arch::ALL, None).unwrap();
        let names: Vec<_> = needs.iter().map(|r| r.file.as_str()).collect();
        assert!(
            names.contains(&"k3s") && names.contains(&"k3s-arm64"),
            "{names:?}"
        );
        assert!(
            names.contains(&"k3s-airgap-images-amd64.tar.zst")
                && names.contains(&"k3s-airgap-images-arm64.tar.zst"),
            "{names:?}"
        );
    }
}
