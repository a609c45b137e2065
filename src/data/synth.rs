//! Synthetic VCC-shaped single-cell CRISPR data.
//!
//! Raw UMI counts from a gamma–Poisson (negative binomial) model:
//! `count[c,g] ~ Poisson(Gamma(shape = 1/φ, scale = μ[c,g]·φ))` with
//! `μ[c,g] = size[c] · abundance[g] · exp(type[t,g] + batch[b,g] + effect[p,t,g])`, where
//! - `abundance` is log-normal over genes and normalised to sum to 1, so `size[c]` is the expected library size;
//! - `size[c]` is log-normal around `mean_umis`;
//! - `type` and `batch` are per-gene log-scale offsets (cell identity and technical batch);
//! - `effect[p,t]` is the perturbation's effect in cell type `t`: the target gene is knocked down to
//!   `knockdown` of its level; non-null perturbations also move `de_genes_per_pert` other genes, with a part
//!   shared by all cell types and a cell-type-specific part (so a model can transfer a perturbation across cell
//!   types but not perfectly). Null perturbations only knock down their target.
//!
//! Every cell type has its own `non-targeting` control cells. Cells are shuffled. The whole dataset is a pure
//! function of the config (seed included): cell `i`'s counts come from an RNG seeded by `(seed, i)`, so chunks
//! can be generated independently and in parallel, and a 300k-cell file is streamed with bounded memory.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, LogNormal, Normal, Poisson};
use rayon::prelude::*;

use super::anndata::{Categorical, Column, CsrMatrix, DataFrame};

/// The label of control cells, as in the VCC.
pub const CONTROL_LABEL: &str = "non-targeting";

/// Parameters of the generator. `Default` is small enough for the demo to run in seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    pub seed: u64,
    pub n_genes: usize,
    /// Number of perturbations (each targets a distinct gene).
    pub n_perts: usize,
    pub n_cell_types: usize,
    pub n_batches: usize,
    /// Perturbed cells per (perturbation, cell type).
    pub cells_per_pert: usize,
    /// Control cells per cell type.
    pub ctrl_per_cell_type: usize,
    /// Fraction of perturbations with no effect beyond their target's knockdown.
    pub null_fraction: f64,
    /// Genes moved by a non-null perturbation (besides its target).
    pub de_genes_per_pert: usize,
    /// Remaining fraction of the target gene's expression after knockdown.
    pub knockdown: f64,
    /// Expected UMIs per cell.
    pub mean_umis: f64,
    /// Negative-binomial dispersion φ (variance = μ + φμ²).
    pub dispersion: f64,
    /// Standard deviation of the log-fold changes of DE genes.
    pub effect_sd: f64,
    /// Share of a perturbation's effect that is specific to the cell type (0 = identical in all cell types).
    pub celltype_specificity: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            n_genes: 2000,
            n_perts: 24,
            n_cell_types: 3,
            n_batches: 2,
            cells_per_pert: 60,
            ctrl_per_cell_type: 300,
            null_fraction: 0.1,
            de_genes_per_pert: 60,
            knockdown: 0.15,
            mean_umis: 8000.0,
            dispersion: 0.2,
            effect_sd: 0.8,
            celltype_specificity: 0.3,
        }
    }
}

impl SynthConfig {
    /// The Virtual Cell Challenge's shape: 18,080 genes, ~300k cells (one cell type, as the H1 hESC data).
    pub fn vcc_scale() -> Self {
        SynthConfig {
            n_genes: 18_080,
            n_perts: 300,
            n_cell_types: 1,
            n_batches: 4,
            cells_per_pert: 950,
            ctrl_per_cell_type: 15_000,
            mean_umis: 12_000.0,
            ..SynthConfig::default()
        }
    }

    fn validate(&self) -> Result<(), SynthError> {
        let bad = |what: &str| Err(SynthError::Config(what.to_owned()));
        if self.n_genes == 0 || self.n_cell_types == 0 || self.n_batches == 0 {
            return bad("n_genes, n_cell_types and n_batches must be at least 1");
        }
        if self.n_perts > self.n_genes {
            return bad("n_perts cannot exceed n_genes (each perturbation targets a distinct gene)");
        }
        if self.n_genes > u32::MAX as usize {
            return bad("n_genes must fit in u32");
        }
        if !(0.0..=1.0).contains(&self.null_fraction)
            || !(0.0..=1.0).contains(&self.knockdown)
            || !(0.0..=1.0).contains(&self.celltype_specificity)
        {
            return bad("null_fraction, knockdown and celltype_specificity must be in [0, 1]");
        }
        if !(self.mean_umis > 0.0 && self.dispersion > 0.0 && self.effect_sd >= 0.0) {
            return bad("mean_umis and dispersion must be > 0, effect_sd ≥ 0");
        }
        if self.n_cells() == 0 {
            return bad("the configuration generates no cells");
        }
        Ok(())
    }

    /// Total number of cells the configuration generates.
    pub fn n_cells(&self) -> usize {
        self.n_cell_types * (self.n_perts * self.cells_per_pert + self.ctrl_per_cell_type)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic-data configuration: {0}")]
    Config(String),
}

/// Who a cell is: perturbation (`None` = control), cell type, batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellSpec {
    pub pert: Option<u32>,
    pub cell_type: u16,
    pub batch: u16,
}

/// The generator's parameters, drawn once from the seed. Holds no counts.
#[derive(Debug, Clone)]
pub struct SynthDataset {
    pub config: SynthConfig,
    pub gene_names: Vec<String>,
    /// Target gene index of each perturbation; its label is `gene_names[target]`.
    pub pert_targets: Vec<usize>,
    pub null_perts: Vec<bool>,
    pub cell_type_names: Vec<String>,
    pub batch_names: Vec<String>,
    /// The shuffled cells of the file, in obs order.
    pub cells: Vec<CellSpec>,
    /// Normalised gene abundances (sum 1).
    abundance: Vec<f64>,
    /// `[t][g]` log-scale offsets.
    type_offset: Vec<Vec<f64>>,
    /// `[b][g]` log-scale offsets.
    batch_offset: Vec<Vec<f64>>,
    /// `[p][t]` sparse log-scale effects as (gene, log-fold change), sorted by gene.
    effects: Vec<Vec<Vec<(usize, f64)>>>,
    /// `[t * n_batches + b]`: unperturbed expected fractions and their sum (cached: the per-cell work is then
    /// one pass over genes plus the perturbation's few effect genes).
    base: Vec<(Vec<f64>, f64)>,
}

impl SynthDataset {
    pub fn new(config: SynthConfig) -> Result<Self, SynthError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let n_genes = config.n_genes;
        let gene_names: Vec<String> = (0..n_genes).map(|g| format!("GENE{g:05}")).collect();

        // Log-normal abundances: a heavy tail of highly expressed genes, many lowly expressed ones.
        let lognormal = LogNormal::new(0.0, 1.6).map_err(|e| SynthError::Config(e.to_string()))?;
        let mut abundance: Vec<f64> = (0..n_genes).map(|_| lognormal.sample(&mut rng)).collect();
        let total: f64 = abundance.iter().sum();
        abundance.iter_mut().for_each(|a| *a /= total);

        let offsets = |rng: &mut ChaCha8Rng, sd: f64, n: usize| -> Result<Vec<Vec<f64>>, SynthError> {
            let normal = Normal::new(0.0, sd).map_err(|e| SynthError::Config(e.to_string()))?;
            Ok((0..n).map(|_| (0..n_genes).map(|_| normal.sample(rng)).collect()).collect())
        };
        let type_offset = offsets(&mut rng, 0.5, config.n_cell_types)?;
        let batch_offset = offsets(&mut rng, 0.1, config.n_batches)?;

        // Targets: distinct genes, preferring expressed ones so that knockdowns are visible.
        let mut by_abundance: Vec<usize> = (0..n_genes).collect();
        by_abundance.sort_by(|&a, &b| abundance[b].total_cmp(&abundance[a]));
        let pool = &mut by_abundance[..(n_genes / 2).max(config.n_perts)];
        pool.shuffle(&mut rng);
        let mut pert_targets: Vec<usize> = pool[..config.n_perts].to_vec();
        pert_targets.sort_unstable();

        let n_null = (config.null_fraction * config.n_perts as f64).round() as usize;
        let mut null_perts = vec![false; config.n_perts];
        let mut order: Vec<usize> = (0..config.n_perts).collect();
        order.shuffle(&mut rng);
        for &p in &order[..n_null.min(config.n_perts)] {
            null_perts[p] = true;
        }

        let effect = Normal::new(0.0, config.effect_sd.max(1e-12)).map_err(|e| SynthError::Config(e.to_string()))?;
        let knock = config.knockdown.max(1e-6).ln();
        let spec = config.celltype_specificity;
        let n_de = config.de_genes_per_pert.min(n_genes.saturating_sub(1));
        let mut effects = Vec::with_capacity(config.n_perts);
        for (p, &target) in pert_targets.iter().enumerate() {
            let mut shared: Vec<(usize, f64)> = Vec::new();
            if !null_perts[p] {
                let mut genes: Vec<usize> = (0..n_genes).filter(|&g| g != target).collect();
                genes.shuffle(&mut rng);
                shared = genes[..n_de].iter().map(|&g| (g, effect.sample(&mut rng))).collect();
            }
            let per_type: Vec<Vec<(usize, f64)>> = (0..config.n_cell_types)
                .map(|_| {
                    let mut list = vec![(target, knock)];
                    for &(g, lfc) in &shared {
                        let specific: f64 = effect.sample(&mut rng);
                        list.push((g, (1.0 - spec) * lfc + spec * specific));
                    }
                    list.sort_unstable_by_key(|&(g, _)| g);
                    list
                })
                .collect();
            effects.push(per_type);
        }

        let mut cells = Vec::with_capacity(config.n_cells());
        for t in 0..config.n_cell_types {
            let mut push = |pert: Option<u32>, n: usize, rng: &mut ChaCha8Rng| {
                for _ in 0..n {
                    let batch = rng.random_range(0..config.n_batches) as u16;
                    cells.push(CellSpec { pert, cell_type: t as u16, batch });
                }
            };
            push(None, config.ctrl_per_cell_type, &mut rng);
            for p in 0..config.n_perts {
                push(Some(p as u32), config.cells_per_pert, &mut rng);
            }
        }
        cells.shuffle(&mut rng);

        let mut base = Vec::with_capacity(config.n_cell_types * config.n_batches);
        for type_off in &type_offset {
            for batch_off in &batch_offset {
                let fractions: Vec<f64> =
                    (0..n_genes).map(|g| (abundance[g].ln() + type_off[g] + batch_off[g]).exp()).collect();
                let sum = fractions.iter().sum();
                base.push((fractions, sum));
            }
        }

        Ok(SynthDataset {
            base,
            cell_type_names: (0..config.n_cell_types).map(|t| format!("celltype_{t}")).collect(),
            batch_names: (0..config.n_batches).map(|b| format!("batch_{b}")).collect(),
            config,
            gene_names,
            pert_targets,
            null_perts,
            cells,
            abundance,
            type_offset,
            batch_offset,
            effects,
        })
    }

    pub fn n_cells(&self) -> usize {
        self.cells.len()
    }

    pub fn n_genes(&self) -> usize {
        self.gene_names.len()
    }

    /// The label of perturbation `p` (its target gene's name).
    pub fn pert_label(&self, p: usize) -> &str {
        &self.gene_names[self.pert_targets[p]]
    }

    /// Labels of the null perturbations.
    pub fn null_pert_labels(&self) -> Vec<&str> {
        (0..self.pert_targets.len()).filter(|&p| self.null_perts[p]).map(|p| self.pert_label(p)).collect()
    }

    /// Expected expression μ/size (fractions summing to ~1) of a cell type × perturbation × batch, on genes.
    pub fn expected_fraction(&self, pert: Option<usize>, cell_type: usize, batch: usize) -> Vec<f64> {
        let mut log_mu: Vec<f64> = (0..self.n_genes())
            .map(|g| self.abundance[g].ln() + self.type_offset[cell_type][g] + self.batch_offset[batch][g])
            .collect();
        if let Some(p) = pert {
            for &(g, lfc) in &self.effects[p][cell_type] {
                log_mu[g] += lfc;
            }
        }
        log_mu.into_iter().map(f64::exp).collect()
    }

    /// The perturbation's true log-fold changes in a cell type, as (gene, lfc) sorted by gene.
    pub fn true_effects(&self, pert: usize, cell_type: usize) -> &[(usize, f64)] {
        &self.effects[pert][cell_type]
    }

    /// Raw counts of cells `[start, end)` (obs order), as CSR without stored zeros.
    pub fn generate_rows(&self, start: usize, end: usize) -> CsrMatrix {
        let end = end.min(self.n_cells());
        let start = start.min(end);
        let rows: Vec<(Vec<u32>, Vec<f32>)> = (start..end).into_par_iter().map(|i| self.generate_cell(i)).collect();
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0usize);
        let nnz: usize = rows.iter().map(|r| r.0.len()).sum();
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        for (idx, val) in rows {
            indices.extend_from_slice(&idx);
            data.extend_from_slice(&val);
            indptr.push(indices.len());
        }
        CsrMatrix::new((end - start, self.n_genes()), indptr, indices, data)
    }

    fn generate_cell(&self, i: usize) -> (Vec<u32>, Vec<f32>) {
        let spec = self.cells[i];
        // One independent stream per cell: chunks can be generated in any order and in parallel.
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed ^ 0x9E37_79B9_7F4A_7C15);
        rng.set_stream(i as u64 + 1);
        let size = self.config.mean_umis * (0.35 * standard_normal(&mut rng) - 0.35 * 0.35 / 2.0).exp();
        let (base, base_sum) = &self.base[spec.cell_type as usize * self.config.n_batches + spec.batch as usize];
        let effects: &[(usize, f64)] = match spec.pert {
            Some(p) => &self.effects[p as usize][spec.cell_type as usize],
            None => &[],
        };
        let norm = base_sum + effects.iter().map(|&(g, lfc)| base[g] * (lfc.exp() - 1.0)).sum::<f64>();
        let phi = self.config.dispersion;
        let shape = 1.0 / phi;
        let mut indices = Vec::new();
        let mut data = Vec::new();
        let mut next_effect = effects.iter().peekable();
        for (g, f) in base.iter().enumerate() {
            let mut f = *f;
            if let Some(&&(eg, lfc)) = next_effect.peek() {
                if eg == g {
                    f *= lfc.exp();
                    next_effect.next();
                }
            }
            let mu = size * f / norm;
            let lambda = match Gamma::new(shape, mu * phi) {
                Ok(gamma) => gamma.sample(&mut rng),
                Err(_) => 0.0,
            };
            if lambda <= 0.0 {
                continue;
            }
            let count = match Poisson::new(lambda) {
                Ok(poisson) => poisson.sample(&mut rng),
                Err(_) => 0.0,
            };
            if count > 0.0 {
                indices.push(g as u32);
                data.push(count as f32);
            }
        }
        (indices, data)
    }

    /// The obs table: `target_gene`, `cell_type`, `batch` categoricals (categories in a fixed, unsorted-by-count
    /// order: the control first, then perturbations in gene order), cell barcodes as the index.
    pub fn obs(&self) -> DataFrame {
        let mut pert_categories = vec![CONTROL_LABEL.to_owned()];
        pert_categories.extend((0..self.pert_targets.len()).map(|p| self.pert_label(p).to_owned()));
        let target = Categorical {
            codes: self.cells.iter().map(|c| c.pert.map_or(0, |p| p as i32 + 1)).collect(),
            categories: pert_categories,
            ordered: false,
        };
        let cell_type = Categorical {
            codes: self.cells.iter().map(|c| c.cell_type as i32).collect(),
            categories: self.cell_type_names.clone(),
            ordered: false,
        };
        let batch = Categorical {
            codes: self.cells.iter().map(|c| c.batch as i32).collect(),
            categories: self.batch_names.clone(),
            ordered: false,
        };
        let mut obs = DataFrame::with_index((0..self.n_cells()).map(|i| format!("cell{i:07}")).collect());
        obs.set_column("target_gene", Column::Categorical(target));
        obs.set_column("cell_type", Column::Categorical(cell_type));
        obs.set_column("batch", Column::Categorical(batch));
        obs
    }

    /// The var table: gene names as the index.
    pub fn var(&self) -> DataFrame {
        DataFrame::with_index(self.gene_names.clone())
    }
}

fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller; avoids depending on rand_distr's StandardNormal stream details.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SynthConfig {
        SynthConfig {
            n_genes: 200,
            n_perts: 6,
            n_cell_types: 2,
            cells_per_pert: 40,
            ctrl_per_cell_type: 80,
            de_genes_per_pert: 20,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn deterministic_and_chunk_independent() {
        let a = SynthDataset::new(small()).unwrap();
        let b = SynthDataset::new(small()).unwrap();
        let whole = a.generate_rows(0, a.n_cells());
        let first = b.generate_rows(0, 100);
        let rest = b.generate_rows(100, b.n_cells());
        assert_eq!(whole.outer_view(5).unwrap().data(), first.outer_view(5).unwrap().data());
        assert_eq!(whole.outer_view(150).unwrap().indices(), rest.outer_view(50).unwrap().indices());
        assert_eq!(a.obs(), b.obs());
        let other = SynthDataset::new(SynthConfig { seed: 1, ..small() }).unwrap();
        assert_ne!(other.generate_rows(0, 10), a.generate_rows(0, 10));
    }

    #[test]
    fn shape_and_labels() {
        let d = SynthDataset::new(small()).unwrap();
        assert_eq!(d.n_cells(), 2 * (6 * 40 + 80));
        let obs = d.obs();
        let Some(Column::Categorical(t)) = obs.column("target_gene") else { panic!("no target_gene") };
        let counts = t.counts();
        assert_eq!(counts[0], 160, "80 controls per cell type");
        assert!(counts[1..].iter().all(|&c| c == 80));
        assert_eq!(t.categories[0], CONTROL_LABEL);
        assert_eq!(d.null_pert_labels().len(), 1);
        let x = d.generate_rows(0, d.n_cells());
        assert_eq!(x.cols(), 200);
        assert!(x.data().iter().all(|&v| v > 0.0 && v.fract() == 0.0), "positive integer counts, no stored zeros");
        let density = x.nnz() as f64 / (x.rows() * x.cols()) as f64;
        assert!(density > 0.2 && density < 0.95, "density {density}");
    }

    #[test]
    fn knockdown_is_visible() {
        let d = SynthDataset::new(small()).unwrap();
        let x = d.generate_rows(0, d.n_cells());
        let target = d.pert_targets[0];
        let mean_of = |pert: Option<u32>| {
            let rows: Vec<usize> = (0..d.n_cells()).filter(|&i| d.cells[i].pert == pert).collect();
            let total: f64 = rows
                .iter()
                .map(|&i| {
                    let row = x.outer_view(i).unwrap();
                    let lib: f64 = row.data().iter().map(|&v| v as f64).sum();
                    row.get(target).map_or(0.0, |&v| v as f64) / lib * 1e4
                })
                .sum();
            total / rows.len() as f64
        };
        let ctrl = mean_of(None);
        let kd = mean_of(Some(0));
        assert!(kd < 0.4 * ctrl, "target knocked down: {kd} vs control {ctrl}");
    }

    #[test]
    fn bad_config_is_an_error() {
        let err = SynthDataset::new(SynthConfig { n_perts: 500, n_genes: 10, ..SynthConfig::default() }).unwrap_err();
        assert!(err.to_string().contains("n_perts"));
        assert!(SynthDataset::new(SynthConfig { knockdown: 2.0, ..SynthConfig::default() }).is_err());
    }
}
