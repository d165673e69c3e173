//! `images pin`: reads a release's checksum file (the manifest entry's
//! `checksums` URL template, in `sha256sum` format) and records the hashes of
//! that version into the manifest file. The file is edited in place as text,
//! so comments, order and every other entry stay as they were; the result is
//! parsed again and checked before it replaces the original.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::manifest::{expand, is_sha256_hex};
use super::{Arch, ArtifactError, ArtifactRef, Manifest, Result, io_err};

/// Fetches the checksum files of `name` at `version` and returns the hash of
/// its file for every architecture the manifest lists.
pub async fn fetch_pins(
    client: &reqwest::Client,
    manifest: &Manifest,
    name: &str,
    version: &str,
    timeout: Duration,
) -> Result<BTreeMap<Arch, String>> {
    let spec = manifest.spec(name)?;
    let Some(template) = &spec.checksums else {
        return Err(ArtifactError::Pin(format!(
            "artifact `{name}` has no `checksums` URL template in {}; add one, or pin by hand",
            manifest.source
        )));
    };
    let mut pins = BTreeMap::new();
    for (&arch, file) in &spec.files {
        let url = expand(
            &template.value,
            &ArtifactRef::new(name, version, arch),
            file,
        );
        let body = fetch_text(client, &url, timeout).await?;
        let hash = parse_sha256sums(&body, file).ok_or_else(|| {
            ArtifactError::Pin(format!(
                "the checksum file {} lists no sha256 for `{file}`",
                super::download::redact_url(&url)
            ))
        })?;
        pins.insert(arch, hash);
    }
    Ok(pins)
}

/// Records `pins` for `name` at `version` in the manifest file at `path`,
/// replacing that version's pins if present. Returns the new manifest.
pub fn write_pins(
    path: &Path,
    name: &str,
    version: &str,
    pins: &BTreeMap<Arch, String>,
) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|source| ArtifactError::ManifestRead {
        path: path.to_path_buf(),
        source,
    })?;
    let new_text = insert_pins(&text, name, version, pins).map_err(|why| {
        ArtifactError::Pin(format!(
            "cannot place the pins in {}: {why}; add them by hand under artifacts.{name}.pins:\n{}",
            path.display(),
            render_block(version, pins, 6, 2)
        ))
    })?;
    let shown = path.display().to_string();
    let manifest = Manifest::parse(&new_text, &shown)?;
    for (&arch, hash) in pins {
        let r = manifest.resolve(&ArtifactRef::new(name, version, arch))?;
        if &r.sha256 != hash {
            return Err(ArtifactError::Pin(format!(
                "the edited {shown} does not read back {name} {version} ({arch}) as {hash}; \
                 it was left unchanged"
            )));
        }
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map_or("manifest".into(), |n| n.to_string_lossy())
    ));
    std::fs::write(&tmp, &new_text).map_err(io_err(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io_err(format!("cannot replace {shown}")))?;
    Ok(manifest)
}

async fn fetch_text(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<String> {
    let shown = super::download::redact_url(url);
    let fail =
        |why: String| ArtifactError::Pin(format!("cannot fetch the checksum file {shown}: {why}"));
    let resp = tokio::time::timeout(timeout, client.get(url).send())
        .await
        .map_err(|_| fail(format!("no response within {timeout:?}")))?
        .map_err(|e| fail(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    tokio::time::timeout(timeout, resp.text())
        .await
        .map_err(|_| fail(format!("no data within {timeout:?}")))?
        .map_err(|e| fail(e.without_url().to_string()))
}

/// The hash of `file` in `sha256sum` output (`<hex>  <name>` or `<hex> *<name>`).
pub fn parse_sha256sums(text: &str, file: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let hash = parts.next()?;
        let name = parts.next()?.trim_start_matches('*');
        let name = name.rsplit('/').next().unwrap_or(name);
        (name == file && is_sha256_hex(&hash.to_ascii_lowercase()))
            .then(|| hash.to_ascii_lowercase())
    })
}

/// Edits manifest text: puts `version`'s pins first under
/// `artifacts.<name>.pins`, replacing an existing block for that version.
fn insert_pins(
    text: &str,
    name: &str,
    version: &str,
    pins: &BTreeMap<Arch, String>,
) -> std::result::Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let blank = |l: &str| l.trim().is_empty() || l.trim_start().starts_with('#');
    let key_is = |l: &str, key: &str| {
        let t = l.trim();
        t == format!("{key}:") || t == format!("\"{key}\":") || t == format!("'{key}':")
    };
    // End (exclusive) of the block opened by the line at `start`.
    let block_end = |start: usize| {
        let base = indent(lines[start]);
        let mut end = start + 1;
        let mut last = start + 1;
        while end < lines.len() {
            if !blank(lines[end]) {
                if indent(lines[end]) <= base {
                    break;
                }
                last = end + 1;
            }
            end += 1;
        }
        last
    };
    let root = lines
        .iter()
        .position(|l| l.trim_end() == "artifacts:")
        .ok_or("no top-level `artifacts:` line")?;
    let root_end = block_end(root);
    let art = (root + 1..root_end)
        .find(|&i| key_is(lines[i], name) && indent(lines[i]) > 0)
        .ok_or_else(|| format!("no `{name}:` entry under `artifacts:`"))?;
    let art_end = block_end(art);
    let field_indent = (art + 1..art_end)
        .find(|&i| !blank(lines[i]))
        .map(|i| indent(lines[i]))
        .ok_or_else(|| format!("the `{name}:` entry is empty"))?;
    let step = field_indent - indent(lines[art]);
    let pins_line =
        (art + 1..art_end).find(|&i| indent(lines[i]) == field_indent && key_is(lines[i], "pins"));

    let mut out: Vec<String> = Vec::new();
    match pins_line {
        None => {
            out.extend(lines[..art_end].iter().map(|l| l.to_string()));
            out.push(format!("{}pins:", " ".repeat(field_indent)));
            out.push(render_block(version, pins, field_indent + step, step));
            out.extend(lines[art_end..].iter().map(|l| l.to_string()));
        }
        Some(p) => {
            let pins_end = block_end(p);
            let version_indent = (p + 1..pins_end)
                .find(|&i| !blank(lines[i]))
                .map_or(field_indent + step, |i| indent(lines[i]));
            if version_indent <= field_indent {
                return Err("`pins:` is not a block mapping".into());
            }
            let existing = (p + 1..pins_end)
                .find(|&i| indent(lines[i]) == version_indent && key_is(lines[i], version));
            let block = render_block(version, pins, version_indent, step);
            match existing {
                Some(v) => {
                    let v_end = block_end(v);
                    out.extend(lines[..v].iter().map(|l| l.to_string()));
                    out.push(block);
                    out.extend(lines[v_end..].iter().map(|l| l.to_string()));
                }
                None => {
                    out.extend(lines[..=p].iter().map(|l| l.to_string()));
                    out.push(block);
                    out.extend(lines[p + 1..].iter().map(|l| l.to_string()));
                }
            }
        }
    }
    let mut s = out.join("\n");
    if text.ends_with('\n') {
        s.push('\n');
    }
    Ok(s)
}

fn render_block(version: &str, pins: &BTreeMap<Arch, String>, at: usize, step: usize) -> String {
    let pad = |n: usize| " ".repeat(n);
    let mut lines = vec![format!("{}{version}:", pad(at))];
    for (arch, hash) in pins {
        lines.push(format!("{}{arch}:", pad(at + step)));
        lines.push(format!("{}sha256: {hash}", pad(at + 2 * step)));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# top comment
artifacts:
  k3s:
    component: k3s
    files: {amd64: k3s, arm64: k3s-arm64}
    urls: [\"http://x/{version}/{file}\"]
    pins:
      # newest first
      v1.0.0+k3s1:
        amd64:
          sha256: 1111111111111111111111111111111111111111111111111111111111111111

  other:
    files: {amd64: o}
    urls: [\"http://x/{file}\"]
";

    fn pins(a: char, b: char) -> BTreeMap<Arch, String> {
        BTreeMap::from([
            (Arch::Amd64, a.to_string().repeat(64)),
            (Arch::Arm64, b.to_string().repeat(64)),
        ])
    }

    #[test]
    fn adds_a_version_and_keeps_the_rest() {
        let out = insert_pins(TEXT, "k3s", "v2.0.0+k3s1", &pins('a', 'b')).unwrap();
        let m = Manifest::parse(&out, "m").unwrap();
        let r = m
            .resolve(&ArtifactRef::new("k3s", "v2.0.0+k3s1", Arch::Arm64))
            .unwrap();
        assert_eq!(r.sha256, "b".repeat(64));
        assert!(
            m.resolve(&ArtifactRef::new("k3s", "v1.0.0+k3s1", Arch::Amd64))
                .is_ok()
        );
        assert!(out.starts_with("# top comment\n") && out.contains("# newest first"));
        assert!(out.contains("  other:\n"));
    }

    #[test]
    fn replaces_an_existing_version() {
        let out = insert_pins(TEXT, "k3s", "v1.0.0+k3s1", &pins('c', 'd')).unwrap();
        assert!(!out.contains(&"1".repeat(64)), "{out}");
        let m = Manifest::parse(&out, "m").unwrap();
        let r = m
            .resolve(&ArtifactRef::new("k3s", "v1.0.0+k3s1", Arch::Amd64))
            .unwrap();
        assert_eq!(r.sha256, "c".repeat(64));
    }

    #[test]
    fn creates_pins_when_absent() {
        let out = insert_pins(
            TEXT,
            "other",
            "v3",
            &BTreeMap::from([(Arch::Amd64, "e".repeat(64))]),
        )
        .unwrap();
        let m = Manifest::parse(&out, "m").unwrap();
        assert!(
            m.resolve(&ArtifactRef::new("other", "v3", Arch::Amd64))
                .is_ok()
        );
    }

    #[test]
    fn reads_sha256sum_lines() {
        let text = format!(
            "{}  k3s\n{} *k3s-airgap-images-amd64.tar.zst\n",
            "a".repeat(64),
            "b".repeat(64)
        );
        assert_eq!(parse_sha256sums(&text, "k3s"), Some("a".repeat(64)));
        assert_eq!(
            parse_sha256sums(&text, "k3s-airgap-images-amd64.tar.zst"),
            Some("b".repeat(64))
        );
        assert_eq!(parse_sha256sums(&text, "k3s-arm64"), None);
    }
}
