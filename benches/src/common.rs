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
