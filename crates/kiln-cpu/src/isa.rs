//! Run-time choice of instruction set: one binary runs AVX-512 code where the CPU has it,
//! AVX2 + FMA code where it has those, and baseline x86-64 (or the target's own) elsewhere.
//!
//! [`multiversion!`] compiles one kernel body three times under `#[target_feature]` and picks
//! a build by an [`Isa`] argument. An `Isa` other than the baseline exists only where the CPU
//! was found to have it, which is what makes calling the wider builds sound. The builds give
//! the same bits: Rust never fuses or reorders `f32` operations on its own, so the compiler
//! can only widen the lanes.

/// An instruction set this CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa(Level);

#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

impl Isa {
    /// The widest instruction set this CPU has (the check is a cached load after the first).
    pub fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Isa(Level::Avx512);
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa(Level::Avx2);
            }
        }
        Isa(Level::Baseline)
    }

    /// Every instruction set this CPU has, the widest first: what tests run each build on.
    pub fn available() -> Vec<Isa> {
        let best = Isa::best().0;
        [Level::Avx512, Level::Avx2, Level::Baseline]
            .into_iter()
            .filter(|&l| l as u8 <= best as u8)
            .map(Isa)
            .collect()
    }

    #[doc(hidden)]
    pub fn level(self) -> Level {
        self.0
    }
}

/// `fn name(isa: Isa, args...)`: the body compiled for AVX-512F, for AVX2 + FMA and for the
/// baseline, run in the build `isa` names.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $crate::isa::multiversion! {
            $(#[$meta])* $vis fn $name($($arg: $ty),*) -> () $body
        }
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::isa::Isa, $($arg: $ty),*) -> $ret {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn baseline($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            #[allow(clippy::too_many_arguments)]
            fn avx512($($arg: $ty),*) -> $ret {
                baseline($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) -> $ret {
                baseline($($arg),*)
            }
            match isa.level() {
                // SAFETY: an `Isa` names AVX-512F only where the CPU was found to have it.
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Level::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: likewise AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                $crate::isa::Level::Avx2 => unsafe { avx2($($arg),*) },
                _ => baseline($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;
