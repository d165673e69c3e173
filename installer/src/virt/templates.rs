//! Rendering of templates/libvirt/ for the libvirt backend.
//!
//! NOTE for the lead: this is a minimal private tera setup kept inside virt
//! until `crate::render` lands in this branch; replace `Templates` with the
//! shared renderer then (same template files, same strict undefined
//! variables).

use std::path::Path;

use super::VirtError;

/// The libvirt/*.tera templates, from `--data-dir` or built into the binary.
pub(super) struct Templates {
    tera: tera::Tera,
}

impl Templates {
    /// Loads every template under `libvirt/`.
    pub(super) fn load(data_dir: Option<&Path>) -> Result<Templates, VirtError> {
        let mut tera = tera::Tera::default();
        // Templates are not HTML: nothing is escaped unless a template says so.
        tera.autoescape_on(vec![]);
        let mut files = Vec::new();
        match data_dir {
            Some(dir) => {
                let root = dir.join("templates").join("libvirt");
                let entries = std::fs::read_dir(&root).map_err(|source| VirtError::Io {
                    what: "reading the template directory",
                    path: root.clone(),
                    source,
                })?;
                for entry in entries.flatten() {
                    let path = entry.path();
                    let text = std::fs::read_to_string(&path).map_err(|source| VirtError::Io {
                        what: "reading the template",
                        path: path.clone(),
                        source,
                    })?;
                    let name = format!("libvirt/{}", entry.file_name().to_string_lossy());
                    files.push((name, text));
                }
            }
            None => {
                if let Some(dir) = crate::data::TEMPLATES.get_dir("libvirt") {
                    for file in dir.files() {
                        let name = file.path().to_string_lossy().into_owned();
                        let text = String::from_utf8_lossy(file.contents()).into_owned();
                        files.push((name, text));
                    }
                }
            }
        }
        for (name, text) in &files {
            tera.add_raw_template(name, text)
                .map_err(|e| template_error(name, &e))?;
        }
        Ok(Templates { tera })
    }

    /// Renders `name` with `ctx` (a JSON object); undefined variables are errors.
    pub(super) fn render(&self, name: &str, ctx: &serde_json::Value) -> Result<String, VirtError> {
        let context =
            tera::Context::from_value(ctx.clone()).map_err(|e| template_error(name, &e))?;
        self.tera
            .render(name, &context)
            .map_err(|e| template_error(name, &e))
    }
}

/// Tera's whole error chain in one message (its top line alone rarely names the variable).
fn template_error(name: &str, e: &tera::Error) -> VirtError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    VirtError::Template {
        template: name.to_owned(),
        message,
    }
}
