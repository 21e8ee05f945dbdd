//! What a run or a benchmark records of the machine it ran on: speed ratios differ between
//! processors of the same machine kind (AVX2 only, or AVX-512 too), so a figure without its
//! processor cannot be compared with another.

/// The processor, from `/proc/cpuinfo` (Linux), e.g. `Intel(R) Xeon(R) Processor (family 6
/// model 207; AVX2, AVX-512, AVX512_BF16, AMX)`; `None` where the OS does not say.
pub fn processor() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    Some(describe(&cpuinfo))
}

/// The nominal fp32 peak of `threads` cores, in GFLOP/s: the clock `/proc/cpuinfo` reports
/// times two fused multiply-adds per cycle at the widest vector the processor has (16 lanes
/// with AVX-512 on Intel, 8 with AVX2; Zen 4 runs AVX-512 on 256-bit units, so AMD counts 8).
/// A yardstick for the bench's "share of peak", not a measurement: turbo clocks and
/// processors with one AVX-512 unit per core make the real ceiling differ.
pub fn fp32_peak_gflops(threads: usize) -> Option<f64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    peak_of(&cpuinfo, threads)
}

/// The extensions the bench's figures depend on, as `/proc/cpuinfo` flags and how they are
/// named: the widest vectors Kiln's and PyTorch's kernels use, and the bf16 units PyTorch's
/// oneDNN uses for bf16 (`--precision bf16` would too).
const EXTENSIONS: [(&str, &str); 4] = [
    ("avx2", "AVX2"),
    ("avx512f", "AVX-512"),
    ("avx512_bf16", "AVX512_BF16"),
    ("amx_bf16", "AMX"),
];

/// One field of `/proc/cpuinfo`'s first processor.
fn field(cpuinfo: &str, key: &str) -> Option<String> {
    let first = cpuinfo.split("\n\n").next().unwrap_or("");
    first.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    })
}

fn has_flag(cpuinfo: &str, flag: &str) -> bool {
    field(cpuinfo, "flags").is_some_and(|flags| flags.split_whitespace().any(|f| f == flag))
}

/// [`processor`] from the text of `/proc/cpuinfo`: its first processor's model name, family,
/// model and the [`EXTENSIONS`] it has.
fn describe(cpuinfo: &str) -> String {
    let extensions: Vec<&str> = EXTENSIONS
        .iter()
        .filter(|(flag, _)| has_flag(cpuinfo, flag))
        .map(|(_, name)| *name)
        .collect();
    let extensions = if extensions.is_empty() {
        "no AVX2".to_string()
    } else {
        extensions.join(", ")
    };
    let name = field(cpuinfo, "model name").unwrap_or_else(|| "unknown processor".into());
    match (field(cpuinfo, "cpu family"), field(cpuinfo, "model")) {
        (Some(family), Some(model)) => {
            format!("{name} (family {family} model {model}; {extensions})")
        }
        _ => format!("{name} ({extensions})"),
    }
}

/// [`fp32_peak_gflops`] from the text of `/proc/cpuinfo`.
fn peak_of(cpuinfo: &str, threads: usize) -> Option<f64> {
    let mhz: f64 = field(cpuinfo, "cpu MHz")?.parse().ok()?;
    let intel = field(cpuinfo, "vendor_id").as_deref() == Some("GenuineIntel");
    let lanes = if has_flag(cpuinfo, "avx512f") && intel {
        16.0
    } else if has_flag(cpuinfo, "avx2") && has_flag(cpuinfo, "fma") {
        8.0
    } else {
        4.0
    };
    // Two FMA units, each a multiply and an add per lane.
    Some(threads as f64 * mhz / 1e3 * lanes * 2.0 * 2.0)
}

/// The process's peak resident set in MiB, where the OS reports it (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::{describe, peak_of};

    const XEON: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
                        model\t\t: 207\nmodel name\t: Intel(R) Xeon(R) Processor\n\
                        cpu MHz\t\t: 2299.998\n\
                        flags\t\t: fpu avx2 avx512f fma avx512_bf16 amx_bf16 amx_tile\n\n\
                        processor\t: 1\nmodel name\t: other\n";
    const EPYC: &str = "vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                        model name\t: AMD EPYC 7B13\ncpu MHz\t: 2450.000\nflags\t: avx2 fma\n";

    #[test]
    fn a_processor_is_named_with_its_family_model_and_extensions() {
        assert_eq!(
            describe(XEON),
            "Intel(R) Xeon(R) Processor (family 6 model 207; AVX2, AVX-512, AVX512_BF16, AMX)"
        );
        assert_eq!(describe(EPYC), "AMD EPYC 7B13 (family 25 model 1; AVX2)");
        assert_eq!(describe(""), "unknown processor (no AVX2)");
    }

    #[test]
    fn the_nominal_peak_counts_two_fmas_per_cycle_at_the_widest_vector() {
        // 2 cores x 2.3 GHz x 16 lanes x 2 FMA units x 2 flops: 294 GFLOP/s.
        assert!((peak_of(XEON, 2).unwrap() - 294.4).abs() < 0.1);
        // AVX2: 8 lanes.
        assert!((peak_of(EPYC, 1).unwrap() - 78.4).abs() < 0.1);
        assert_eq!(peak_of("", 2), None);
    }
}
