//! Attacks on the keyed image transforms (`fhec_ir::transform`), after arXiv 2004.13263
//! ("Attacks on Image Encryption Schemes for Privacy-Preserving Deep Neural Networks") and
//! its follow-ups: each takes what an attacker has and gives back `h x w` 8-bit images.
//!
//! * **Known plaintext** ([`known_plaintext_plan`]): a few plain/transformed pairs under the
//!   key. The attacker finds, for every output unit (an EtC tile, a Tanaka sub-pixel
//!   position, an SKK pixel), the source unit and orientation/negation that agree best with
//!   the pairs, makes the sources a permutation (Hungarian assignment), and inverts every
//!   other transformed image with the recovered [`Plan`].
//! * **Ciphertext only** ([`ciphertext_only_plan`]): many transformed images under one key
//!   (a server sees every query) and public statistics of the data (the histogram of every
//!   pixel of the plain training set, [`Histograms`]). The same matching, with the histogram
//!   of each output value across the transformed images as the evidence: a negated value's
//!   histogram is reversed (the data are mostly dark, so that shows), and the histograms of
//!   different positions differ (the sources and orientations). These are per-value
//!   statistics, so EtC tiles whose histograms the data make alike (MNIST's centred digits,
//!   nearly symmetric under a half turn about the centre) can be swapped or turned;
//!   [`etc_jigsaw_refine`] then solves EtC as a jigsaw puzzle (follow-up work): local search
//!   on the statistics plus the continuity of the pixels across tile edges.
//! * **Key-free, per image** ([`feature`]): what one transformed image shows with no key and
//!   no other image: EtC tiles un-negated by their majority value but left where they are,
//!   Tanaka tiles at their mean un-negated intensity (tiles are not moved by Tanaka), SKK's
//!   `255 - |2p - 255|` (a pixel and its negation give the same value, so the edges show).

use fhec_ir::transform::{Plan, Transform};

/// `(output index, source index, negated)` of every value a candidate maps.
type Links = Vec<(usize, usize, bool)>;

/// Tanaka's split of an image: channel 0 the upper 4 bits, channel 1 the lower 4 (what the
/// transform permutes; `fhec_ir::transform`'s own split is private).
pub fn split(image: &[u8]) -> Vec<u8> {
    image.iter().map(|p| p >> 4).chain(image.iter().map(|p| p & 15)).collect()
}

/// The values a scheme permutes for an image: the pixels, or Tanaka's split.
pub fn source_values(t: Transform, image: &[u8]) -> Vec<u8> {
    match t {
        Transform::Tanaka { .. } => split(image),
        Transform::Etc { .. } | Transform::Skk => image.to_vec(),
    }
}

/// The image whose transform under `plan` is `values` (for a plan whose `src` is a
/// permutation): the inverse map, with Tanaka's sub-pixels merged back into pixels.
pub fn invert_with(t: Transform, plan: &Plan, values: &[u8]) -> Vec<u8> {
    let mut source = vec![0u8; values.len()];
    for ((&s, &n), &v) in plan.src.iter().zip(&plan.negate).zip(values) {
        let v = v.min(plan.max);
        source[s as usize] = if n { plan.max - v } else { v };
    }
    match t {
        Transform::Tanaka { .. } => {
            let (hi, lo) = source.split_at(source.len() / 2);
            hi.iter().zip(lo).map(|(h, l)| (h << 4) | l).collect()
        }
        Transform::Etc { .. } | Transform::Skk => source,
    }
}

/// Share of output values whose source and negation a recovered plan gets right.
pub fn plan_agreement(found: &Plan, truth: &Plan) -> f64 {
    let same =
        (found.src.iter().zip(&found.negate)).zip(truth.src.iter().zip(&truth.negate)).filter(|(a, b)| a == b).count();
    same as f64 / truth.src.len().max(1) as f64
}

/// A transformed image as a picture: the values themselves, Tanaka's output channel 0
/// widened to 8 bits (`17·v`).
pub fn as_image(t: Transform, values: &[u8]) -> Vec<u8> {
    match t {
        Transform::Tanaka { .. } => values[..values.len() / 2].iter().map(|v| v.min(&15) * 17).collect(),
        Transform::Etc { .. } | Transform::Skk => values.to_vec(),
    }
}

/// The tile pixel that EtC's orientation `o` (`rotation + 4·mirror`, as in
/// `fhec_ir::transform`'s plan) shows at `(y, x)` of a `b x b` tile.
pub fn etc_source_in_tile(b: usize, o: usize, y: usize, x: usize) -> (usize, usize) {
    let xm = if o >= 4 { b - 1 - x } else { x };
    match o % 4 {
        0 => (y, xm),
        1 => (b - 1 - xm, y),
        2 => (b - 1 - y, b - 1 - xm),
        _ => (xm, b - 1 - y),
    }
}

/// The minimum-cost perfect matching of an `n x n` cost matrix (row-major): the column of
/// each row. The Hungarian method with potentials, `O(n^3)`.
pub fn hungarian(cost: &[f64], n: usize) -> Vec<usize> {
    assert_eq!(cost.len(), n * n, "a square cost matrix");
    let inf = f64::INFINITY;
    // 1-based: row 0 and column 0 are the algorithm's sentinels.
    let (mut u, mut v) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let mut row_of = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        row_of[0] = i;
        let mut j0 = 0;
        let mut min_to = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = row_of[j0];
            let (mut delta, mut j1) = (inf, 0);
            for j in 1..=n {
                if !used[j] {
                    let reduced = cost[(i0 - 1) * n + j - 1] - u[i0] - v[j];
                    if reduced < min_to[j] {
                        min_to[j] = reduced;
                        way[j] = j0;
                    }
                    if min_to[j] < delta {
                        delta = min_to[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[row_of[j]] += delta;
                    v[j] -= delta;
                } else {
                    min_to[j] -= delta;
                }
            }
            j0 = j1;
            if row_of[j0] == 0 {
                break;
            }
        }
        while j0 != 0 {
            let j1 = way[j0];
            row_of[j0] = row_of[j1];
            j0 = j1;
        }
    }
    let mut col = vec![0; n];
    for j in 1..=n {
        col[row_of[j] - 1] = j - 1;
    }
    col
}

/// How output units and source units correspond under a scheme: `n` units on each side,
/// `variants` ways to map a source unit onto an output unit (EtC: 8 orientations x
/// negation; Tanaka, SKK: negation), and the values each candidate links.
struct Units {
    n: usize,
    variants: usize,
    links: Box<dyn Fn(usize, usize, usize) -> Links + Sync>,
}

fn units(t: Transform, h: usize, w: usize) -> Units {
    match t {
        Transform::Etc { block } => {
            let b = block as usize;
            let cols = w / b;
            let corner = move |t: usize| ((t / cols) * b, (t % cols) * b);
            Units {
                n: (h / b) * cols,
                variants: 16,
                links: Box::new(move |o, s, v| {
                    let ((oy, ox), (sy, sx)) = (corner(o), corner(s));
                    let mut l = Vec::with_capacity(b * b);
                    for y in 0..b {
                        for x in 0..b {
                            let (ty, tx) = etc_source_in_tile(b, v % 8, y, x);
                            l.push(((oy + y) * w + ox + x, (sy + ty) * w + sx + tx, v >= 8));
                        }
                    }
                    l
                }),
            }
        }
        Transform::Tanaka { block } => {
            let b = block as usize;
            let at = move |j: usize, ty: usize, tx: usize| {
                let (c, r) = (j / (b * b), j % (b * b));
                c * h * w + (ty + r / b) * w + tx + r % b
            };
            Units {
                n: 2 * b * b,
                variants: 2,
                links: Box::new(move |o, s, v| {
                    let mut l = Vec::with_capacity(h * w / (b * b));
                    for ty in (0..h).step_by(b) {
                        for tx in (0..w).step_by(b) {
                            l.push((at(o, ty, tx), at(s, ty, tx), v == 1));
                        }
                    }
                    l
                }),
            }
        }
        // SKK moves nothing: each pixel is its own unit (see `match_units`).
        Transform::Skk => Units { n: h * w, variants: 2, links: Box::new(|o, _, v| vec![(o, o, v == 1)]) },
    }
}

/// The plan that matches output units to source units at least total cost, `cost(output
/// index, source index, negated)` summed over a candidate's links: the best variant of every
/// (output, source) pair, then the Hungarian assignment (SKK, which moves nothing, only
/// chooses each pixel's negation).
fn match_units(t: Transform, h: usize, w: usize, cost: &(dyn Fn(usize, usize, bool) -> f64 + Sync)) -> Plan {
    use rayon::prelude::*;
    let shape = t.output_shape(h, w).expect("a size the scheme takes");
    let len = shape.iter().product::<usize>();
    let max = max_of(t);
    let u = units(t, h, w);
    let total = |l: &Links| l.iter().map(|&(o, s, n)| cost(o, s, n)).sum::<f64>();
    let best = |o: usize, s: usize| {
        (0..u.variants)
            .map(|v| (total(&(u.links)(o, s, v)), v))
            .fold((f64::INFINITY, 0), |a, b| if b.0 < a.0 { b } else { a })
    };
    let chosen: Vec<(usize, usize)> = if matches!(t, Transform::Skk) {
        (0..u.n).map(|o| (o, best(o, o).1)).collect()
    } else {
        let table: Vec<(f64, usize)> = (0..u.n * u.n).into_par_iter().map(|k| best(k / u.n, k % u.n)).collect();
        let costs: Vec<f64> = table.iter().map(|c| c.0).collect();
        hungarian(&costs, u.n).into_iter().enumerate().map(|(o, s)| (s, table[o * u.n + s].1)).collect()
    };
    let (mut src, mut negate) = (vec![0u32; len], vec![false; len]);
    for (o, &(s, v)) in chosen.iter().enumerate() {
        for (oi, si, n) in (u.links)(o, s, v) {
            src[oi] = si as u32;
            negate[oi] = n;
        }
    }
    Plan { shape, src, negate, max }
}

/// Known-plaintext key recovery: the plan most consistent with plain/transformed pairs
/// (`(image, transform of it)`), by the number of values each candidate gets wrong.
pub fn known_plaintext_plan(t: Transform, h: usize, w: usize, pairs: &[(Vec<u8>, Vec<u8>)]) -> Plan {
    let max = max_of(t);
    let sources: Vec<Vec<u8>> = pairs.iter().map(|(p, _)| source_values(t, p)).collect();
    let cost = |o: usize, s: usize, n: bool| {
        sources
            .iter()
            .zip(pairs)
            .filter(|(src, (_, out))| {
                let v = src[s];
                out[o] != if n { max - v } else { v }
            })
            .count() as f64
    };
    match_units(t, h, w, &cost)
}

/// Bins of the value histograms ([`Histograms`] (16 values each for pixels, one value each
/// for Tanaka's 4-bit sub-pixels; negation maps bin `k` to bin `15 - k` exactly).
pub const BINS: usize = 16;

/// Per-value statistics over a set of images (or of transformed images): a histogram of
/// each value (which holds its mean and deviation too).
#[derive(Clone, Debug)]
pub struct Histograms {
    /// The largest value (255 for pixels, 15 for sub-pixels).
    pub max: u8,
    /// Share of each of the [`BINS`] bins, for each value.
    pub hist: Vec<[f64; BINS]>,
}

impl Histograms {
    /// The histograms of equally long vectors of values in `0..=max` (255 or 15).
    pub fn of<'a>(rows: impl IntoIterator<Item = &'a [u8]>, max: u8) -> Histograms {
        let width = (max as usize + 1) / BINS;
        let (mut hist, mut n) = (Vec::<[f64; BINS]>::new(), 0usize);
        for r in rows {
            if hist.is_empty() {
                hist = vec![[0.0; BINS]; r.len()];
            }
            for (h, &v) in hist.iter_mut().zip(r) {
                h[(v.min(max) as usize / width).min(BINS - 1)] += 1.0;
            }
            n += 1;
        }
        let n = n.max(1) as f64;
        hist.iter_mut().for_each(|h| h.iter_mut().for_each(|c| *c /= n));
        Histograms { max, hist }
    }

    /// The histograms of the values a scheme permutes, over plain images (the attacker's
    /// public knowledge, from a training set).
    pub fn of_sources<'a>(t: Transform, images: impl IntoIterator<Item = &'a [u8]>) -> Histograms {
        let sources: Vec<Vec<u8>> = images.into_iter().map(|p| source_values(t, p)).collect();
        Histograms::of(sources.iter().map(|v| v.as_slice()), max_of(t))
    }

    /// How unlike value `o` of `self` is value `s` of `other` (negated if `negate`: the
    /// histogram reversed): the chi-square distance of their histograms,
    /// `sum (a - b)^2 / (a + b)` over the bins, which weighs rare bins (ink near the border)
    /// more than squared differences would; the histograms hold the means and deviations too
    /// (squared differences of histograms, or of means and deviations, or both recovered
    /// less of EtC on MNIST).
    pub fn distance(&self, o: usize, other: &Histograms, s: usize, negate: bool) -> f64 {
        let (a, b) = (&self.hist[o], &other.hist[s]);
        (0..BINS)
            .map(|k| {
                let (x, y) = (a[k], b[if negate { BINS - 1 - k } else { k }]);
                (x - y).powi(2) / (x + y + 1e-3)
            })
            .sum()
    }
}

/// The largest value a scheme's transform holds.
fn max_of(t: Transform) -> u8 {
    if matches!(t, Transform::Tanaka { .. }) { 15 } else { 255 }
}

/// Ciphertext-only key recovery: the plan under which the statistics of the transformed
/// images (each output value's histogram across them, [`Histograms::distance`]) best match
/// the public statistics of the plain data (`public`, [`Histograms::of_sources`] of a
/// training set): a negated value's histogram is the source's reversed.
pub fn ciphertext_only_plan(t: Transform, h: usize, w: usize, transformed: &[Vec<u8>], public: &Histograms) -> Plan {
    let seen = Histograms::of(transformed.iter().map(|v| v.as_slice()), public.max);
    let cost = |o: usize, s: usize, n: bool| seen.distance(o, public, s, n);
    match_units(t, h, w, &cost)
}

/// Images of the transformed set whose tile edges [`etc_jigsaw_refine`] compares.
pub const JIGSAW_IMAGES: usize = 300;

/// Ciphertext-only EtC key recovery with jigsaw solving (after the follow-ups that attack
/// EtC as a jigsaw puzzle): starting from `plan` (the statistical one of
/// [`ciphertext_only_plan`]), keeps each tile's negation and improves the placement and
/// orientation of the tiles by local search (swap two tiles, each taking its best
/// orientation; turn one tile) on the energy: the statistical cost of each tile at its
/// place plus `lambda` times, for every pair of neighbouring places, the mean absolute
/// difference of the pixels along their shared edge (over 255), over the first
/// [`JIGSAW_IMAGES`] transformed images: natural images are continuous across tile edges.
pub fn etc_jigsaw_refine(
    block: usize,
    (h, w): (usize, usize),
    transformed: &[Vec<u8>],
    public: &Histograms,
    plan: &Plan,
    lambda: f64,
) -> Plan {
    use rayon::prelude::*;
    let b = block;
    let t = Transform::Etc { block: block as u32 };
    let u = units(t, h, w);
    let (cols, n) = (w / b, u.n);
    let seen = Histograms::of(transformed.iter().map(|v| v.as_slice()), public.max);
    // Each output tile's source place and variant under `plan`.
    let mut place_of = vec![(0usize, 0usize); n];
    for (o, entry) in place_of.iter_mut().enumerate() {
        let first = plan.src[(o / cols) * b * w + (o % cols) * b] as usize;
        let guess = ((first / w) / b) * cols + (first % w) / b;
        let fits = |s: usize, v: usize| {
            (u.links)(o, s, v).iter().all(|&(oi, si, neg)| plan.src[oi] as usize == si && plan.negate[oi] == neg)
        };
        *entry = (0..n)
            .flat_map(|s| (0..16).map(move |v| (s, v)))
            .filter(|&(s, _)| s == guess)
            .find(|&(s, v)| fits(s, v))
            .expect("an EtC plan");
    }
    // States: (tile o, orientation r) with o's negation; state index o * 8 + r.
    let negated: Vec<bool> = place_of.iter().map(|&(_, v)| v >= 8).collect();
    let variant = |o: usize, r: usize| r + if negated[o] { 8 } else { 0 };
    let unary: Vec<f64> = (0..n * n * 8)
        .into_par_iter()
        .map(|k| {
            let (o, rest) = (k / (n * 8), k % (n * 8));
            let (p, r) = (rest / 8, rest % 8);
            (u.links)(o, p, variant(o, r)).iter().map(|&(oi, si, neg)| seen.distance(oi, public, si, neg)).sum()
        })
        .collect();
    let unary_of = |o: usize, p: usize, r: usize| unary[(o * n + p) * 8 + r];
    // Edges of each state's reconstructed tile over the sample: [top, bottom, left, right].
    let sample = &transformed[..transformed.len().min(JIGSAW_IMAGES)];
    let m = sample.len();
    let edges: Vec<[Vec<u8>; 4]> = (0..n * 8)
        .map(|st| {
            let (o, r) = (st / 8, st % 8);
            let mut tile = vec![vec![0u8; b * b]; m];
            for (oi, si, neg) in (u.links)(o, 0, variant(o, r)) {
                let (ty, tx) = (si / w, si % w);
                for (img, tl) in sample.iter().zip(tile.iter_mut()) {
                    tl[ty * b + tx] = if neg { 255 - img[oi] } else { img[oi] };
                }
            }
            let side = |f: &dyn Fn(usize) -> usize| tile.iter().flat_map(|tl| (0..b).map(|i| tl[f(i)])).collect();
            [side(&|i| i), side(&|i| (b - 1) * b + i), side(&|i| i * b), side(&|i| i * b + b - 1)]
        })
        .collect();
    let diff = |a: &[u8], c: &[u8]| {
        a.iter().zip(c).map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as f64).sum::<f64>()
            / (255.0 * a.len().max(1) as f64)
    };
    // right[a * 8n + c]: state a left of state c; below[..]: a above c.
    let states = n * 8;
    let pair = |k: usize, horizontal: bool| {
        let (a, c) = (k / states, k % states);
        if a / 8 == c / 8 {
            return f64::INFINITY;
        }
        if horizontal { diff(&edges[a][3], &edges[c][2]) } else { diff(&edges[a][1], &edges[c][0]) }
    };
    let right: Vec<f64> = (0..states * states).into_par_iter().map(|k| pair(k, true)).collect();
    let below: Vec<f64> = (0..states * states).into_par_iter().map(|k| pair(k, false)).collect();
    // The arrangement: place -> (tile, orientation).
    let mut at = vec![(0usize, 0usize); n];
    for (o, &(p, v)) in place_of.iter().enumerate() {
        at[p] = (o, v % 8);
    }
    let rows = h / b;
    let neighbours = |p: usize| {
        let (y, x) = (p / cols, p % cols);
        let mut v = Vec::with_capacity(4);
        if x > 0 {
            v.push((p - 1, true, false)); // (place, horizontal, p is second)
        }
        if x + 1 < cols {
            v.push((p + 1, true, true));
        }
        if y > 0 {
            v.push((p - cols, false, false));
        }
        if y + 1 < rows {
            v.push((p + cols, false, true));
        }
        v
    };
    let edge = |at: &[(usize, usize)], p: usize, q: usize, horizontal: bool, p_first: bool| {
        let (sp, sq) = (at[p].0 * 8 + at[p].1, at[q].0 * 8 + at[q].1);
        let (a, c) = if p_first { (sp, sq) } else { (sq, sp) };
        lambda * if horizontal { right[a * states + c] } else { below[a * states + c] }
    };
    // Energy of the terms that involve places `ps` (each shared edge once).
    let local = |at: &[(usize, usize)], ps: &[usize]| {
        let mut e: f64 = ps.iter().map(|&p| unary_of(at[p].0, p, at[p].1)).sum();
        for (i, &p) in ps.iter().enumerate() {
            for (q, horizontal, p_first) in neighbours(p) {
                if !ps[..i].contains(&q) {
                    e += edge(at, p, q, horizontal, p_first);
                }
            }
        }
        e
    };
    let best_orientation = |at: &mut Vec<(usize, usize)>, p: usize, others: &[usize]| {
        let mut best = (f64::INFINITY, at[p].1);
        for r in 0..8 {
            at[p].1 = r;
            let e = local(at, &[&[p][..], others].concat());
            if e < best.0 {
                best = (e, r);
            }
        }
        at[p].1 = best.1;
    };
    for _pass in 0..20 {
        let mut improved = false;
        for p in 0..n {
            for q in p..n {
                let before = local(&at, &[p, q]);
                let old = at.clone();
                if p == q {
                    best_orientation(&mut at, p, &[]);
                } else {
                    at.swap(p, q);
                    best_orientation(&mut at, p, &[q]);
                    best_orientation(&mut at, q, &[p]);
                }
                if local(&at, &[p, q]) < before - 1e-12 {
                    improved = true;
                } else {
                    at = old;
                }
            }
        }
        if !improved {
            break;
        }
    }
    let len = h * w;
    let (mut src, mut negate) = (vec![0u32; len], vec![false; len]);
    for (p, &(o, r)) in at.iter().enumerate() {
        for (oi, si, neg) in (u.links)(o, p, variant(o, r)) {
            src[oi] = si as u32;
            negate[oi] = neg;
        }
    }
    Plan { shape: plan.shape, src, negate, max: plan.max }
}

/// The key-free reconstruction of one transformed image (see the module documentation).
pub fn feature(t: Transform, values: &[u8], h: usize, w: usize) -> Vec<u8> {
    match t {
        Transform::Skk => values.iter().map(|&p| 255 - (2 * p as i32 - 255).unsigned_abs() as u8).collect(),
        Transform::Etc { block } => {
            let b = block as usize;
            let mut out = values.to_vec();
            for ty in (0..h).step_by(b) {
                for tx in (0..w).step_by(b) {
                    let idx = || (0..b * b).map(|k| (ty + k / b) * w + tx + k % b);
                    let bright = idx().filter(|&i| values[i] > 127).count();
                    if 2 * bright > b * b {
                        idx().for_each(|i| out[i] = 255 - values[i]);
                    }
                }
            }
            out
        }
        Transform::Tanaka { block } => {
            let b = block as usize;
            let per_tile = 2 * b * b;
            let tiles = (h / b) * (w / b);
            let at = |j: usize, ty: usize, tx: usize| {
                let (c, r) = (j / (b * b), j % (b * b));
                c * h * w + (ty + r / b) * w + tx + r % b
            };
            let corners = || (0..h).step_by(b).flat_map(move |ty| (0..w).step_by(b).map(move |tx| (ty, tx)));
            // Every tile has the same negations: a sub-pixel position that is bright in most
            // tiles of the image is taken as negated.
            let negated: Vec<bool> = (0..per_tile)
                .map(|j| 2 * corners().filter(|&(ty, tx)| values[at(j, ty, tx)] >= 8).count() > tiles)
                .collect();
            let mut out = vec![0u8; h * w];
            for (ty, tx) in corners() {
                let sum: u32 = (0..per_tile)
                    .map(|j| {
                        let v = values[at(j, ty, tx)].min(15) as u32;
                        if negated[j] { 15 - v } else { v }
                    })
                    .sum();
                let level = (17 * sum / per_tile as u32).min(255) as u8;
                for k in 0..b * b {
                    out[(ty + k / b) * w + tx + k % b] = level;
                }
            }
            out
        }
    }
}

/// The top 8 bits of each LWE body of an encrypted image, as pixels (the TFHE control: what
/// a transformed image's values are to the attacks above).
pub fn body_image(bodies: &[u64]) -> Vec<u8> {
    bodies.iter().map(|b| (b >> 56) as u8).collect()
}

#[cfg(test)]
mod tests {
    use fhec_ir::transform::TransformKey;

    use super::*;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn byte(&mut self) -> u8 {
            (self.next() >> 8) as u8
        }
    }

    fn key(seed: u8) -> TransformKey {
        TransformKey::from_bytes(std::array::from_fn(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)))
    }

    fn random_images(n: usize, len: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut r = Lcg(seed);
        (0..n).map(|_| (0..len).map(|_| r.byte()).collect()).collect()
    }

    /// Dark images with a bright, position-dependent blob (like digits: the mean image has
    /// structure, and every pixel's mean is below 128, at most 115).
    fn skewed_images(n: usize, h: usize, w: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut r = Lcg(seed);
        (0..n)
            .map(|_| {
                (0..h * w)
                    .map(|i| {
                        let (y, x) = ((i / w) as f64, (i % w) as f64);
                        let d = ((y - h as f64 * 0.4).powi(2) + (x - w as f64 * 0.6).powi(2)).sqrt();
                        let p = (200.0 - 40.0 * d + 10.0 * y).clamp(0.0, 200.0);
                        let noise = (r.next() % 30) as f64;
                        (p * (r.next() % 101) as f64 / 100.0 + noise) as u8
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn hungarian_is_optimal_on_small_matrices() {
        let mut r = Lcg(5);
        for n in 1..=6 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n).map(|_| (r.next() % 10) as f64).collect();
                let got = hungarian(&cost, n);
                let total = |p: &[usize]| p.iter().enumerate().map(|(i, &j)| cost[i * n + j]).sum::<f64>();
                let mut seen = got.clone();
                seen.sort();
                assert_eq!(seen, (0..n).collect::<Vec<_>>());
                // Brute force over all permutations.
                let mut best = f64::INFINITY;
                let mut p: Vec<usize> = (0..n).collect();
                permute(&mut p, 0, &mut |p| best = best.min(total(p)));
                assert_eq!(total(&got), best);
            }
        }
    }

    fn permute(p: &mut Vec<usize>, k: usize, f: &mut dyn FnMut(&[usize])) {
        if k == p.len() {
            return f(p);
        }
        for i in k..p.len() {
            p.swap(k, i);
            permute(p, k + 1, f);
            p.swap(k, i);
        }
    }

    #[test]
    fn orientations_match_the_schemes_plan() {
        // Every EtC tile's map is one of the eight orientations of `etc_source_in_tile`.
        let (h, w, b) = (8, 8, 2);
        let t = Transform::Etc { block: b as u32 };
        let plan = t.plan(&key(1), h, w).unwrap();
        for o in 0..16 {
            let corner = ((o / 4) * b, (o % 4) * b);
            let found = (0..8).any(|v| {
                let mut src_tile = None;
                (0..b * b).all(|k| {
                    let (y, x) = (k / b, k % b);
                    let s = plan.src[(corner.0 + y) * w + corner.1 + x] as usize;
                    let (ty, tx) = etc_source_in_tile(b, v, y, x);
                    let tile = ((s / w) / b * b, (s % w) / b * b);
                    (s / w - tile.0, s % w - tile.1) == (ty, tx) && *src_tile.get_or_insert(tile) == tile
                })
            });
            assert!(found, "tile {o}");
        }
    }

    #[test]
    fn known_plaintext_recovers_every_plan_exactly() {
        let (h, w) = (8, 8);
        let plain = random_images(3, h * w, 7);
        for t in [Transform::Etc { block: 2 }, Transform::Skk, Transform::Tanaka { block: 2 }] {
            let k = key(3);
            let truth = t.plan(&k, h, w).unwrap();
            let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                plain[..2].iter().map(|p| (p.clone(), t.apply_plan(&truth, p).unwrap())).collect();
            let found = known_plaintext_plan(t, h, w, &pairs);
            assert_eq!(plan_agreement(&found, &truth), 1.0, "{t}");
            let other = t.apply_plan(&truth, &plain[2]).unwrap();
            assert_eq!(invert_with(t, &found, &other), plain[2], "{t}");
        }
        // SKK: one pair decides every pixel (v and 255 - v never coincide).
        let t = Transform::Skk;
        let truth = t.plan(&key(4), h, w).unwrap();
        let found = known_plaintext_plan(t, h, w, &[(plain[0].clone(), t.apply_plan(&truth, &plain[0]).unwrap())]);
        assert_eq!(found, truth);
    }

    #[test]
    fn ciphertext_only_recovers_skk_on_skewed_data() {
        let (h, w) = (8, 8);
        let t = Transform::Skk;
        let truth = t.plan(&key(9), h, w).unwrap();
        let public = Histograms::of_sources(t, skewed_images(500, h, w, 1).iter().map(|v| v.as_slice()));
        let seen: Vec<Vec<u8>> = skewed_images(500, h, w, 2).iter().map(|p| t.apply_plan(&truth, p).unwrap()).collect();
        let found = ciphertext_only_plan(t, h, w, &seen, &public);
        assert_eq!(found, truth);
    }

    #[test]
    fn ciphertext_only_recovers_most_of_etc_and_tanaka_on_skewed_data() {
        let (h, w) = (8, 8);
        for t in [Transform::Etc { block: 2 }, Transform::Tanaka { block: 2 }] {
            let truth = t.plan(&key(11), h, w).unwrap();
            let public = Histograms::of_sources(t, skewed_images(2000, h, w, 3).iter().map(|v| v.as_slice()));
            let plain = skewed_images(2000, h, w, 4);
            let seen: Vec<Vec<u8>> = plain.iter().map(|p| t.apply_plan(&truth, p).unwrap()).collect();
            let found = ciphertext_only_plan(t, h, w, &seen, &public);
            let share = plan_agreement(&found, &truth);
            if matches!(t, Transform::Etc { .. }) {
                assert!(share >= 0.75, "{t}: {share}");
            } else {
                // The lower nibbles of noisy pixels are uniform: no statistic tells their
                // positions or negations apart, so only the upper nibbles are expected back.
                let upper: Vec<usize> = (0..truth.src.len()).filter(|&i| (truth.src[i] as usize) < h * w).collect();
                let right = upper
                    .iter()
                    .filter(|&&i| (found.src[i], found.negate[i]) == (truth.src[i], truth.negate[i]))
                    .count();
                assert!(right as f64 >= 0.75 * upper.len() as f64, "{t}: {right} of {}", upper.len());
                // So the reconstructions are within a lower nibble of the originals, mostly.
                let close = plain
                    .iter()
                    .zip(&seen)
                    .map(|(p, v)| {
                        let r = invert_with(t, &found, v);
                        r.iter().zip(p).filter(|(a, b)| (**a as i32 - **b as i32).abs() < 16).count()
                    })
                    .sum::<usize>();
                assert!(close as f64 >= 0.75 * (plain.len() * h * w) as f64, "{t}: {close}");
            }
        }
    }

    /// Smooth images: a random ramp plus a bright disc at a random place.
    fn smooth_images(n: usize, h: usize, w: usize, seed: u64) -> Vec<Vec<u8>> {
        let mut r = Lcg(seed);
        (0..n)
            .map(|_| {
                let (a, c, d) = ((r.next() % 21) as f64 - 10.0, (r.next() % 21) as f64 - 10.0, (r.next() % 100) as f64);
                let (cy, cx) = ((r.next() % h as u64) as f64, (r.next() % w as u64) as f64);
                (0..h * w)
                    .map(|i| {
                        let (y, x) = ((i / w) as f64, (i % w) as f64);
                        let disc = (120.0 - 30.0 * ((y - cy).powi(2) + (x - cx).powi(2)).sqrt()).max(0.0);
                        (d + a * y + c * x + disc).clamp(0.0, 255.0) as u8
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn jigsaw_refinement_puts_swapped_and_turned_tiles_back() {
        let (h, w, b) = (8, 8, 2);
        let t = Transform::Etc { block: b as u32 };
        let truth = t.plan(&key(5), h, w).unwrap();
        let public = Histograms::of_sources(t, smooth_images(400, h, w, 8).iter().map(|v| v.as_slice()));
        let seen: Vec<Vec<u8>> = smooth_images(200, h, w, 9).iter().map(|p| t.apply_plan(&truth, p).unwrap()).collect();
        // Swap what output tiles 0 and 5 show, then turn output tile 9 a quarter.
        let mut wrong = truth.clone();
        let pixel = |o: usize, k: usize| ((o / 4) * b + k / b) * w + (o % 4) * b + k % b;
        for k in 0..b * b {
            let (i, j) = (pixel(0, k), pixel(5, k));
            wrong.src.swap(i, j);
            wrong.negate.swap(i, j);
        }
        let tile9: Vec<u32> = (0..b * b).map(|k| truth.src[pixel(9, k)]).collect();
        for y in 0..b {
            for x in 0..b {
                wrong.src[pixel(9, y * b + x)] = tile9[(b - 1 - x) * b + y];
            }
        }
        assert!(plan_agreement(&wrong, &truth) < 1.0);
        let fixed = etc_jigsaw_refine(b, (h, w), &seen, &public, &wrong, 1.0);
        assert_eq!(plan_agreement(&fixed, &truth), 1.0);
    }

    #[test]
    fn features_undo_what_needs_no_key() {
        let (h, w) = (8, 8);
        // A dark image: EtC's feature un-negates every tile (each tile mostly dark).
        let dark: Vec<u8> = (0..h * w).map(|i| (i % 7 * 10) as u8).collect();
        let t = Transform::Etc { block: 2 };
        let plan = t.plan(&key(2), h, w).unwrap();
        let f = feature(t, &t.apply_plan(&plan, &dark).unwrap(), h, w);
        let mut a = f.clone();
        let mut b = dark.clone();
        a.sort();
        b.sort();
        assert_eq!(a, b, "the same pixels, tiles moved");
        // SKK: a pixel and its negation give the same feature.
        let t = Transform::Skk;
        let plan = t.plan(&key(2), h, w).unwrap();
        assert_eq!(feature(t, &t.apply_plan(&plan, &dark).unwrap(), h, w), feature(t, &dark, h, w));
        // Tanaka: a uniform dark image comes back as tiles of its level.
        let t = Transform::Tanaka { block: 2 };
        let plan = t.plan(&key(2), h, w).unwrap();
        let flat = vec![0x33u8; h * w];
        assert_eq!(feature(t, &t.apply_plan(&plan, &flat).unwrap(), h, w), vec![51u8; h * w]);
        // The body image: top byte.
        assert_eq!(body_image(&[0xab00_0000_0000_0001, 5]), vec![0xab, 0]);
    }

    #[test]
    fn as_image_widens_tanaka_channel_zero() {
        let t = Transform::Tanaka { block: 1 };
        assert_eq!(as_image(t, &[1, 15, 3, 4]), vec![17, 255]);
        assert_eq!(as_image(Transform::Skk, &[1, 2]), vec![1, 2]);
    }
}
