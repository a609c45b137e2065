//! The competition's 0 end: the dispersed mean-response baseline arm (cell-eval2 `baseline.py`;
//! design/vcc2026.md §7).
//!
//! profile_g = mean over non-control perturbations (equal weight, the one targeting g left out) of the
//! per-perturbation mean raw counts; `scale_g = profile_g / mean_ctrl(y_g)` (0 where the control mean is ≤ 0);
//! `rng = default_rng(0)`; per non-control label in sorted order `rng.integers(0, n_ctrl, size=n_p)` control rows
//! (control rows in obs order); emitted cell = `f32(control cell × scale)`; the control rows are the real control
//! cells. The arm is never materialised: it is a [`Side`] whose groups point at the drawn control rows.

use super::validate::{gene_positions, LoadedFile};
use super::{Group, Result, Side, Vcc2026Error};
use crate::eval::input::stream_chunks;
use crate::eval::numpy_rng::default_rng;
use crate::progress::Progress;

/// One emitted cell: label, position within the label, its obs row, the draw and the control row it copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draw {
    pub group: String,
    pub position: usize,
    pub obs_row: usize,
    pub control_draw: usize,
    pub source_obs_row: usize,
}

/// The emission scale per gene.
pub fn emission_scale(
    real: &LoadedFile,
    var_names: &[String],
    control: &str,
    progress: &dyn Progress,
) -> Result<Vec<f64>> {
    let cats = &real.pert.categories;
    let n_vars = var_names.len();
    let ctrl_code = cats
        .iter()
        .position(|c| c == control)
        .ok_or_else(|| Vcc2026Error::MissingControl { control: control.to_owned(), which: "real" })?;
    let counts = real.pert.counts();
    let mut sums = vec![0.0f64; cats.len() * n_vars];
    let inv_ctrl = 1.0 / counts[ctrl_code].max(1) as f64;
    let mut ctrl_mean = vec![0.0f64; n_vars];
    progress.stage("baseline: means", real.source.shape().0 as u64);
    stream_chunks(real.source.as_ref(), &real.name, real.chunk_rows, progress, |start, m| {
        for (r, row) in m.outer_iterator().enumerate() {
            let code = real.pert.codes[start + r];
            if code < 0 {
                continue;
            }
            let base = code as usize * n_vars;
            for (&c, &v) in row.indices().iter().zip(row.data()) {
                sums[base + c as usize] += v as f64;
                if code as usize == ctrl_code {
                    // scipy sparse mean: Σ x·(1/n)
                    ctrl_mean[c as usize] += v as f64 * inv_ctrl;
                }
            }
        }
        Ok(())
    })?;
    // pseudobulk means of the non-control labels, sorted; profile with the own target left out
    let mut labels: Vec<usize> = (0..cats.len()).filter(|&c| c != ctrl_code && counts[c] > 0).collect();
    labels.sort_by(|&a, &b| cats[a].cmp(&cats[b]));
    let n = labels.len();
    if n == 0 {
        return Err(Vcc2026Error::Metric("no non-control perturbation for the baseline profile".to_owned()));
    }
    let mut total = vec![0.0f64; n_vars];
    let mut means: Vec<Vec<f64>> = Vec::with_capacity(n);
    for &c in &labels {
        let nc = counts[c] as f64;
        let m: Vec<f64> = sums[c * n_vars..(c + 1) * n_vars].iter().map(|&s| s / nc).collect();
        for (t, x) in total.iter_mut().zip(&m) {
            *t += x;
        }
        means.push(m);
    }
    let mut count = vec![n as f64; n_vars];
    let gpos = gene_positions(var_names);
    for (i, &c) in labels.iter().enumerate() {
        if let Some(&g) = gpos.get(&cats[c]) {
            total[g] -= means[i][g];
            count[g] -= 1.0;
        }
    }
    Ok((0..n_vars).map(|g| if ctrl_mean[g] <= 0.0 { 0.0 } else { (total[g] / count[g]) / ctrl_mean[g] }).collect())
}

/// The baseline arm as a [`Side`] over the real file, and its draws.
pub fn baseline_side<'a>(
    real: &'a LoadedFile,
    var_names: &[String],
    control: &str,
    seed: u64,
    progress: &dyn Progress,
) -> Result<(Side<'a>, Vec<Draw>)> {
    let scale = emission_scale(real, var_names, control, progress)?;
    let mut side = real.side(control)?;
    let ctrl_rows = side.groups[side.control].rows.clone();
    let mut rng = default_rng(seed as u128);
    let mut draws = Vec::new();
    for (gi, g) in side.groups.iter_mut().enumerate() {
        if gi == side.control {
            continue;
        }
        let d = rng.integers(0, ctrl_rows.len() as i64, g.rows.len());
        let mut src = Vec::with_capacity(d.len());
        for (pos, (&obs, &k)) in g.rows.iter().zip(&d).enumerate() {
            let k = k as usize;
            src.push(ctrl_rows[k]);
            draws.push(Draw {
                group: g.label.clone(),
                position: pos,
                obs_row: obs,
                control_draw: k,
                source_obs_row: ctrl_rows[k],
            });
        }
        *g = Group { label: g.label.clone(), rows: src, scaled: true };
    }
    side.scale = Some(scale);
    side.name = format!("baseline arm of {}", real.name);
    Ok((side, draws))
}
