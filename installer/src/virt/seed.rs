//! The cloud-init NoCloud seed: user-data, meta-data and network-config
//! rendered from templates/libvirt/ into a small FAT image labelled
//! `cidata`, built with mtools (no mount, no root). The backend uploads it
//! as a volume, so it works the same on a remote hypervisor. The bare-metal
//! installer writes the same files into the installed system's seed directory.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

use super::VirtError;
use crate::render::Renderer;

/// What goes into a VM's seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeedSpec {
    /// Guest hostname.
    pub hostname: String,
    /// cloud-init instance id; a new id makes cloud-init run again.
    pub instance_id: String,
    /// The login user created in the guest.
    pub user: String,
    /// OpenSSH public key authorized for `user`.
    pub authorized_key: String,
    /// The guest's ed25519 host key, OpenSSH private key format.
    pub host_key_private: String,
    /// The guest's ed25519 host public key.
    pub host_key_public: String,
    /// The VM's NIC on the isolated cluster network, configured statically.
    pub cluster: Option<super::ClusterNic>,
}

/// The seed's files (name, content) rendered from `templates/libvirt/`:
/// what a NoCloud datasource reads, from a `cidata` volume or a seed directory.
pub fn render_files(
    templates: &Renderer,
    spec: &SeedSpec,
) -> Result<Vec<(&'static str, String)>, crate::render::RenderError> {
    let ctx = serde_json::to_value(spec).unwrap_or_default();
    ["user-data", "meta-data", "network-config"]
        .into_iter()
        .map(|name| {
            Ok((
                name,
                templates.render(&format!("libvirt/{name}.tera"), &ctx)?,
            ))
        })
        .collect()
}

/// Renders the seed files and packs them into a FAT image (kept in a temp
/// file that disappears when dropped).
pub(super) fn build(
    templates: &Renderer,
    spec: &SeedSpec,
) -> Result<tempfile::NamedTempFile, VirtError> {
    let dir = tempfile::tempdir().map_err(|source| VirtError::Io {
        what: "creating a temporary directory in",
        path: std::env::temp_dir(),
        source,
    })?;
    let mut names = Vec::new();
    for (name, text) in render_files(templates, spec)? {
        let path = dir.path().join(name);
        std::fs::write(&path, text).map_err(|source| VirtError::Io {
            what: "writing",
            path: path.clone(),
            source,
        })?;
        names.push(path);
    }
    let image = tempfile::Builder::new()
        .prefix("edgeforge-seed-")
        .suffix(".img")
        .tempfile()
        .map_err(|source| VirtError::Io {
            what: "creating a temporary file in",
            path: std::env::temp_dir(),
            source,
        })?;
    // A 1.44 MB FAT12 image: plenty for three small text files.
    mtool(
        Command::new("mformat")
            .args(["-C", "-f", "1440", "-v", "cidata", "-i"])
            .arg(image.path())
            .arg("::"),
        image.path(),
    )?;
    mtool(
        Command::new("mcopy")
            .arg("-i")
            .arg(image.path())
            .args(&names)
            .arg("::"),
        image.path(),
    )?;
    Ok(image)
}

fn mtool(cmd: &mut Command, image: &Path) -> Result<(), VirtError> {
    // mformat -C refuses to overwrite the (empty) temp file it is given.
    if cmd.get_program() == "mformat" {
        let _ = std::fs::remove_file(image);
    }
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .map_err(|source| VirtError::Io {
            what: "running mtools (apt-get install mtools) for",
            path: image.to_owned(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VirtError::Tool {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_is_a_cidata_fat_image_with_the_rendered_files() {
        let templates = Renderer::new(&crate::data::DataDir::Embedded).expect("templates");
        let spec = SeedSpec {
            hostname: "node-1".into(),
            instance_id: "lab-node-1-abc".into(),
            user: "edgeforge".into(),
            authorized_key: "ssh-ed25519 AAAAC3Nza test".into(),
            host_key_private:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            host_key_public: "ssh-ed25519 AAAAhost".into(),
            cluster: None,
        };
        let image = build(&templates, &spec).expect("seed");
        let label = Command::new("mlabel")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-s")
            .arg("-i")
            .arg(image.path())
            .arg("::")
            .output()
            .expect("mlabel");
        let label = String::from_utf8_lossy(&label.stdout).to_lowercase();
        assert!(label.contains("cidata"), "label: {label}");
        let out = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(image.path())
            .arg("::user-data")
            .output()
            .expect("mtype");
        let user_data = String::from_utf8_lossy(&out.stdout);
        assert!(user_data.starts_with("#cloud-config"), "{user_data}");
        assert!(user_data.contains("hostname: \"node-1\""));
        assert!(user_data.contains("ssh-ed25519 AAAAC3Nza test"));
        assert!(user_data.contains("ed25519_private: \"-----BEGIN OPENSSH PRIVATE KEY-----\\nabc"));
        let out = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(image.path())
            .arg("::meta-data")
            .output()
            .expect("mtype");
        assert!(String::from_utf8_lossy(&out.stdout).contains("instance-id: lab-node-1-abc"));
    }
}
