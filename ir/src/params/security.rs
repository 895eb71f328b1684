//! The 128-bit security curve of the keys (Concrete's fit for a 64-bit modulus).

use super::TfheParams;

const SEC_A: f64 = -0.025696778711484593;
const SEC_B: f64 = 2.675931372549016;

/// Smallest Gaussian std (torus) giving 128-bit security at dimension `d`.
pub fn min_secure_std(d: usize) -> f64 {
    (SEC_A * d as f64 + SEC_B).max(-62.0).exp2()
}

/// Whether `std` at dimension `d` meets the 128-bit curve.
pub fn is_secure(d: usize, std: f64) -> bool {
    d >= 450 && std.log2() >= (SEC_A * d as f64 + SEC_B).max(-62.0) - 1e-9
}

/// Rough security estimate: 128 bits scaled by how far the dimension exceeds the minimal
/// one for this noise on the 128-bit curve (LWE hardness grows about linearly in `d`).
pub fn estimated_security_bits(d: usize, std: f64) -> f64 {
    let d_min = (std.log2().max(-62.0) - SEC_B) / SEC_A;
    128.0 * d as f64 / d_min.max(1.0)
}

impl TfheParams {
    /// Noise std of fresh input encryptions (the 128-bit noise of [`TfheParams::input_dimension`]).
    pub fn input_noise_std(&self) -> f64 {
        self.rounding_bootstrap().glwe_noise_std
    }

    /// Every key meets the 128-bit curve (and a rounding key is a proper prefix-sized
    /// GLWE key of the main one).
    pub fn is_secure(&self) -> bool {
        let r = self.rounding_bootstrap();
        is_secure(self.lwe_dimension, self.lwe_noise_std)
            && is_secure(self.big_dimension(), self.glwe_noise_std)
            && r.big_dimension() <= self.big_dimension()
            && is_secure(r.big_dimension(), r.glwe_noise_std)
    }

    /// Security estimate of the weakest key, in bits.
    pub fn security_bits(&self) -> f64 {
        let r = self.rounding_bootstrap();
        estimated_security_bits(self.lwe_dimension, self.lwe_noise_std)
            .min(estimated_security_bits(self.big_dimension(), self.glwe_noise_std))
            .min(estimated_security_bits(r.big_dimension(), r.glwe_noise_std))
    }
}
