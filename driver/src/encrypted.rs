//! Encrypted evaluation runs through the app API (what `fhec eval --mode fhe`, `fhec demo`
//! and the benchmarks do): keys once, then per image the client encrypts, the server
//! classifies the bytes, the client decrypts, and the result is compared with the simulation.
//! The client is made from the artifact's client part only, as a deployed client would be;
//! the server from the full artifact.

use std::path::Path;

use anyhow::{Context, Result, bail};
use fhec_ir::artifact::Artifact;
use fhec_runtime::app::{Client, Server, load_client_part};
use fhec_runtime::dataset::{Dataset, DatasetKind};
use fhec_runtime::sim;

use crate::progress::{size, with_progress};

/// The median of `v` (sorted in place; 0 for none).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// CPU seconds used so far by this process, all threads (user + system, from
/// `/proc/self/stat`; 0 where that file does not exist).
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    // The kernel reports clock ticks, 100 per second on Linux (USER_HZ).
    f.iter().sum::<f64>() / 100.0
}

/// Encrypted evaluation through the app API: keys once, then per image the client encrypts,
/// the server classifies the bytes, the client decrypts; each result is compared with the
/// simulation. The client sees only the artifact's client part (its bytes), the server the
/// full artifact.
pub fn fhe_eval(model: &Path, art: &Artifact, ds: &Dataset, kind: DatasetKind) -> Result<FheRun> {
    fhe_eval_with(model, art, ds, kind, None)
}

/// [`fhe_eval`] with the transform key file of a model trained on transformed images: `ds`
/// holds the original images, which the client transforms with the key before encrypting
/// (the simulation it is compared with takes the same transformed values).
pub fn fhe_eval_with(
    model: &Path,
    art: &Artifact,
    ds: &Dataset,
    kind: DatasetKind,
    transform_key: Option<&Path>,
) -> Result<FheRun> {
    let c = &art.circuit;
    let transform = art.transform().with_context(|| format!("cannot use {}", model.display()))?;
    let tkey = match transform {
        Some(t) => Some(crate::transform::key_for(model, t, transform_key)?),
        None => None,
    };
    let bytes = art.to_bytes();
    let client_part = load_client_part(&bytes).with_context(|| format!("cannot use {}", model.display()))?;
    let t = std::time::Instant::now();
    let mut client = Client::new(&client_part.to_bytes()).with_context(|| format!("cannot use {}", model.display()))?;
    if let Some(k) = tkey {
        client = client.with_transform_key(k);
    }
    let ek = client.evaluation_key();
    let server = Server::new(&bytes, &ek)?;
    let keygen = t.elapsed().as_secs_f64();
    let setup = art.fhe.as_ref().expect("Client::new checked the parameters");
    let approx = c.is_approximate();
    println!(
        "model: {} ({} bootstraps per image), dataset: {} ({} images), mode: fhe",
        model.display(),
        server.bootstraps(),
        kind.dir_name(),
        ds.len(),
    );
    println!(
        "parameters: {}; security {:.0} bits; failure probability per inference <= 2^{:.1}",
        setup.params.summary(),
        setup.security_bits,
        setup.global_p_error.max(1e-300).log2()
    );
    println!("keygen: {keygen:.1} s; evaluation key {}", size(ek.len()));
    // One bootstrap alone, measured before the runs (rayon's threads keep spinning for a
    // moment after a parallel section, which would slow a measurement taken right after).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pbs_s = server.one_bootstrap_seconds(20);
    let round_pbs_s = if setup.params.has_rounding_bsk() { server.one_rounding_bootstrap_seconds(20) } else { pbs_s };
    let (mut te, mut tv, mut td, mut tc) = (vec![], vec![], vec![], vec![]);
    let (mut up, mut down) = (0, 0);
    let mut preds = vec![];
    let mut agree = 0;
    let mut outside = 0;
    let mut correct = 0;
    for i in 0..ds.len() {
        let t0 = std::time::Instant::now();
        let ct = client.encrypt(ds.pixels(i))?;
        let t1 = std::time::Instant::now();
        let cpu0 = process_cpu_seconds();
        let res = with_progress(server.bootstraps(), &format!("image {}/{}", i + 1, ds.len()), |pr| {
            server.classify_with_progress(&ct, pr)
        })?;
        let t2 = std::time::Instant::now();
        tc.push(process_cpu_seconds() - cpu0);
        let pred = client.decrypt(&res)?;
        let t3 = std::time::Instant::now();
        // An image outside the calibrated ranges has no specified result to compare with.
        let values = client.input_values(ds.pixels(i))?;
        let want: Option<Vec<i64>> = match sim::simulate(c, sim::encode_image(c, &values)) {
            Ok(v) => Some(v.iter().copied().collect()),
            Err(e) if e.out_of_range => None,
            Err(e) => return Err(e.into()),
        };
        // Approximate rounding makes the encrypted outputs a noisy function of the image:
        // only the class is compared, with the noise-free simulation's.
        let same = want
            .as_ref()
            .is_none_or(|w| if approx { sim::argmax(&c.output_quant.scores(w)) == pred.class } else { pred.raw == *w });
        outside += want.is_none() as usize;
        agree += (same && want.is_some()) as usize;
        correct += (pred.class == ds.labels[i] as usize) as usize;
        (up, down) = (ct.len(), res.len());
        te.push((t1 - t0).as_secs_f64());
        tv.push((t2 - t1).as_secs_f64());
        td.push((t3 - t2).as_secs_f64());
        println!(
            "image {i}: label {} -> class {} ({}); encrypt {:.3} s, evaluate {:.2} s, decrypt {:.4} s",
            ds.labels[i],
            pred.class,
            match (&want, same) {
                (None, _) => "outside the calibrated ranges: result unspecified",
                (Some(_), true) if approx => "same class as the noise-free simulation",
                (Some(_), false) if approx => "class differs from the noise-free simulation",
                (Some(_), true) => "= simulation",
                (Some(_), false) => "DIFFERS from simulation",
            },
            te[i],
            tv[i],
            td[i]
        );
        preds.push(pred.class);
    }
    println!(
        "agreement with simulation: {agree}/{} ({}){}; encrypted accuracy {correct}/{}",
        ds.len() - outside,
        if approx { "same class; approximate rounding reads may be one step off" } else { "outputs equal" },
        if outside > 0 { format!(", {outside} images outside the calibrated ranges") } else { String::new() },
        ds.len()
    );
    println!(
        "median latency per image: encrypt {:.3} s, evaluate {:.2} s, decrypt {:.4} s; upload {}, download {} per image",
        median(&mut te),
        median(&mut tv),
        median(&mut td),
        size(up),
        size(down)
    );
    // The scheduling efficiency: evaluation time over the ideal of every bootstrap at its
    // single-thread cost spread over all cores.
    let rounding = server.rounding_bootstraps();
    let ideal = ((server.bootstraps() - rounding) as f64 * pbs_s + rounding as f64 * round_pbs_s) / cores as f64;
    let efficiency = median(&mut tv) / ideal;
    let round_note = if setup.params.has_rounding_bsk() {
        format!(", rounding bootstrap {:.1} ms", round_pbs_s * 1e3)
    } else {
        String::new()
    };
    println!(
        "one keyswitch + bootstrap (one thread, median of 20): {:.1} ms{round_note}; scheduling efficiency {:.2} (evaluate / (sum over bootstraps of one of its kind / {cores} cores))",
        pbs_s * 1e3,
        efficiency
    );
    if agree + outside != ds.len() && !approx {
        bail!("{} of {} encrypted results differ from the simulation", ds.len() - outside - agree, ds.len() - outside);
    }
    Ok(FheRun {
        preds,
        agree,
        compared: ds.len() - outside,
        correct,
        keygen_s: keygen,
        eval_key_bytes: ek.len(),
        encrypt_s: median(&mut te),
        evaluate_s: median(&mut tv),
        evaluate_cpu_s: median(&mut tc),
        decrypt_s: median(&mut td),
        upload: up,
        download: down,
        pbs_s,
        round_pbs_s,
        efficiency,
    })
}

/// What an encrypted evaluation measured.
pub struct FheRun {
    /// The predicted class of each image.
    pub preds: Vec<usize>,
    /// Results equal to the simulation (the same class under approximate rounding).
    pub agree: usize,
    /// Images inside the calibrated ranges (the others have no specified result).
    pub compared: usize,
    /// Correct encrypted predictions.
    pub correct: usize,
    /// Key generation, seconds.
    pub keygen_s: f64,
    /// Size of the evaluation key.
    pub eval_key_bytes: usize,
    /// Encryption per image, seconds (median).
    pub encrypt_s: f64,
    /// Evaluation per image, seconds (median, wall).
    pub evaluate_s: f64,
    /// CPU time of the whole process (all threads) during an evaluation (median).
    pub evaluate_cpu_s: f64,
    /// Decryption per image, seconds (median).
    pub decrypt_s: f64,
    /// Bytes of an encrypted image.
    pub upload: usize,
    /// Bytes of an encrypted result.
    pub download: usize,
    /// One keyswitch + bootstrap on one thread (median).
    pub pbs_s: f64,
    /// The same for the rounding bootstrap (`pbs_s` without a rounding key).
    pub round_pbs_s: f64,
    /// Evaluation time / ((main bootstraps × `pbs_s` + rounding ones × `round_pbs_s`) / cores).
    pub efficiency: f64,
}

impl FheRun {
    /// One bootstrap's time, and the rounding bootstrap's when it differs.
    pub fn bootstrap_ms(&self) -> String {
        if self.round_pbs_s == self.pbs_s {
            format!("{:.1} ms", self.pbs_s * 1e3)
        } else {
            format!("{:.1} ms (rounding {:.1} ms)", self.pbs_s * 1e3, self.round_pbs_s * 1e3)
        }
    }
}
