//! Estimated server time of a parameter set's bootstraps and keyswitches (the constants
//! and their origin: [`crate::cost`]).

use super::TfheParams;

impl TfheParams {
    /// Estimated cost of one keyswitch + PBS, in milliseconds on one core of the development
    /// machine (see [`TfheParams::pbs_cost`] and [`TfheParams::ks_cost`]).
    pub fn cost(&self) -> f64 {
        self.pbs_cost() + self.ks_cost()
    }

    /// The bootstrap's part of [`TfheParams::cost`], as the runtime does it (batched blind
    /// rotations, 16 per pass over the bootstrap key): `n` CMuxes, each `(k+1)·ℓ` forward
    /// FFTs of size `N`, `(k+1)²·ℓ` products with the key, and `k+1` inverse FFTs with the
    /// rotation. Coefficients fitted on twelve measured sets (n=700..890, k=1..4,
    /// N=512..8192, 1 to 5 levels; `bootstrap_costs_for_the_cost_model` in
    /// `runtime/tests/keys.rs`), within 7% ([`crate::cost`]).
    pub fn pbs_cost(&self) -> f64 {
        crate::cost::pbs_ms(self.lwe_dimension, self.glwe_dimension, self.polynomial_size, self.pbs_level)
    }

    /// The keyswitch's part of [`TfheParams::cost`]: the runtime keyswitches up to 16
    /// ciphertexts in one pass over the key (`kN·ℓ_ks` rows of `n+1` words), so the cost is
    /// arithmetic: about 0.15 ns per key row word used, and a row is used for the signed
    /// digits that are not zero (a fraction `1 - 2^-b` of them, base `2^b`). Fitted on eight
    /// measured sets (`keyswitch_costs_for_the_cost_model`), within 13%.
    pub fn ks_cost(&self) -> f64 {
        crate::cost::ks_ms(
            self.lwe_dimension,
            self.glwe_dimension,
            self.polynomial_size,
            self.ks_level,
            self.ks_base_log,
        )
    }

    /// Relative cost of one keyswitch + rounding bootstrap (the main keyswitch, then the
    /// rounding key's bootstrap).
    pub fn round_cost(&self) -> f64 {
        self.rounding_bootstrap().pbs_cost() + self.ks_cost()
    }

    /// Estimated server time (ms on one core) of the bootstraps of `mix`: main ones with the
    /// main key, rounding ones with the rounding key, and the keyswitches of values under the
    /// input key ([`TfheParams::input_dimension`]) over that many coefficients only.
    pub fn mix_cost(&self, mix: &BootstrapMix) -> f64 {
        let short = mix.main_on_input_key + mix.rounding_on_input_key;
        let saved = 1.0 - self.input_dimension() as f64 / self.big_dimension() as f64;
        mix.main as f64 * self.cost() + mix.rounding as f64 * self.round_cost() - short as f64 * saved * self.ks_cost()
    }
}

/// The bootstraps of one inference, as the cost model counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BootstrapMix {
    /// Bootstraps with the main key (tables, max pooling).
    pub main: usize,
    /// Exact rounding's bootstraps.
    pub rounding: usize,
    /// Of `main`, those reading a value under the input key (`Circuit::on_input_key`).
    pub main_on_input_key: usize,
    /// Of `rounding`, those reading a value under the input key.
    pub rounding_on_input_key: usize,
}

impl BootstrapMix {
    /// The mix of a circuit's bootstraps.
    pub fn of(s: &crate::circuit::BootstrapStats) -> BootstrapMix {
        BootstrapMix {
            main: s.total() - s.rounding,
            rounding: s.rounding,
            main_on_input_key: s.tables_on_input_key,
            rounding_on_input_key: s.rounding_on_input_key,
        }
    }
}

/// `(main, rounding)` bootstraps, none of them reading under the input key.
impl From<(usize, usize)> for BootstrapMix {
    fn from((main, rounding): (usize, usize)) -> BootstrapMix {
        BootstrapMix { main, rounding, ..BootstrapMix::default() }
    }
}
