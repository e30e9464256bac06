//! Curvature from Hessian-vector products (overview §4 "Flatness", paper.md §2.7), independent
//! of libtorch: every method takes the operator as a closure
//! `FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, E>` that maps a batch of vectors v_1..v_b
//! (each of length n) to H·v_1..H·v_b. One closure call is one "iteration" (a batch of double
//! backward passes); `matvecs` counts the vectors.
//!
//! - [`lanczos`]: extreme eigenpairs by block Lanczos with full reorthogonalisation and thick
//!   restarts, warm-startable from earlier eigenvectors. The small projected eigenproblem is
//!   solved by our own cyclic Jacobi ([`symmetric_eigen`]); no LAPACK.
//! - [`hutchinson_trace`]: tr H ≈ mean zᵀHz over Rademacher probes from a seeded ChaCha8 stream,
//!   with its standard error.
//! - [`eps_sharpness`]: Keskar et al.'s ε-sharpness formula.
//!
//! Vectors are stored as f32 (the operator's type; a basis of 40 vectors of a 10⁷-parameter
//! model is already 1.6 GB), while every inner product and every residual is accumulated in f64.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Errors from the curvature methods. `E` is the operator's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CurvatureError<E: std::error::Error + 'static> {
    /// The Hessian-vector-product operator failed.
    #[error("hessian-vector product failed in operator call {call}")]
    Operator {
        call: u32,
        #[source]
        source: E,
    },
    /// The operator returned the wrong number of vectors or a vector of the wrong length.
    #[error(
        "operator call {call} returned {got_vectors} vectors (expected {expected_vectors}) or a vector of length {got_len} (expected {expected_len})"
    )]
    OperatorShape {
        call: u32,
        expected_vectors: usize,
        got_vectors: usize,
        expected_len: usize,
        got_len: usize,
    },
    /// The operator returned NaN or ±inf (e.g. at a diverged point).
    #[error("operator call {call} returned a non-finite value")]
    NonfiniteProduct { call: u32 },
    /// A start vector has the wrong length.
    #[error("start vector {index} has length {got_len}, expected {expected_len}")]
    StartVectorLen {
        index: usize,
        expected_len: usize,
        got_len: usize,
    },
    /// An option is out of its valid range.
    #[error("invalid option {option}: must be {constraint}")]
    InvalidOption {
        option: &'static str,
        constraint: &'static str,
    },
}

// ---------------------------------------------------------------------------------------------
// Small dense symmetric eigenproblem.

/// Eigen-decomposition of a symmetric m×m matrix (row-major `a`, only read) by cyclic Jacobi
/// rotations. Returns eigenvalues in ascending order and the matching orthonormal eigenvectors
/// as columns of a row-major m×m matrix (`vectors[i * m + j]` = component i of vector j).
///
/// Jacobi is slower than tridiagonal QR but simple, backward stable and accurate for small
/// eigenvalues; the projected matrices here have at most a few hundred rows, and thick restarts
/// make them non-tridiagonal anyway.
pub fn symmetric_eigen(a: &[f64], m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a: Vec<f64> = a.iter().take(m * m).copied().collect();
    a.resize(m * m, 0.0);
    // Symmetrise: the callers' matrices are symmetric up to rounding.
    for i in 0..m {
        for j in 0..i {
            let s = 0.5 * (a[i * m + j] + a[j * m + i]);
            a[i * m + j] = s;
            a[j * m + i] = s;
        }
    }
    let mut v = vec![0.0; m * m];
    for i in 0..m {
        v[i * m + i] = 1.0;
    }
    let frob_sq: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let mut off_sq = 0.0;
        for i in 0..m {
            for j in i + 1..m {
                off_sq += a[i * m + j] * a[i * m + j];
            }
        }
        if off_sq <= frob_sq * 1e-32 || off_sq == 0.0 {
            break;
        }
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * m + p], a[q * m + q]);
                // Rotation angle φ with cot 2φ = θ zeroes a_pq; t = tan φ, the smaller root.
                let theta = (aqq - app) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
                for k in 0..m {
                    let (vkp, vkq) = (v[k * m + p], v[k * m + q]);
                    v[k * m + p] = c * vkp - s * vkq;
                    v[k * m + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| a[i * m + i].total_cmp(&a[j * m + j]));
    let values = order.iter().map(|&i| a[i * m + i]).collect();
    let mut vectors = vec![0.0; m * m];
    for (new_j, &old_j) in order.iter().enumerate() {
        for i in 0..m {
            vectors[i * m + new_j] = v[i * m + old_j];
        }
    }
    (values, vectors)
}

// ---------------------------------------------------------------------------------------------
// Vector kernels (f32 storage, f64 accumulation).

fn dot_mixed(q: &[f32], w: &[f64]) -> f64 {
    q.iter().zip(w).map(|(&x, &y)| f64::from(x) * y).sum()
}

fn norm_f64(w: &[f64]) -> f64 {
    w.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Classical Gram–Schmidt, twice ("twice is enough"), of `w` against `basis`; adds the
/// projection coefficients to `coeffs` (one per basis vector).
fn cgs2<'a>(basis: impl Iterator<Item = &'a [f32]> + Clone, w: &mut [f64], coeffs: &mut [f64]) {
    for _ in 0..2 {
        let h: Vec<f64> = basis.clone().map(|q| dot_mixed(q, w)).collect();
        for (q, &hi) in basis.clone().zip(&h) {
            for (x, &qi) in w.iter_mut().zip(q) {
                *x -= hi * f64::from(qi);
            }
        }
        for (c, hi) in coeffs.iter_mut().zip(h) {
            *c += hi;
        }
    }
}

fn to_f32(w: &[f64], scale: f64) -> Vec<f32> {
    w.iter().map(|&x| (x * scale) as f32).collect()
}

fn random_vector(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// Calls the operator and checks the shape and finiteness of its answer.
fn apply<E, Op>(
    op: &mut Op,
    vectors: &[Vec<f32>],
    n: usize,
    calls: &mut u32,
) -> Result<Vec<Vec<f32>>, CurvatureError<E>>
where
    E: std::error::Error + 'static,
    Op: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, E>,
{
    *calls += 1;
    let call = *calls;
    let out = op(vectors).map_err(|source| CurvatureError::Operator { call, source })?;
    let bad_len = out.iter().map(Vec::len).find(|&l| l != n);
    if out.len() != vectors.len() || bad_len.is_some() {
        return Err(CurvatureError::OperatorShape {
            call,
            expected_vectors: vectors.len(),
            got_vectors: out.len(),
            expected_len: n,
            got_len: bad_len.unwrap_or(n),
        });
    }
    if out.iter().flatten().any(|x| !x.is_finite()) {
        return Err(CurvatureError::NonfiniteProduct { call });
    }
    Ok(out)
}

fn check_start<E: std::error::Error + 'static>(
    start: &[Vec<f32>],
    n: usize,
) -> Result<(), CurvatureError<E>> {
    match start.iter().position(|v| v.len() != n) {
        Some(index) => Err(CurvatureError::StartVectorLen {
            index,
            expected_len: n,
            got_len: start[index].len(),
        }),
        None => Ok(()),
    }
}

/// Builds `count` orthonormal vectors from `start` (previous eigenvectors): with more start
/// vectors than slots, slot c gets the sum of vectors c, c+count, …; missing or dependent
/// slots get random vectors.
fn initial_block(
    start: &[Vec<f32>],
    count: usize,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<f32>> {
    let mut raw: Vec<Vec<f64>> = vec![vec![0.0; n]; count];
    for (i, s) in start.iter().enumerate() {
        for (x, &y) in raw[i % count].iter_mut().zip(s) {
            *x += f64::from(y);
        }
    }
    let mut block: Vec<Vec<f32>> = Vec::with_capacity(count);
    for mut w in raw {
        for attempt in 0..4 {
            let before = norm_f64(&w);
            let mut sink = vec![0.0; block.len()];
            cgs2(block.iter().map(Vec::as_slice), &mut w, &mut sink);
            let after = norm_f64(&w);
            if after > 1e-8 * before.max(f64::MIN_POSITIVE) && after > 0.0 {
                block.push(to_f32(&w, 1.0 / after));
                break;
            }
            if attempt == 3 || block.len() >= n {
                break;
            }
            w = random_vector(rng, n);
        }
    }
    block
}

// ---------------------------------------------------------------------------------------------
// Eigenpairs.

/// Which end of the spectrum to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// λ_1 ≥ λ_2 ≥ … (sharpness: the top of the spectrum).
    #[default]
    LargestAlgebraic,
    /// λ_1 ≤ λ_2 ≤ … (the most negative curvature).
    SmallestAlgebraic,
    /// |λ_1| ≥ |λ_2| ≥ … (what power iteration finds).
    LargestMagnitude,
}

impl Which {
    /// Sort key: smaller = wanted first.
    fn key(self, lambda: f64) -> f64 {
        match self {
            Which::LargestAlgebraic => -lambda,
            Which::SmallestAlgebraic => lambda,
            Which::LargestMagnitude => -lambda.abs(),
        }
    }

    fn order(self, values: &[f64]) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..values.len()).collect();
        idx.sort_by(|&i, &j| self.key(values[i]).total_cmp(&self.key(values[j])));
        idx
    }
}

/// Options of [`lanczos`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanczosOptions {
    /// Eigenpairs wanted.
    pub k: usize,
    /// Vectors per operator call. 1 is classic Lanczos (fewest products); `k` batches better
    /// and uses all k warm-start vectors as the start block.
    pub block_size: usize,
    /// Basis vectors held (memory: `max_basis · n · 4` bytes); a thick restart keeps the best
    /// Ritz vectors when it fills. Must be ≥ `k + 2·block_size` (or ≥ n).
    pub max_basis: usize,
    /// Cap on Hessian-vector products (the final residual check not included).
    pub max_matvecs: usize,
    /// Converged when ‖Hv − λv‖ ≤ `rel_tolerance` · max|θ| for each wanted pair, where max|θ|
    /// is the largest |Ritz value| (an estimate of ‖H‖).
    pub rel_tolerance: f64,
    pub which: Which,
    /// Seed of the random start and deflation vectors.
    pub seed: u64,
    /// Apply H once more to the final vectors and report true residuals (and Rayleigh
    /// quotients as eigenvalues) instead of the Lanczos estimates. Costs k products.
    pub verify_residuals: bool,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        Self {
            k: 1,
            block_size: 1,
            max_basis: 40,
            max_matvecs: 500,
            rel_tolerance: 1e-4,
            which: Which::LargestAlgebraic,
            seed: 0,
            verify_residuals: true,
        }
    }
}

/// Eigenpairs from [`lanczos`], wanted end first (rank 0 = largest for
/// [`Which::LargestAlgebraic`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EigenResult {
    pub eigenvalues: Vec<f64>,
    /// Unit vectors, same order as `eigenvalues`; pass them back as the next warm start.
    pub eigenvectors: Vec<Vec<f32>>,
    /// ‖Hv − λv‖ per pair (true residuals, or Lanczos estimates without `verify_residuals`).
    pub residual_norms: Vec<f64>,
    /// Operator calls of the iteration proper.
    pub iterations: u32,
    /// Hessian-vector products, all calls included.
    pub matvecs: u64,
    pub restarts: u32,
    /// Every residual within the relative tolerance.
    pub converged: bool,
    /// The relative tolerance used.
    pub rel_tolerance: f64,
}

/// Top-k eigenpairs of the symmetric operator `op` on vectors of length `n`, by block Lanczos
/// with full reorthogonalisation (classical Gram–Schmidt twice against the whole basis) and
/// thick restart. `start`: earlier eigenvectors to warm-start from (may be empty).
///
/// The projected matrix T = QᵀHQ is kept dense: each column is filled from the projections of
/// H·q_c, which also makes restarts (T becomes diagonal plus a coupling block) uniform.
/// Convergence is checked each call from the Lanczos residual estimate ‖E z‖ (E: coupling of
/// the next block), which costs no products. When the residual of a new direction vanishes
/// (an invariant subspace, e.g. an exact warm start), a random orthogonal vector replaces it.
// One iteration (expand, project, check, restart) shares a dozen pieces of state; split into
// functions it would pass them all around and read worse than the algorithm as written.
#[allow(clippy::too_many_lines)]
pub fn lanczos<E, Op>(
    mut op: Op,
    n: usize,
    start: &[Vec<f32>],
    opts: &LanczosOptions,
) -> Result<EigenResult, CurvatureError<E>>
where
    E: std::error::Error + 'static,
    Op: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, E>,
{
    let LanczosOptions {
        k,
        block_size,
        max_basis,
        max_matvecs,
        rel_tolerance,
        which,
        seed,
        verify_residuals,
    } = *opts;
    if n == 0 || k == 0 || k > n {
        return Err(CurvatureError::InvalidOption {
            option: "k",
            constraint: "in 1..=n",
        });
    }
    if block_size == 0 {
        return Err(CurvatureError::InvalidOption {
            option: "block_size",
            constraint: "≥ 1",
        });
    }
    let cap = max_basis.min(n);
    if cap < n && cap < k + 2 * block_size {
        return Err(CurvatureError::InvalidOption {
            option: "max_basis",
            constraint: "≥ k + 2·block_size, or ≥ n",
        });
    }
    if !(rel_tolerance.is_finite() && rel_tolerance > 0.0) {
        return Err(CurvatureError::InvalidOption {
            option: "rel_tolerance",
            constraint: "> 0",
        });
    }
    check_start(start, n)?;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let b = block_size.min(cap);
    let mut basis = initial_block(start, b, n, &mut rng);
    // t[i * cap + c] = ⟨q_i, H q_c⟩.
    let mut t = vec![0.0; cap * cap];
    let mut computed = 0; // columns whose image H·q_c is known: basis[..computed]
    let (mut calls, mut matvecs, mut restarts) = (0u32, 0u64, 0u32);

    loop {
        let active = &basis[computed..];
        if active.is_empty() {
            break; // basis spans the whole space
        }
        let images = apply(&mut op, active, n, &mut calls)?;
        matvecs += active.len() as u64;
        let m = basis.len();

        // Project each image on the whole basis: column c of T, plus a residual.
        let mut residuals = Vec::with_capacity(images.len());
        for (j, img) in images.iter().enumerate() {
            let c = computed + j;
            let mut w: Vec<f64> = img.iter().map(|&x| f64::from(x)).collect();
            // ‖H q_c‖: the scale against which a vanishing residual is judged.
            let image_norm = norm_f64(&w);
            let mut h = vec![0.0; m];
            cgs2(basis.iter().map(Vec::as_slice), &mut w, &mut h);
            for (i, hi) in h.iter().enumerate() {
                t[i * cap + c] = *hi;
            }
            residuals.push((c, image_norm, w));
        }
        computed = m;

        // Orthonormalise the residuals into the next block; `coupling[r][c]` = ⟨q_new_r, H q_c⟩.
        let mut next: Vec<Vec<f32>> = Vec::new();
        let mut coupling: Vec<Vec<f64>> = Vec::new();
        for (c, image_norm, mut w) in residuals {
            let mut h = vec![0.0; m + next.len()];
            cgs2(
                basis.iter().chain(next.iter()).map(Vec::as_slice),
                &mut w,
                &mut h,
            );
            for (i, hi) in h[..m].iter().enumerate() {
                t[i * cap + c] += hi;
            }
            for (row, hi) in coupling.iter_mut().zip(&h[m..]) {
                row[c] += hi;
            }
            if m + next.len() >= n {
                continue; // no room: the residual can only be rounding noise
            }
            let beta = norm_f64(&w);
            let mut row = vec![0.0; cap];
            if beta > 1e-10 * image_norm && beta > 0.0 {
                row[c] = beta;
                next.push(to_f32(&w, 1.0 / beta));
            } else {
                // Invariant subspace: continue with a random direction (no coupling to H q_c).
                let mut r = random_vector(&mut rng, n);
                let mut sink = vec![0.0; m + next.len()];
                cgs2(
                    basis.iter().chain(next.iter()).map(Vec::as_slice),
                    &mut r,
                    &mut sink,
                );
                let nr = norm_f64(&r);
                if nr == 0.0 {
                    continue;
                }
                next.push(to_f32(&r, 1.0 / nr));
            }
            coupling.push(row);
        }

        // Rayleigh–Ritz on the computed columns.
        let ritz = ritz_pairs(&t, cap, m, &coupling, which);
        let scale = ritz.values.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let wanted = &ritz.order[..k.min(m)];
        let converged = m >= k
            && wanted
                .iter()
                .all(|&i| ritz.residuals[i] <= rel_tolerance * scale);
        let exhausted = next.is_empty();
        let out_of_budget = matvecs + next.len() as u64 > max_matvecs as u64;
        if converged || exhausted || out_of_budget {
            let vectors: Vec<Vec<f32>> = wanted
                .iter()
                .map(|&i| combine(&basis[..m], &ritz.vectors, m, i))
                .collect();
            let values: Vec<f64> = wanted.iter().map(|&i| ritz.values[i]).collect();
            let residuals: Vec<f64> = wanted.iter().map(|&i| ritz.residuals[i]).collect();
            let mut result = EigenResult {
                eigenvalues: values,
                eigenvectors: vectors,
                residual_norms: residuals,
                iterations: calls,
                matvecs,
                restarts,
                converged: m >= k && (converged || exhausted),
                rel_tolerance,
            };
            if verify_residuals {
                verify(&mut op, n, &mut calls, &mut result, which)?;
            }
            return Ok(result);
        }

        if m + next.len() <= cap {
            // Append the next block; its coupling rows become rows of T.
            for (r, row) in coupling.iter().enumerate() {
                for (c, v) in row.iter().enumerate().take(m) {
                    t[(m + r) * cap + c] = *v;
                }
            }
            basis.extend(next);
        } else {
            // Thick restart: keep the best `keep` Ritz vectors, then the next block.
            restarts += 1;
            let keep = ((cap - b) / 2).max(k).min(m).min(cap - next.len());
            let kept: Vec<usize> = ritz.order[..keep].to_vec();
            let mut new_basis: Vec<Vec<f32>> = kept
                .iter()
                .map(|&i| combine(&basis[..m], &ritz.vectors, m, i))
                .collect();
            t.iter_mut().for_each(|x| *x = 0.0);
            for (j, &i) in kept.iter().enumerate() {
                t[j * cap + j] = ritz.values[i];
                // Coupling of the next block to the kept Ritz vector: E z_i.
                for (r, row) in coupling.iter().enumerate() {
                    let e: f64 = (0..m).map(|c| row[c] * ritz.vectors[c * m + i]).sum();
                    t[(keep + r) * cap + j] = e;
                }
            }
            new_basis.extend(next);
            basis = new_basis;
            computed = keep;
        }
    }
    // Only reached when the start block was empty (n exhausted at once), which the option
    // checks rule out; report nothing converged rather than panic.
    Ok(EigenResult {
        eigenvalues: Vec::new(),
        eigenvectors: Vec::new(),
        residual_norms: Vec::new(),
        iterations: calls,
        matvecs,
        restarts,
        converged: false,
        rel_tolerance,
    })
}

struct Ritz {
    values: Vec<f64>,
    /// m×m row-major, columns are the eigenvectors z_i of the projected matrix.
    vectors: Vec<f64>,
    residuals: Vec<f64>,
    /// Indices in the wanted order.
    order: Vec<usize>,
}

/// Ritz pairs of T[..m, ..m]; residual estimate ‖H Q z − θ Q z‖ = ‖[(T − S) z; E z]‖ where S is
/// the symmetrised T that was diagonalised and E the coupling to the next block.
fn ritz_pairs(t: &[f64], cap: usize, m: usize, coupling: &[Vec<f64>], which: Which) -> Ritz {
    let mut s = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            s[i * m + j] = t[i * cap + j];
        }
    }
    let (values, vectors) = symmetric_eigen(&s, m);
    let residuals = (0..m)
        .map(|i| {
            let z = |c: usize| vectors[c * m + i];
            let mut sq = 0.0;
            for row in 0..m {
                // (T z)_row − θ z_row, with T unsymmetrised.
                let tz: f64 = (0..m).map(|c| t[row * cap + c] * z(c)).sum();
                sq += (tz - values[i] * z(row)).powi(2);
            }
            for row in coupling {
                let ez: f64 = (0..m).map(|c| row[c] * z(c)).sum();
                sq += ez * ez;
            }
            sq.sqrt()
        })
        .collect();
    let order = which.order(&values);
    Ritz {
        values,
        vectors,
        residuals,
        order,
    }
}

/// Ritz vector Q z_i (normalised), accumulated in f64.
fn combine(basis: &[Vec<f32>], z: &[f64], m: usize, i: usize) -> Vec<f32> {
    let n = basis.first().map_or(0, Vec::len);
    let mut y = vec![0.0f64; n];
    for (c, q) in basis.iter().enumerate() {
        let zc = z[c * m + i];
        for (yi, &qi) in y.iter_mut().zip(q) {
            *yi += zc * f64::from(qi);
        }
    }
    let ny = norm_f64(&y);
    to_f32(&y, if ny > 0.0 { 1.0 / ny } else { 1.0 })
}

/// One more operator call on the result's vectors: Rayleigh quotients and true residuals.
fn verify<E, Op>(
    op: &mut Op,
    n: usize,
    calls: &mut u32,
    result: &mut EigenResult,
    which: Which,
) -> Result<(), CurvatureError<E>>
where
    E: std::error::Error + 'static,
    Op: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, E>,
{
    if result.eigenvectors.is_empty() {
        return Ok(());
    }
    let images = apply(op, &result.eigenvectors, n, calls)?;
    result.matvecs += result.eigenvectors.len() as u64;
    let mut scale = 0.0f64;
    for ((y, hy), (lambda, res)) in result.eigenvectors.iter().zip(&images).zip(
        result
            .eigenvalues
            .iter_mut()
            .zip(result.residual_norms.iter_mut()),
    ) {
        let yy: f64 = y.iter().map(|&x| f64::from(x).powi(2)).sum();
        let yhy: f64 = y
            .iter()
            .zip(hy)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        *lambda = yhy / yy;
        *res = y
            .iter()
            .zip(hy)
            .map(|(&a, &b)| (f64::from(b) - *lambda * f64::from(a)).powi(2))
            .sum::<f64>()
            .sqrt()
            / yy.sqrt();
        scale = scale.max(lambda.abs());
    }
    // Rayleigh quotients can reorder near-degenerate pairs.
    let order = which.order(&result.eigenvalues);
    let permute = |v: &mut Vec<f64>| *v = order.iter().map(|&i| v[i]).collect();
    permute(&mut result.eigenvalues);
    permute(&mut result.residual_norms);
    result.eigenvectors = order
        .iter()
        .map(|&i| result.eigenvectors[i].clone())
        .collect();
    result.converged = result.converged
        && result
            .residual_norms
            .iter()
            .all(|&r| r <= result.rel_tolerance * scale);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Trace.

/// Options of [`hutchinson_trace`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceOptions {
    pub probes: usize,
    /// Probes per operator call. The estimate does not depend on it: probes are drawn in the
    /// same order from the same stream.
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for TraceOptions {
    fn default() -> Self {
        Self {
            probes: 100,
            batch_size: 1,
            seed: 0,
        }
    }
}

/// A Hutchinson trace estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceEstimate {
    /// Mean of zᵀHz.
    pub estimate: f64,
    /// Sample standard deviation / √probes; `None` with a single probe.
    pub stderr: Option<f64>,
    pub probes: usize,
    pub iterations: u32,
}

/// tr H ≈ (1/N) Σ zᵀHz with Rademacher z (entries ±1, each bit of a ChaCha8 stream seeded with
/// `seed`; deterministic on every platform).
pub fn hutchinson_trace<E, Op>(
    mut op: Op,
    n: usize,
    opts: &TraceOptions,
) -> Result<TraceEstimate, CurvatureError<E>>
where
    E: std::error::Error + 'static,
    Op: FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, E>,
{
    if opts.probes == 0 {
        return Err(CurvatureError::InvalidOption {
            option: "probes",
            constraint: "≥ 1",
        });
    }
    if opts.batch_size == 0 {
        return Err(CurvatureError::InvalidOption {
            option: "batch_size",
            constraint: "≥ 1",
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut samples = Vec::with_capacity(opts.probes);
    let mut calls = 0;
    while samples.len() < opts.probes {
        let count = opts.batch_size.min(opts.probes - samples.len());
        let probes: Vec<Vec<f32>> = (0..count).map(|_| rademacher(&mut rng, n)).collect();
        let images = apply(&mut op, &probes, n, &mut calls)?;
        for (z, hz) in probes.iter().zip(&images) {
            samples.push(
                z.iter()
                    .zip(hz)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum(),
            );
        }
    }
    let (estimate, stderr) = mean_and_stderr(&samples);
    Ok(TraceEstimate {
        estimate,
        stderr,
        probes: samples.len(),
        iterations: calls,
    })
}

fn rademacher(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    let mut z = Vec::with_capacity(n);
    while z.len() < n {
        let bits = rng.next_u64();
        let take = (n - z.len()).min(64);
        z.extend((0..take).map(|i| if (bits >> i) & 1 == 1 { 1.0f32 } else { -1.0 }));
    }
    z
}

/// Mean and standard error of the mean (`None` for fewer than two samples).
fn mean_and_stderr(samples: &[f64]) -> (f64, Option<f64>) {
    let count = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / count;
    if samples.len() < 2 {
        return (mean, None);
    }
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (count - 1.0);
    (mean, Some((var / count).sqrt()))
}

// ---------------------------------------------------------------------------------------------
// ε-sharpness.

/// ε-sharpness of Keskar et al. (2017), in percent:
/// `(max_{y ∈ C_ε} L(x + y) − L(x)) / (1 + L(x)) × 100`.
///
/// `max_loss_in_ball` is the largest loss the caller found in the box C_ε around x (Keskar et
/// al. maximise over a box of half-width ε·(|x_i| + 1) per coordinate, approximately, with a
/// few L-BFGS-B steps); the search, and so ε, belong to the caller, which records ε with the
/// number. NaN inputs give NaN.
pub fn eps_sharpness(max_loss_in_ball: f64, loss: f64) -> f64 {
    (max_loss_in_ball - loss) / (1.0 + loss) * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A dense symmetric matrix Q diag(λ) Qᵀ with a random orthogonal Q.
    struct Dense {
        n: usize,
        a: Vec<f64>,
    }

    impl Dense {
        fn with_spectrum(lambdas: &[f64], seed: u64) -> Self {
            let n = lambdas.len();
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut q: Vec<Vec<f64>> = Vec::new();
            while q.len() < n {
                let mut w = random_vector(&mut rng, n);
                for _ in 0..2 {
                    for qi in &q {
                        let h: f64 = qi.iter().zip(&w).map(|(a, b)| a * b).sum();
                        w.iter_mut().zip(qi).for_each(|(x, y)| *x -= h * y);
                    }
                }
                let nw = norm_f64(&w);
                q.push(w.iter().map(|x| x / nw).collect());
            }
            let mut a = vec![0.0; n * n];
            for (l, qk) in lambdas.iter().zip(&q) {
                for i in 0..n {
                    for j in 0..n {
                        a[i * n + j] += l * qk[i] * qk[j];
                    }
                }
            }
            Self { n, a }
        }

        fn op(&self) -> impl FnMut(&[Vec<f32>]) -> Result<Vec<Vec<f32>>, Infallible> + '_ {
            move |vs: &[Vec<f32>]| {
                Ok(vs
                    .iter()
                    .map(|v| {
                        (0..self.n)
                            .map(|i| {
                                let row = &self.a[i * self.n..(i + 1) * self.n];
                                row.iter()
                                    .zip(v)
                                    .map(|(a, &x)| a * f64::from(x))
                                    .sum::<f64>() as f32
                            })
                            .collect()
                    })
                    .collect())
            }
        }

        /// self + eps·S, S symmetric with entries uniform in (−1, 1)/√n (‖S‖ ≈ 2).
        fn perturbed(&self, eps: f64, seed: u64) -> Self {
            let n = self.n;
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut a = self.a.clone();
            let scale = eps / (n as f64).sqrt();
            for i in 0..n {
                for j in 0..=i {
                    let x = scale * rng.random_range(-1.0..1.0);
                    a[i * n + j] += x;
                    if i != j {
                        a[j * n + i] += x;
                    }
                }
            }
            Self { n, a }
        }

        fn trace(&self) -> f64 {
            (0..self.n).map(|i| self.a[i * self.n + i]).sum()
        }
    }

    /// 30 eigenvalues: top 10, a near-degenerate pair 7 / 6.99, negatives down to −12.
    fn spectrum30() -> Vec<f64> {
        let mut l = vec![10.0, 7.0, 6.99, 5.0];
        l.extend((0..20).map(|i| 4.0 - 0.2 * f64::from(i)));
        l.extend([-1.0, -2.0, -3.0, -5.0, -8.0, -12.0]);
        l
    }

    fn rel_err(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1.0)
    }

    #[test]
    fn jacobi_diagonalises() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for m in [1usize, 2, 3, 7, 25] {
            let mut a = vec![0.0; m * m];
            for i in 0..m {
                for j in 0..=i {
                    let x = rng.random_range(-1.0..1.0);
                    a[i * m + j] = x;
                    a[j * m + i] = x;
                }
            }
            let (vals, vecs) = symmetric_eigen(&a, m);
            assert!(vals.windows(2).all(|w| w[0] <= w[1]));
            for j in 0..m {
                for i in 0..m {
                    let av: f64 = (0..m).map(|c| a[i * m + c] * vecs[c * m + j]).sum();
                    assert!((av - vals[j] * vecs[i * m + j]).abs() < 1e-12, "m={m}");
                }
                for j2 in 0..m {
                    let d: f64 = (0..m).map(|i| vecs[i * m + j] * vecs[i * m + j2]).sum();
                    assert!((d - f64::from(u8::from(j == j2))).abs() < 1e-12);
                }
            }
        }
        let (vals, _) = symmetric_eigen(&[2.0, 0.0, 0.0, -1.0], 2);
        assert_eq!(vals, vec![-1.0, 2.0]);
        assert_eq!(symmetric_eigen(&[], 0), (vec![], vec![]));
    }

    #[test]
    fn lanczos_top_k_with_near_degenerate_pair() {
        let h = Dense::with_spectrum(&spectrum30(), 1);
        let opts = LanczosOptions {
            k: 3,
            rel_tolerance: 1e-5,
            ..LanczosOptions::default()
        };
        let r = lanczos(h.op(), h.n, &[], &opts).unwrap();
        assert!(r.converged, "{r:?}");
        for (got, want) in r.eigenvalues.iter().zip([10.0, 7.0, 6.99]) {
            assert!(rel_err(*got, want) < 1e-5, "{:?}", r.eigenvalues);
        }
        assert!(r.residual_norms.iter().all(|&x| x < 1e-4 * 12.0));
        for v in &r.eigenvectors {
            let norm = v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        let d: f64 = r.eigenvectors[1]
            .iter()
            .zip(&r.eigenvectors[2])
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum();
        assert!(
            d.abs() < 1e-4,
            "near-degenerate eigenvectors stay orthogonal"
        );
    }

    #[test]
    fn lanczos_other_ends_and_blocks() {
        let h = Dense::with_spectrum(&spectrum30(), 2);
        let small = LanczosOptions {
            k: 2,
            which: Which::SmallestAlgebraic,
            rel_tolerance: 1e-5,
            ..LanczosOptions::default()
        };
        let r = lanczos(h.op(), h.n, &[], &small).unwrap();
        assert!(r.converged);
        assert!(rel_err(r.eigenvalues[0], -12.0) < 1e-5 && rel_err(r.eigenvalues[1], -8.0) < 1e-5);
        let mag = LanczosOptions {
            k: 3,
            which: Which::LargestMagnitude,
            block_size: 3,
            ..small
        };
        let r = lanczos(h.op(), h.n, &[], &mag).unwrap();
        assert!(r.converged);
        for (got, want) in r.eigenvalues.iter().zip([-12.0, 10.0, -8.0]) {
            assert!(rel_err(*got, want) < 1e-5, "{:?}", r.eigenvalues);
        }
    }

    /// 300×300, decaying spectrum; a small basis forces thick restarts.
    fn spectrum300() -> Vec<f64> {
        (0..300)
            .map(|i| {
                if i % 7 == 3 {
                    -0.5 * 0.97f64.powi(i)
                } else {
                    20.0 * 0.97f64.powi(i)
                }
            })
            .collect()
    }

    fn top(l: &[f64], k: usize) -> Vec<f64> {
        let mut s = l.to_vec();
        s.sort_by(|a, b| b.total_cmp(a));
        s.truncate(k);
        s
    }

    #[test]
    fn lanczos_with_restarts_matches_known_spectrum() {
        let spec = spectrum300();
        let h = Dense::with_spectrum(&spec, 3);
        let opts = LanczosOptions {
            k: 4,
            max_basis: 12,
            max_matvecs: 2000,
            rel_tolerance: 1e-5,
            ..LanczosOptions::default()
        };
        let r = lanczos(h.op(), h.n, &[], &opts).unwrap();
        assert!(r.converged, "{r:?}");
        assert!(r.restarts > 0);
        for (got, want) in r.eigenvalues.iter().zip(top(&spec, 4)) {
            assert!(
                rel_err(*got, want) < 1e-4,
                "{:?} vs {:?}",
                r.eigenvalues,
                top(&spec, 4)
            );
        }
    }

    #[test]
    fn warm_start_converges_in_fewer_iterations() {
        let spec = spectrum300();
        let h = Dense::with_spectrum(&spec, 4);
        let opts = LanczosOptions {
            k: 3,
            block_size: 3,
            max_basis: 30,
            max_matvecs: 3000,
            rel_tolerance: 1e-5,
            ..LanczosOptions::default()
        };
        let cold = lanczos(h.op(), h.n, &[], &opts).unwrap();
        assert!(cold.converged);
        // The next step's Hessian: H plus a small random symmetric perturbation, which moves
        // both eigenvalues and eigenvectors.
        let h2 = h.perturbed(0.05, 40);
        let warm = lanczos(h2.op(), h2.n, &cold.eigenvectors, &opts).unwrap();
        let cold2 = lanczos(h2.op(), h2.n, &[], &opts).unwrap();
        assert!(warm.converged && cold2.converged);
        assert!(
            warm.iterations < cold2.iterations,
            "warm {} vs cold {}",
            warm.iterations,
            cold2.iterations
        );
        for (a, b) in warm.eigenvalues.iter().zip(&cold2.eigenvalues) {
            assert!(rel_err(*a, *b) < 1e-4);
        }
        // Classic (block 1) Lanczos from the summed warm vectors also gains.
        let single = LanczosOptions {
            block_size: 1,
            ..opts
        };
        let warm1 = lanczos(h2.op(), h2.n, &cold.eigenvectors, &single).unwrap();
        let cold1 = lanczos(h2.op(), h2.n, &[], &single).unwrap();
        assert!(warm1.converged && cold1.converged);
        assert!(
            warm1.matvecs < cold1.matvecs,
            "{} vs {}",
            warm1.matvecs,
            cold1.matvecs
        );
    }

    #[test]
    fn exact_warm_start_hits_invariant_subspace() {
        let h = Dense::with_spectrum(&spectrum30(), 6);
        let opts = LanczosOptions {
            k: 3,
            block_size: 3,
            rel_tolerance: 1e-5,
            ..Default::default()
        };
        let first = lanczos(h.op(), h.n, &[], &opts).unwrap();
        let again = lanczos(h.op(), h.n, &first.eigenvectors, &opts).unwrap();
        assert!(again.converged);
        assert!(again.iterations <= 2, "{}", again.iterations);
    }

    #[test]
    fn lanczos_unconverged_is_reported() {
        let h = Dense::with_spectrum(&spectrum300(), 7);
        let opts = LanczosOptions {
            k: 3,
            max_matvecs: 5,
            rel_tolerance: 1e-9,
            ..Default::default()
        };
        let r = lanczos(h.op(), h.n, &[], &opts).unwrap();
        assert!(!r.converged);
        assert_eq!(r.eigenvalues.len(), 3);
        assert!(r.matvecs <= 5 + 3);
    }

    #[test]
    fn hutchinson_within_three_stderr() {
        let h = Dense::with_spectrum(&spectrum30(), 9);
        let exact = h.trace();
        let est = hutchinson_trace(
            h.op(),
            h.n,
            &TraceOptions {
                probes: 2000,
                batch_size: 7,
                seed: 11,
            },
        )
        .unwrap();
        let se = est.stderr.unwrap();
        assert!(
            (est.estimate - exact).abs() <= 3.0 * se,
            "{est:?} vs {exact}"
        );
        assert_eq!(est.probes, 2000);
        assert_eq!(est.iterations, 2000u32.div_ceil(7));
        // Batch size does not change the draws; the seed does.
        let one = hutchinson_trace(
            h.op(),
            h.n,
            &TraceOptions {
                probes: 50,
                batch_size: 1,
                seed: 3,
            },
        )
        .unwrap();
        let many = hutchinson_trace(
            h.op(),
            h.n,
            &TraceOptions {
                probes: 50,
                batch_size: 16,
                seed: 3,
            },
        )
        .unwrap();
        assert_eq!(one.estimate, many.estimate);
        let other = hutchinson_trace(
            h.op(),
            h.n,
            &TraceOptions {
                probes: 50,
                batch_size: 1,
                seed: 4,
            },
        )
        .unwrap();
        assert_ne!(one.estimate, other.estimate);
        // Many seeds: coverage of ±3 stderr is essentially always.
        let misses = (0..40)
            .filter(|&s| {
                let e = hutchinson_trace(
                    h.op(),
                    h.n,
                    &TraceOptions {
                        probes: 200,
                        batch_size: 8,
                        seed: s,
                    },
                )
                .unwrap();
                (e.estimate - exact).abs() > 3.0 * e.stderr.unwrap()
            })
            .count();
        assert!(misses <= 2, "{misses} of 40 outside 3 stderr");
    }

    #[test]
    fn rademacher_is_balanced_and_deterministic() {
        let mut r1 = ChaCha8Rng::seed_from_u64(1);
        let mut r2 = ChaCha8Rng::seed_from_u64(1);
        let a = rademacher(&mut r1, 10_001);
        assert_eq!(a, rademacher(&mut r2, 10_001));
        assert!(a.iter().all(|&x| x == 1.0 || x == -1.0));
        let s: f32 = a.iter().sum();
        assert!(s.abs() < 400.0);
        assert_eq!(mean_and_stderr(&[2.0]), (2.0, None));
        assert_eq!(mean_and_stderr(&[1.0, 3.0]), (2.0, Some(1.0)));
    }

    #[test]
    fn eps_sharpness_formula() {
        assert_eq!(eps_sharpness(1.5, 1.0), 25.0);
        assert_eq!(eps_sharpness(1.0, 1.0), 0.0);
        assert!(eps_sharpness(f64::NAN, 1.0).is_nan());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("device lost")]
    struct DeviceLost;

    #[test]
    fn operator_errors_are_reported() {
        let failing = |_: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, DeviceLost> { Err(DeviceLost) };
        let err = lanczos(failing, 4, &[], &LanczosOptions::default()).unwrap_err();
        assert!(matches!(err, CurvatureError::Operator { call: 1, .. }));
        let short = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, DeviceLost> {
            Ok(vec![vec![0.0; 3]; vs.len()])
        };
        let err = hutchinson_trace(short, 4, &TraceOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            CurvatureError::OperatorShape {
                expected_len: 4,
                got_len: 3,
                ..
            }
        ));
        let nan = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, DeviceLost> {
            Ok(vec![vec![f32::NAN; 4]; vs.len()])
        };
        let err = lanczos(nan, 4, &[], &LanczosOptions::default()).unwrap_err();
        assert!(matches!(err, CurvatureError::NonfiniteProduct { call: 1 }));
        let zero = |vs: &[Vec<f32>]| -> Result<Vec<Vec<f32>>, DeviceLost> {
            Ok(vec![vec![0.0; 4]; vs.len()])
        };
        let bad_start = lanczos(zero, 4, &[vec![1.0; 3]], &LanczosOptions::default()).unwrap_err();
        assert!(matches!(
            bad_start,
            CurvatureError::StartVectorLen {
                index: 0,
                expected_len: 4,
                got_len: 3
            }
        ));
        let bad_k = lanczos(
            zero,
            4,
            &[],
            &LanczosOptions {
                k: 5,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(bad_k.to_string(), "invalid option k: must be in 1..=n");
        // The zero operator converges to λ = 0.
        let r = lanczos(
            zero,
            4,
            &[],
            &LanczosOptions {
                k: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(r.converged);
        assert_eq!(r.eigenvalues, vec![0.0, 0.0]);
    }
}
