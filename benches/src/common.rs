//! What every benchmark table shares: the section writer, the machine line, the anchors.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// Replaces the part of `doc` between `<!-- NAME:begin -->` and `<!-- NAME:end -->`
/// (appending the section if absent).
pub fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let (b, e) = (format!("<!-- {name}:begin -->"), format!("<!-- {name}:end -->"));
    match (doc.find(&b), doc.find(&e)) {
        (Some(i), Some(j)) if j > i => format!("{}{b}\n{body}{}", &doc[..i], &doc[j..]),
        _ => format!("{}{}{b}\n{body}{e}\n", doc, if doc.is_empty() || doc.ends_with('\n') { "" } else { "\n" }),
    }
}

/// Writes `body` as section `name` of the markdown file `out`, keeping the rest of the file
/// (a missing file starts as `title`); a file that exists but cannot be read is an error,
/// never replaced.
pub fn save_section(out: &Path, title: &str, name: &str, body: &str) -> Result<()> {
    let doc = match std::fs::read_to_string(out) {
        Ok(doc) => doc,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!("{title}\n\n"),
        Err(e) => return Err(e).with_context(|| format!("cannot read {} (left as it is)", out.display())),
    };
    std::fs::write(out, replace_section(&doc, name, body)).with_context(|| format!("cannot write {}", out.display()))
}

/// The cores and the load average, for every table's header.
pub fn machine_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{} cores, load average {} (1/5/15 min)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.join(" ")
    )
}

/// The CPU model (`/proc/cpuinfo`'s first `model name`).
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Runs an anchor script (`benches/anchors/NAME`) with `python` on `onnx` and the first
/// `images` test images of `dataset` under `data` (plus `extra` arguments) and returns the
/// JSON object it printed on stdout (its progress goes to our stderr).
pub fn run_anchor(
    python: &str,
    script: &str,
    (onnx, data, dataset, images): (&Path, &Path, &str, usize),
    extra: &[&str],
    setup: &str,
) -> Result<serde_json::Value> {
    let script = Path::new("benches/anchors").join(script);
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--onnx")
        .arg(onnx)
        .arg("--data")
        .arg(data)
        .args(["--dataset", dataset, "--images", &images.to_string()])
        .args(extra)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {python} {} (run {setup} first)", script.display()))?;
    if !out.status.success() {
        bail!("the anchor {} failed ({})", script.display(), out.status);
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the anchor {} printed no JSON result", script.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_written_beside_the_rest_and_an_unreadable_file_is_left_alone() {
        let dir = std::env::temp_dir().join(format!("fhec-save-section-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("B.md");
        let _ = std::fs::remove_file(&out);
        save_section(&out, "# t", "a", "one\n").unwrap();
        save_section(&out, "# t", "b", "two\n").unwrap();
        save_section(&out, "# t", "a", "three\n").unwrap();
        let doc = std::fs::read_to_string(&out).unwrap();
        assert_eq!(doc, "# t\n\n<!-- a:begin -->\nthree\n<!-- a:end -->\n<!-- b:begin -->\ntwo\n<!-- b:end -->\n");
        // Not UTF-8: an error that names the file, and the bytes untouched.
        std::fs::write(&out, [0xff, 0xfe, b'x']).unwrap();
        let e = save_section(&out, "# t", "a", "four\n").unwrap_err();
        assert!(format!("{e:#}").contains("cannot read") && format!("{e:#}").contains("B.md"), "{e:#}");
        assert_eq!(std::fs::read(&out).unwrap(), [0xff, 0xfe, b'x']);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
