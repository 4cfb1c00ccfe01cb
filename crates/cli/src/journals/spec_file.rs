//! Reading spec files: the `journals:` document of `docs/specs.md`, as YAML or JSON, from
//! a file or standard input.

use std::path::Path;

use anyhow::{Context, Result, bail};
use folio_protocol::{JournalSpec, SpecsDocument};

/// The validated specs of `file` (`-` reads standard input). A file ending in `.json` is
/// read as JSON, anything else as YAML (of which JSON is a subset). Errors name the file,
/// and the field and line that are wrong.
pub fn read_specs(file: &Path) -> Result<Vec<JournalSpec>> {
    let text = read_text(file)?;
    let is_json = file.extension().is_some_and(|e| e == "json");
    let specs = if is_json {
        SpecsDocument::from_json(&text)
    } else {
        SpecsDocument::from_yaml(&text)
    };
    specs.with_context(|| format!("reading spec file {}", display(file)))
}

/// The text of `file` (`-` reads standard input).
pub(crate) fn read_text(file: &Path) -> Result<String> {
    if file.as_os_str() == "-" {
        return std::io::read_to_string(std::io::stdin()).context("reading standard input");
    }
    if !file.exists() {
        bail!("spec file {} does not exist", file.display());
    }
    std::fs::read_to_string(file).with_context(|| format!("reading spec file {}", file.display()))
}

/// `file` as errors name it.
pub(crate) fn display(file: &Path) -> String {
    if file.as_os_str() == "-" {
        "(standard input)".to_owned()
    } else {
        file.display().to_string()
    }
}
